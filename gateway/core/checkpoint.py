"""Copying the journal's WAL back into the database file, off the writer's commit path.

SQLite's own auto-checkpoint runs inside the commit that takes the WAL past 1,000 pages. That one
commit, and every message waiting for it, then pays for copying the pages and for an fsync of the
database file. Measured with ``bench/mllp_floor.py --journal`` at 8 connections, it took the p99
from about 4-5 ms to 9-11 ms. Here a thread with its own connection runs PASSIVE checkpoints
after commits. PASSIVE never takes the write lock, so the writer keeps committing meanwhile.

SQLite only starts the WAL over when a write begins with every frame copied. Under sustained load
the writer always commits again before the checkpointer is done, so the WAL would grow without
end. Once it holds more than ``restart_frames``, the writer runs one PASSIVE checkpoint itself,
between two commits (:meth:`Checkpointer.catch_up`). That copies the few frames the thread has not
yet copied, and the writer's next transaction starts the WAL over. A lock keeps the two
checkpoints apart: whichever finds the other running skips its turn rather than wait.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

from twisted.logger import Logger

from gateway.core.metrics import Metrics

log = Logger(namespace="hssk.store")

#: 4,000 pages of 4 KiB: 16 MiB of WAL before the writer catches up itself.
RESTART_FRAMES = 4000
#: At most one background checkpoint per interval, so a burst of small commits does not turn
#: into a burst of database-file fsyncs.
MIN_INTERVAL_SECONDS = 0.2


class Checkpointer:
    """The checkpoint thread. The journal writer calls :meth:`committed` after each commit and
    :meth:`catch_up` between commits; both return at once when there is nothing to do."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], metrics: Metrics,
                 restart_frames: int = RESTART_FRAMES, min_interval: float = MIN_INTERVAL_SECONDS) -> None:
        self._connect = connect
        self._metrics = metrics
        self._restart_frames = restart_frames
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: WAL length in frames as the last checkpoint found it; a frame is one page written.
        self.wal_frames = 0

    def start(self) -> None:
        self._conn = self._connect()
        self._thread = threading.Thread(target=self._run, name="hssk-journal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends the thread after the checkpoint it is running; blocks until then."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._conn.close()

    def committed(self) -> None:
        self._wake.set()

    def catch_up(self, conn: sqlite3.Connection) -> None:
        """On the writer thread, between commits: checkpoint on the writer's own connection once
        the WAL has grown past ``restart_frames``, so that the next commit starts it over."""
        if self.wal_frames > self._restart_frames:
            self._checkpoint(conn, "writer")

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                return
            self._checkpoint(self._conn, "background")
            if self._stopping.wait(self._min_interval):
                return

    def _checkpoint(self, conn: sqlite3.Connection, by: str) -> None:
        if not self._lock.acquire(blocking=False):
            return
        started = time.perf_counter()
        try:
            _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as e:
            self._metrics.checkpoint_failures.inc()
            log.error("journal checkpoint ({by}) failed: {error}", by=by, error=str(e))
            return
        finally:
            self._lock.release()
        self._metrics.checkpoint_duration.labels(by).observe(time.perf_counter() - started)
        # Only the writer's own checkpoint, with every frame copied, means its next commit starts
        # the WAL over; after the thread's, the writer has most likely appended again.
        self.wal_frames = 0 if by == "writer" and copied == frames else frames
        self._metrics.wal_frames.set(frames)
        self._metrics.wal_frames_not_copied.set(max(frames - copied, 0))
