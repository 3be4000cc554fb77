"""A consistent copy of the journal while the gateway runs, with SQLite's online backup API.

Copying ``gateway.db`` with ``cp`` while the gateway writes gives a torn file (and misses what is
still in the ``-wal`` file). The backup API copies the database as one reader's snapshot. It
copies in one step: a backup done in several steps starts over whenever another connection
commits between two of them, which under steady intake could be forever. In WAL mode one long
read holds up no commit (the writer appends to the WAL; only checkpoints wait to copy past the
snapshot), so the gateway keeps answering while the copy runs. The copy is a data dir of its own: ``gateway.db`` and its identity marker
``gateway.db.id`` (:mod:`gateway.core.journal_identity`), checked with ``PRAGMA quick_check``,
mode 0600 in a 0700 directory like the original, since it holds every patient's messages.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.core.journal_identity import identity_of, marker_for

class BackupError(Exception):
    """The backup cannot be made where asked (the target holds a journal, the copy is damaged)."""


@dataclass(frozen=True)
class BackupReport:
    path: Path
    size_bytes: int
    messages: int
    outbox_rows: int


def backup_journal(source: Path, target_dir: Path) -> BackupReport:
    """Copy the journal at ``source`` into ``target_dir`` (created 0700; must hold no journal)."""
    target_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = target_dir / source.name
    if target.exists() or marker_for(target).exists():
        raise BackupError(f"{target_dir} already holds a journal ({target.name}); back up into a new directory")
    partial = target.with_name(target.name + ".partial")
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(partial)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file; the gateway turns WAL on again
        problem = dst.execute("PRAGMA quick_check").fetchone()[0]
        counts = [dst.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("messages", "outbox")]
    finally:
        dst.close()
        src.close()
    if problem != "ok":
        partial.unlink()
        raise BackupError(f"the copy failed SQLite's quick_check ({problem}); nothing was kept")
    partial.rename(target)
    descriptor = os.open(marker_for(target), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as f:
        f.write(identity_of(target) + "\n")
    return BackupReport(target, target.stat().st_size, *counts)
