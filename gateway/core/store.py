"""The SQLite journal: schema, migrations, the group-commit writer thread, and read queries.

One database file under the data dir, in WAL mode. All writes go through :class:`JournalWriter`,
one thread that takes whatever is queued, commits it in one transaction (one fsync for the group)
and hands the results back to the reactor in one call. The reactor thread never touches the
write connection, so an fsync never stalls a socket.
"""
from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.core.metrics import Metrics
from gateway.core.outcome import ERROR, STATUS_BY_CODE, Issue

log = Logger(namespace="hssk.store")


def _create_messages(db: sqlite_utils.Database) -> None:
    db["messages"].create({
        "id": int,
        "received_at": float,
        "committed_at": float,
        "transport": str,
        "peer": str,
        "listener": str,
        "sender": str,
        "control_id": str,
        "message_type": str,
        "version": str,
        "charset": str,
        "plugin": str,
        "ack_code": str,
        "status": str,
        "errors": str,
        "content_sha256": str,
        "raw": bytes,
        "records": str,
        "repeat_count": int,
        "last_repeat_at": float,
    }, pk="id", not_null={"received_at", "transport", "status", "raw"}, defaults={"repeat_count": 0})
    db["messages"].create_index(["sender", "control_id"], index_name="messages_by_sender_control_id")
    db["messages"].create_index(["status", "id"], index_name="messages_by_status")
    db["messages"].create_index(["received_at"], index_name="messages_by_received_at")


#: Schema steps, applied in order and recorded in ``_migrations``; append, never edit.
MIGRATIONS: Sequence[tuple[str, Callable[[sqlite_utils.Database], None]]] = (
    ("0001_create_messages", _create_messages),
)


class Store:
    """Where the database lives and how every connection to it is configured."""

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.synchronous = synchronous.upper()

    def connect(self) -> sqlite3.Connection:
        """A connection in autocommit mode (transactions are explicit), WAL, configured fsync."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def migrate(self) -> list[str]:
        """Apply the schema steps this file lacks; returns their names."""
        conn = self.connect()
        try:
            db = sqlite_utils.Database(conn)
            db["_migrations"].create({"name": str, "applied_at": float}, pk="name", if_not_exists=True)
            done = {row["name"] for row in db["_migrations"].rows}
            applied = []
            for name, step in MIGRATIONS:
                if name in done:
                    continue
                with conn:
                    conn.execute("BEGIN")
                    step(db)
                    db["_migrations"].insert({"name": name, "applied_at": time.time()})
                applied.append(name)
            return applied
        finally:
            conn.close()


@dataclass(frozen=True)
class Committed:
    """The journal's verdict on one message: its row, and the answer to give (repeats get the
    stored answer of the first copy)."""

    message_id: int
    ack_code: str | None
    issues: tuple[Issue, ...]
    duplicate: bool = False


class WriteJob(Protocol):
    """What the writer needs from a queued message: the decision to journal, and two callbacks."""

    decision: Any

    def record_commit(self, result: Committed | Exception) -> None:
        """Called on the writer thread right after the commit (or its failure)."""

    def answer(self) -> None:
        """Called on the reactor thread, once per job, after ``record_commit``."""


_INSERT = """
INSERT INTO messages (received_at, committed_at, transport, peer, listener, sender, control_id,
                      message_type, version, charset, plugin, ack_code, status, errors,
                      content_sha256, raw, records)
VALUES (:received_at, :committed_at, :transport, :peer, :listener, :sender, :control_id,
        :message_type, :version, :charset, :plugin, :ack_code, :status, :errors,
        :content_sha256, :raw, :records)
"""

#: The first copy whose answer was final (AA or AE); an AR invites the sender to try again.
_FIND_ORIGINAL = """
SELECT id, content_sha256, ack_code, errors FROM messages
WHERE sender = :sender AND control_id = :control_id AND status IN ('accepted', 'error')
ORDER BY id LIMIT 1
"""

_COUNT_REPEAT = "UPDATE messages SET repeat_count = repeat_count + 1, last_repeat_at = :now WHERE id = :id"

_STOP = object()


class JournalWriter:
    """The single writer thread. ``submit`` from any thread; results arrive on the reactor."""

    def __init__(self, store: Store, reactor, metrics: Metrics, max_batch: int = 512) -> None:
        self._store = store
        self._reactor = reactor
        self._metrics = metrics
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: Deferred | None = None

    def start(self) -> None:
        self._conn = self._store.connect()
        self._thread = threading.Thread(target=self._run, name="hssk-journal-writer", daemon=True)
        self._thread.start()

    def stop(self) -> Deferred:
        """Commit what is queued, then stop; fires on the reactor when the thread is done."""
        self._stopped = Deferred()
        self._queue.put(_STOP)
        return self._stopped

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: WriteJob) -> None:
        self._queue.put(job)

    def probe(self) -> Deferred:
        """Fires with True when the writer can take the write lock now — the readiness check."""
        d: Deferred = Deferred()
        self._queue.put(_Probe(d))
        return d

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            jobs = [item for item in batch if item is not _STOP]
            if jobs:
                self._commit(jobs)
            if stop:
                self._conn.close()
                self._reactor.callFromThread(self._stopped.callback, None)
                return

    def _commit(self, items: list) -> None:
        probes = [i for i in items if isinstance(i, _Probe)]
        jobs = [i for i in items if not isinstance(i, _Probe)]
        started = time.perf_counter()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                results = [self._journal(job.decision, now) for job in jobs]
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            self._metrics.commit_failures.inc()
            log.error("journal commit of {count} messages failed: {error}", count=len(jobs), error=str(e))
            results = [e] * len(jobs)
        else:
            if jobs:
                self._metrics.commit_batch_size.observe(len(jobs))
                self._metrics.commit_duration.observe(time.perf_counter() - started)
        for job, result in zip(jobs, results):
            job.record_commit(result)
        ok = not results or not isinstance(results[0], Exception)
        self._reactor.callFromThread(_answer_all, jobs, probes, ok)

    def _journal(self, decision, now: float) -> Committed:
        """Insert one decision, or recognise it as a repeat of a message already journaled."""
        message = decision.message
        ack_code, issues = decision.ack_code, decision.issues
        if message is not None and ack_code is not None and decision.control_id:
            original = self._conn.execute(
                _FIND_ORIGINAL, {"sender": decision.sender, "control_id": decision.control_id}).fetchone()
            if original is not None:
                original_id, digest, original_code, errors = original
                if digest == decision.digest:
                    self._conn.execute(_COUNT_REPEAT, {"now": now, "id": original_id})
                    stored = tuple(Issue.from_dict(e) for e in json.loads(errors or "[]"))
                    return Committed(original_id, original_code, stored, duplicate=True)
                ack_code, issues = ERROR, (Issue(
                    205, f"MSH-10: control id {decision.control_id!r} was already used by sender "
                         f"{decision.sender!r} for different content (journal message {original_id})", "MSH^1^10"),)
        envelope = decision.envelope
        cursor = self._conn.execute(_INSERT, {
            "received_at": envelope.received_at,
            "committed_at": now,
            "transport": envelope.transport,
            "peer": envelope.peer,
            "listener": envelope.listener,
            "sender": decision.sender,
            "control_id": decision.control_id,
            "message_type": decision.message_type,
            "version": message.version if message else "",
            "charset": message.charset if message else "",
            "plugin": decision.plugin,
            "ack_code": ack_code,
            "status": "ignored" if ack_code is None else STATUS_BY_CODE[ack_code],
            "errors": json.dumps([i.to_dict() for i in issues], ensure_ascii=False) if issues else None,
            "content_sha256": decision.digest,
            "raw": envelope.raw,
            "records": decision.records_json,
        })
        return Committed(cursor.lastrowid, ack_code, tuple(issues))


class _Probe:
    def __init__(self, deferred: Deferred) -> None:
        self.deferred = deferred


def _answer_all(jobs: list, probes: list, ok: bool) -> None:
    for job in jobs:
        job.answer()
    for probe in probes:
        probe.deferred.callback(ok)


class Journal:
    """Read-only questions operators ask of the journal (CLI and admin API)."""

    COLUMNS = ("id", "received_at", "committed_at", "transport", "peer", "listener", "sender", "control_id",
               "message_type", "version", "charset", "plugin", "ack_code", "status", "errors", "content_sha256",
               "repeat_count", "last_repeat_at")

    def __init__(self, store: Store) -> None:
        self._conn = store.connect()
        self._conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self._conn.close()

    def list_messages(self, *, control_id: str | None = None, sender: str | None = None, status: str | None = None,
                      since: float | None = None, until: float | None = None, limit: int = 50) -> list[dict]:
        """Newest first. ``sender`` matches ``APP|FACILITY`` exactly or, without ``|``, the application."""
        where, params = [], {"limit": limit}
        if control_id:
            where.append("control_id = :control_id")
            params["control_id"] = control_id
        if sender:
            where.append("sender = :sender" if "|" in sender else "sender LIKE :sender_app")
            params["sender"], params["sender_app"] = sender, sender + "|%"
        if status:
            where.append("status = :status")
            params["status"] = status
        if since is not None:
            where.append("received_at >= :since")
            params["since"] = since
        if until is not None:
            where.append("received_at < :until")
            params["until"] = until
        sql = f"SELECT {', '.join(self.COLUMNS)} FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT :limit"
        return [dict(row) for row in self._conn.execute(sql, params)]

    def get_message(self, message_id: int) -> dict | None:
        row = self._conn.execute(
            f"SELECT {', '.join(self.COLUMNS)}, raw, records FROM messages WHERE id = :id", {"id": message_id}).fetchone()
        return dict(row) if row else None

    def count_by_status(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT status, count(*) FROM messages GROUP BY status").fetchall())
