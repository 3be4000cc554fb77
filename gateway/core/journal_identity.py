"""The journal's identity, kept in a small file beside it, so a start can tell a new data dir
from a journal that was lost.

SQLite makes a new, empty database wherever it finds none, and so did the gateway: a
``gateway.db`` truncated to 0 bytes, deleted, or swapped for another site's became an empty
journal at the next start, which answered CA and went on, while the messages and outbox rows it
had acknowledged were gone. Invariant 2 (nothing accepted is lost) cannot survive that silently.

The identity is the time the journal's first schema step was applied, recorded in
``_migrations`` at creation; ``gateway.db.id`` holds a copy. At start-up a marker without a
readable journal of the same identity stops the gateway with a message saying what is wrong,
unless the operator asks for a fresh journal, which keeps the old file aside (for a backup
restore or forensics) rather than deleting it.
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from twisted.logger import Logger

log = Logger(namespace="hssk.store")

FIRST_STEP = "0001_create_messages"


class JournalLost(Exception):
    """The journal that was created in this data dir is missing, empty, unreadable or another one."""


def marker_for(database: Path) -> Path:
    return database.with_name(database.name + ".id")


def identity_of(database: Path) -> str:
    """The journal's identity, read without creating or changing anything; raises
    ``sqlite3.DatabaseError`` when the file is not a journal."""
    conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT applied_at FROM _migrations WHERE name = ?", (FIRST_STEP,)).fetchone()
    finally:
        conn.close()
    if row is None:
        raise sqlite3.DatabaseError(f"it has no {FIRST_STEP} schema step")
    return repr(row[0])


def check_journal(database: Path, fresh: bool = False) -> None:
    """Before anything opens the journal: raise :class:`JournalLost` when the marker names a
    journal that is not there as it was. With ``fresh``, put what is there aside instead, so
    the start creates a new, empty journal."""
    marker = marker_for(database)
    if not marker.exists():
        return
    expected = marker.read_text(encoding="ascii").strip()
    problem = _problem(database, expected)
    if problem is None:
        return
    if not fresh:
        raise JournalLost(
            f"{problem}, but {marker} says a journal was created there: the messages and outbox rows it held are "
            f"not in this file. Restore {database.name} from a backup, or start with --fresh-journal to begin an "
            f"empty journal (the file there now is kept beside it)")
    kept = _put_aside(database)
    marker.unlink()
    log.warn("starting a fresh journal as asked: {problem}; kept {kept}", problem=problem,
             kept=", ".join(str(p) for p in kept) or "nothing (no file was there)")


def record_journal(database: Path) -> None:
    """After the schema steps: write the marker if there is none (a new journal, or one made
    before markers existed)."""
    marker = marker_for(database)
    if marker.exists():
        return
    identity = identity_of(database)
    descriptor = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as f:
        f.write(identity + "\n")


def _problem(database: Path, expected: str) -> str | None:
    if not database.exists():
        return f"the journal {database} is missing"
    size = database.stat().st_size
    if size == 0:
        return f"the journal {database} is empty (0 bytes)"
    try:
        found = identity_of(database)
    except sqlite3.DatabaseError as e:
        return f"the journal {database} ({size} bytes) cannot be read: {e}"
    if found != expected:
        return f"the journal {database} is another journal than the one created here"
    return None


def _put_aside(database: Path) -> list[Path]:
    suffix = time.strftime(".lost-%Y%m%dT%H%M%S")
    kept = []
    for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
        if path.exists():
            target = path.with_name(path.name + suffix)
            path.rename(target)
            kept.append(target)
    return kept
