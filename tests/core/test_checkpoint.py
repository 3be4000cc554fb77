"""WAL checkpoints run beside the journal writer's commits, not inside them, and the WAL still
starts over under sustained load (gateway/core/checkpoint.py). Real SQLite files, real threads."""
import shutil
import sqlite3
import threading

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from gateway.core.checkpoint import Checkpointer
from gateway.core.metrics import Metrics
from gateway.core.store import JournalWriter, Store
from tests.support import sample_value, wait_until

ROW = 8192  # two pages of WAL per row at least


def insert_message(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("INSERT INTO messages (received_at, transport, status, raw) VALUES (?, 'test', 'accepted', ?)",
                 (now, b"x" * ROW))


def start_writer(tmp_path, **checkpointer_options) -> tuple[JournalWriter, Store, Metrics]:
    store = Store(tmp_path / "journal.db")
    store.migrate()
    metrics = Metrics()
    writer = JournalWriter(store, reactor, metrics, max_batch=1,
                           checkpointer=Checkpointer(store.connect, metrics, **checkpointer_options))
    writer.start()
    return writer, store, metrics


def rows_in_database_file(store: Store, tmp_path) -> int:
    """Rows in a copy of the database file without its WAL; -1 when the copy caught a checkpoint
    half-way through writing its pages (the copy is torn, not the database)."""
    shutil.copy(store.path, tmp_path / "copy.db")
    copy = sqlite3.connect(tmp_path / "copy.db")
    try:
        return copy.execute("SELECT count(*) FROM messages").fetchone()[0]
    except sqlite3.DatabaseError:
        return -1
    finally:
        copy.close()


def checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "hssk-journal-checkpoint"]


@pytest_twisted.ensureDeferred
async def test_commits_leave_the_copy_to_the_checkpoint_thread(tmp_path):
    writer, store, metrics = start_writer(tmp_path, min_interval=0.0)
    try:
        assert await writer.run(lambda conn, now: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
        await gatherResults([writer.run(insert_message) for _ in range(50)])

        # The database file alone, without its WAL, comes to hold every row.
        await wait_until(lambda: rows_in_database_file(store, tmp_path) == 50, what="the WAL copied back")
        assert sample_value(metrics, "hssk_journal_wal_frames") >= 100
        assert sample_value(metrics, "hssk_journal_wal_frames_not_copied") == 0
        assert sample_value(metrics, "hssk_journal_checkpoint_duration_seconds_count", by="background") >= 1
    finally:
        await writer.stop()
    assert checkpoint_threads() == []


@pytest_twisted.ensureDeferred
async def test_the_writer_catches_up_so_the_wal_starts_over_under_sustained_load(tmp_path):
    # The thread checkpoints at most every 50 ms while 1,600 one-row commits follow each other, so
    # it almost never finds the WAL fully copied before the next commit: without the writer's own
    # checkpoint the WAL holds over 11,000 pages at the end. With it, the WAL has started over
    # at least once; how long it has grown again since depends on when the two checkpoints met
    # (up to 2,226 pages seen on a loaded machine), so the bound is half of 10,000.
    writer, store, metrics = start_writer(tmp_path, restart_frames=60, min_interval=0.05)
    try:
        await gatherResults([writer.run(insert_message) for _ in range(1600)])
        probe = sqlite3.connect(store.path)
        _, wal_frames, _ = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        probe.close()
    finally:
        await writer.stop()
    assert sample_value(metrics, "hssk_journal_checkpoint_duration_seconds_count", by="writer") >= 1
    assert wal_frames < 5000, wal_frames
    assert rows_in_database_file(store, tmp_path) == 1600
