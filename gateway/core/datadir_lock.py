"""One gateway per data directory.

Two gateways on one journal would each reset the outbox rows the other has in flight and deliver
them again, and each would answer duplicates from a journal the other is writing. So a gateway
takes an exclusive ``flock`` on ``DATA_DIR/gateway.lock`` before anything touches the journal,
writes its PID into the file, and keeps the lock until it stops; the kernel releases it when the
process dies, however it dies, so a stale file never blocks a restart. The file's content is only
a name for the holder: whether a gateway holds the directory is the lock, never the PID.

Commands that must not run beside a gateway (a replay that writes the journal) ask
:func:`holder_pid`.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_FILE = "gateway.lock"
#: How long a start-up keeps trying a lock that :func:`holder_pid` may hold for a moment.
_PROBE_GRACE_SECONDS = 0.5


class DataDirInUse(RuntimeError):
    """Another process holds the data directory's lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"PID {pid}" if pid is not None else "a process whose PID the lock file does not name"
        super().__init__(f"data directory {path.parent} is in use by another gateway ({holder} holds {path}); "
                         f"stop it first, or give this one another data_dir")
        self.pid = pid


class DataDirLock:
    """The lock of one data directory, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DataDirInUse`. A lock taken only by :func:`holder_pid`
        looking is retried for a moment; one a gateway holds is not given up."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + _PROBE_GRACE_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _pid_in(fd)
                    os.close(fd)
                    raise DataDirInUse(self.path, pid) from None
                time.sleep(0.02)
        # One write of a fixed width, never a truncation: whoever reads the file while it is held
        # sees a whole PID, this one or (for a moment) the previous holder's.
        os.pwrite(fd, f"{os.getpid():<20}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


#: What :func:`holder_pid` answers for a lock held by a process that wrote no PID into the file.
UNNAMED_HOLDER = -1


def holder_pid(data_dir: str | Path) -> int | None:
    """The PID of the gateway holding ``data_dir``, or None when no process holds it
    (:data:`UNNAMED_HOLDER` when one does but the file names none). Looking takes a shared lock for
    a moment, which a gateway starting just then waits out."""
    path = Path(data_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _named_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _named_holder(fd: int) -> int:
    """The holder's PID; a gateway that has just created the file writes it right after locking."""
    deadline = time.monotonic() + _PROBE_GRACE_SECONDS
    while (pid := _pid_in(fd)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return UNNAMED_HOLDER if pid is None else pid


def _pid_in(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
