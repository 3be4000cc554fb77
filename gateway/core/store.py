"""The SQLite journal: schema, migrations, the group-commit writer thread, and read queries.

One database file under the data dir, in WAL mode. All writes go through :class:`JournalWriter`,
one thread that takes whatever is queued, commits it in one transaction (one fsync for the group)
and hands the results back to the reactor in one call. The reactor thread never touches the
write connection, so an fsync never stalls a socket. Copying the WAL back into the database file
is not part of any commit: see :mod:`gateway.core.checkpoint`.
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

from gateway.core.checkpoint import Checkpointer
from gateway.core.masking import mask_records, mask_text, names_in_records
from gateway.core.metrics import Metrics
from gateway.core.outbox import insert_outbox_rows, not_routed_of, patient_names
from gateway.core.outcome import ACCEPT, ERROR, REJECT, STATUS_BY_CODE, Issue

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


def _create_outbox(db: sqlite_utils.Database) -> None:
    db["outbox"].create({
        "id": int,
        "message_id": int,
        "destination": str,
        "idempotency_key": str,
        "ordering_key": str,
        "state": str,
        "attempts": int,
        "next_attempt_at": float,
        "created_at": float,
        "updated_at": float,
        "delivered_at": float,
        "last_error": str,
        "last_result": str,
        "content_type": str,
        "payload": bytes,
    }, pk="id", not_null={"message_id", "destination", "idempotency_key", "ordering_key", "state", "created_at"},
        defaults={"attempts": 0}, foreign_keys=[("message_id", "messages", "id")])
    db["outbox"].create_index(["idempotency_key"], unique=True, index_name="outbox_by_idempotency_key")
    db["outbox"].create_index(["destination", "state", "next_attempt_at"], index_name="outbox_due")
    db["outbox"].create_index(["destination", "ordering_key", "state", "id"], index_name="outbox_by_person")
    db["outbox"].create_index(["message_id"], index_name="outbox_by_message")
    db["destination_state"].create({
        "destination": str,
        "paused": int,
        "flush_requested_at": float,
        "updated_at": float,
    }, pk="destination", defaults={"paused": 0})


def _add_circuit_state(db: sqlite_utils.Database) -> None:
    """The running gateway records its circuit breakers here, so ``outbox status`` in another
    process can show them."""
    db["destination_state"].add_column("circuit_state", str)
    db["destination_state"].add_column("circuit_since", float)


def _add_message_client(db: sqlite_utils.Database) -> None:
    """The configured client the transport authenticated (``[clients.NAME]``), so operators can
    ask what one client sent; NULL for an anonymous sender and for rows from before this step."""
    db["messages"].add_column("client", str)


def _create_not_routed(db: sqlite_utils.Database) -> None:
    """Destinations an accepted message's record sets were not queued for because their format
    cannot carry them, and why: operators ask "what did D not get" and "what became of message N"."""
    db["not_routed"].create({
        "id": int,
        "message_id": int,
        "destination": str,
        "reason": str,
        "text": str,
        "created_at": float,
    }, pk="id", not_null={"message_id", "destination", "reason", "created_at"},
        foreign_keys=[("message_id", "messages", "id")])
    db["not_routed"].create_index(["destination", "id"], index_name="not_routed_by_destination")
    db["not_routed"].create_index(["message_id"], index_name="not_routed_by_message")


#: Schema steps, applied in order and recorded in ``_migrations``; append, never edit.
MIGRATIONS: Sequence[tuple[str, Callable[[sqlite_utils.Database], None]]] = (
    ("0001_create_messages", _create_messages),
    ("0002_create_outbox", _create_outbox),
    ("0003_destination_circuit_state", _add_circuit_state),
    ("0004_messages_client", _add_message_client),
    ("0005_not_routed", _create_not_routed),
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

    def begin_commit(self) -> None:
        """Called on the writer thread just before the commit that will hold ``decision``."""

    def record_commit(self, result: Committed | Exception) -> None:
        """Called on the writer thread right after the commit (or its failure)."""

    def answer(self) -> None:
        """Called on the reactor thread, once per job, after ``record_commit``."""


_COLUMNS = ("received_at", "committed_at", "transport", "peer", "listener", "sender", "control_id", "message_type",
            "version", "charset", "plugin", "ack_code", "status", "errors", "content_sha256", "raw", "records",
            "repeat_count", "last_repeat_at", "client")
_ROW = "(" + ", ".join("?" * len(_COLUMNS)) + ")"

#: The first copies whose answer was final (AA or AE) among a batch's keys; an AR invites the
#: sender to try again, so an AR'd copy is never an original. Two IN lists keep the
#: (sender, control_id) index usable; the few extra pairs they admit, and the copies another
#: client sent, are filtered in Python.
_FIND_ORIGINALS = """
SELECT coalesce(client, ''), sender, control_id, id, content_sha256, ack_code, errors FROM messages
WHERE sender IN ({senders}) AND control_id IN ({control_ids}) AND status IN ('accepted', 'error')
ORDER BY id
"""

_COUNT_REPEATS = """
UPDATE messages SET repeat_count = repeat_count + :repeats, last_repeat_at = :now WHERE id = :id
"""

_INSERT_NOT_ROUTED = """
INSERT INTO not_routed (message_id, destination, reason, text, created_at) VALUES (?, ?, ?, ?, ?)
"""

_STOP = object()


class JournalWriter:
    """The single writer thread. ``submit`` from any thread; results arrive on the reactor."""

    def __init__(self, store: Store, reactor, metrics: Metrics, max_batch: int = 512, clock=None,
                 checkpointer: Checkpointer | None = None) -> None:
        self._store = store
        self._checkpointer = checkpointer or Checkpointer(store.connect, metrics)
        self._reactor = reactor
        # Timestamps come from the injected clock (IReactorTime.seconds is a plain read, safe from
        # this thread), so outbox due times and the dispatcher agree when tests drive time.
        self._clock = clock or reactor
        self._metrics = metrics
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: Deferred | None = None
        #: Called on the reactor with the destinations that got new outbox rows in a commit.
        self.on_queued: Callable[[set[str]], None] | None = None
        #: Destinations whose rows need no per-person sequencing (batch files carry a period at once).
        self.unordered_destinations: frozenset[str] = frozenset()

    def start(self) -> None:
        self._conn = self._store.connect()
        self._conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer copies the WAL instead
        self._checkpointer.start()
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

    def run(self, task: Callable[[sqlite3.Connection, float], Any]) -> Deferred:
        """Run ``task(connection, now)`` inside the next group transaction on the writer thread;
        fires on the reactor with its result after the commit (or with the failure). This is
        how the outbox changes row states without a second writer."""
        d: Deferred = Deferred()
        self._queue.put(_Task(task, d))
        return d

    def probe(self) -> Deferred:
        """Fires with True when the writer can take the write lock now — the readiness check."""
        return self.run(lambda conn, now: True)

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
                # After _commit handed the answers to the reactor, so they never wait for it.
                self._checkpointer.catch_up(self._conn)
            if stop:
                self._checkpointer.stop()
                self._conn.close()
                self._reactor.callFromThread(self._stopped.callback, None)
                return

    def _commit(self, items: list) -> None:
        tasks = [i for i in items if isinstance(i, _Task)]
        jobs = [i for i in items if not isinstance(i, _Task)]
        started = time.perf_counter()
        for job in jobs:
            job.begin_commit()
            trace = getattr(job, "trace", None)
            if trace is not None:
                trace.append(started)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                now = self._clock.seconds()
                results = self._journal([job.decision for job in jobs], now) if jobs else []
                task_results = [_run_task(task, self._conn, now) for task in tasks]
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            self._metrics.commit_failures.inc()
            log.error("journal commit of {count} messages failed: {error}", count=len(jobs), error=str(e))
            results = [e] * len(jobs)
            task_results = [e] * len(tasks)
        else:
            self._checkpointer.committed()
            if jobs:
                self._metrics.commit_batch_size.observe(len(jobs))
                self._metrics.commit_duration.observe(time.perf_counter() - started)
        for job, result in zip(jobs, results):
            job.record_commit(result)
        queued = {item.destination for job, result in zip(jobs, results) if isinstance(result, Committed)
                  for item in job.decision.outbox} if self.on_queued is not None else set()
        self._reactor.callFromThread(_answer_all, jobs, tasks, task_results, queued and self.on_queued, queued)

    def _journal(self, decisions: list, now: float) -> list[Committed]:
        """Journal a batch with as few SQLite calls as possible — one lookup, one multi-row
        INSERT — because every call releases and re-takes the GIL, and under load each re-take
        waits for the reactor or a pipeline worker to yield it.

        A decision whose (client, sender, control id) already has a final answer is a repeat
        (same content: the stored answer, no new row) or a conflict (different content: AE 205,
        new row). Copies of one message inside the batch are treated the same way. The client is
        part of the key, and a decision refused for who sent it is never a repeat, so another
        client's copy of the same bytes cannot fetch the stored answer (nor learn that it exists).
        """
        originals = self._find_originals(decisions)
        rows: list[list] = []
        plan: list[tuple[str, int, tuple]] = []  # ("row", index in rows) | ("old", journal id)
        repeats: dict[int, int] = {}
        for decision in decisions:
            source = decision.source  # the HL7 message or the XML file's DocumentSource
            key = _repeat_key(decision)
            ack_code, issues = decision.ack_code, decision.issues
            if _may_repeat(decision):
                earlier = originals.get(key, {})
                original = earlier.get(decision.digest)
                if original is not None:
                    where, ref, code, stored = original
                    if where == "row":
                        rows[ref][_COLUMNS.index("repeat_count")] += 1
                        rows[ref][_COLUMNS.index("last_repeat_at")] = now
                    else:
                        repeats[ref] = repeats.get(ref, 0) + 1
                    plan.append((where, ref, (code, stored, True)))
                    continue
                if earlier:
                    ack_code, issues = ERROR, (Issue(
                        205, f"MSH-10: control id {decision.control_id!r} was already used by sender "
                             f"{decision.sender!r} for different content", "MSH^1^10"),)
            envelope = decision.envelope
            status = "ignored" if ack_code is None else STATUS_BY_CODE[ack_code]
            rows.append([
                envelope.received_at, now, envelope.transport, envelope.peer, envelope.listener, decision.sender,
                decision.control_id, decision.message_type, source.version if source else "",
                source.charset if source else "", decision.plugin, ack_code, status,
                json.dumps([i.to_dict() for i in issues], ensure_ascii=False) if issues else None,
                decision.digest, envelope.raw, decision.records_json, 0, None, envelope.client or None,
            ])
            plan.append(("row", len(rows) - 1, (ack_code, tuple(issues), False)))
            if status in ("accepted", "error") and decision.control_id:
                originals.setdefault(key, {}).setdefault(
                    decision.digest, ("row", len(rows) - 1, ack_code, tuple(issues)))
        first_id = 0
        if rows:
            cursor = self._conn.execute(
                f"INSERT INTO messages ({', '.join(_COLUMNS)}) VALUES " + ", ".join([_ROW] * len(rows)),
                [value for row in rows for value in row])
            # Rowids of a multi-row INSERT are consecutive: this thread is the only writer and
            # holds the write lock, and SQLite gives each new row max(rowid) + 1.
            first_id = cursor.lastrowid - len(rows) + 1
            accepted = [(first_id + ref, decision) for decision, (where, ref, (code, _, _)) in zip(decisions, plan)
                        if where == "row" and code == ACCEPT]
            queued = [(message_id, item) for message_id, decision in accepted for item in decision.outbox]
            if queued:
                insert_outbox_rows(self._conn, queued, now, self.unordered_destinations)
            not_routed = [(message_id, n.destination, n.reason, n.text[:2000], now)
                          for message_id, decision in accepted for n in decision.not_routed]
            if not_routed:
                self._conn.executemany(_INSERT_NOT_ROUTED, not_routed)
        if repeats:
            self._conn.executemany(_COUNT_REPEATS, [{"repeats": n, "now": now, "id": i} for i, n in repeats.items()])
        return [Committed(first_id + ref if where == "row" else ref, code, issues, duplicate)
                for where, ref, (code, issues, duplicate) in plan]

    def _find_originals(self, decisions: list) -> dict[tuple[str, str, str], dict[str, tuple]]:
        """Every earlier final answer per (client, sender, control id), keyed by content digest.

        A conflicting copy's own AE 205 row is an original too, so resending that copy is a repeat.
        """
        keys = {_repeat_key(d) for d in decisions if _may_repeat(d)}
        if not keys:
            return {}
        senders = sorted({k[1] for k in keys})
        control_ids = sorted({k[2] for k in keys})
        sql = _FIND_ORIGINALS.format(senders=", ".join("?" * len(senders)), control_ids=", ".join("?" * len(control_ids)))
        found: dict[tuple[str, str, str], dict[str, tuple]] = {}
        for client, sender, control_id, row_id, digest, code, errors in self._conn.execute(sql, senders + control_ids):
            key = (client, sender, control_id)
            by_digest = found.setdefault(key, {}) if key in keys else None
            if by_digest is not None and digest not in by_digest:
                stored = tuple(Issue.from_dict(e) for e in json.loads(errors or "[]"))
                by_digest[digest] = ("old", row_id, code, stored)
        return found


def _repeat_key(decision) -> tuple[str, str, str]:
    """Whose message this is, for telling a repeat from a new one: a repeat is a repeat only for
    the client that sent the original (``""`` for an anonymous sender)."""
    return decision.envelope.client or "", decision.sender, decision.control_id


def _may_repeat(decision) -> bool:
    """Whether ``decision`` is looked up among the originals. Not when it is refused for who sent
    it (ERR 204: a client sending for a facility not its own): that refusal is the answer,
    whatever the journal holds."""
    if decision.source is None or decision.ack_code is None or not decision.control_id:
        return False
    return not (decision.ack_code == REJECT and any(i.code == 204 for i in decision.issues))


class _Task:
    __slots__ = ("fn", "deferred")

    def __init__(self, fn: Callable, deferred: Deferred) -> None:
        self.fn = fn
        self.deferred = deferred


class _TaskFailed:
    """A task's own exception, carried back to the reactor without aborting the group commit."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _run_task(task: _Task, conn: sqlite3.Connection, now: float):
    conn.execute("SAVEPOINT task")
    try:
        result = task.fn(conn, now)
    except sqlite3.Error:
        raise
    except Exception as e:  # a buggy task fails alone; the messages committed with it stay committed
        conn.execute("ROLLBACK TO task")
        conn.execute("RELEASE task")
        return _TaskFailed(e)
    conn.execute("RELEASE task")
    return result


def _answer_all(jobs: list, tasks: list, task_results: list, on_queued, queued: set[str]) -> None:
    for job in jobs:
        job.answer()
    if on_queued:
        on_queued(queued)
    for task, result in zip(tasks, task_results):
        if isinstance(result, _TaskFailed):
            task.deferred.errback(result.error)
        elif isinstance(result, Exception):
            task.deferred.errback(result)
        else:
            task.deferred.callback(result)


class Journal:
    """Read-only questions operators ask of the journal (CLI and admin API)."""

    COLUMNS = ("id", "received_at", "committed_at", "transport", "peer", "listener", "sender", "control_id",
               "message_type", "version", "charset", "plugin", "ack_code", "status", "errors", "content_sha256",
               "repeat_count", "last_repeat_at", "client")

    def __init__(self, store: Store) -> None:
        self._conn = store.connect()
        self._conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self._conn.close()

    def list_messages(self, *, control_id: str | None = None, sender: str | None = None, status: str | None = None,
                      since: float | None = None, until: float | None = None, client: str | None = None,
                      limit: int = 50) -> list[dict]:
        """Newest first. ``sender`` matches ``APP|FACILITY`` exactly or, without ``|``, the application;
        ``client`` is the authenticated ``[clients.NAME]``. ERR texts are ours or a plugin's and
        should hold no identifier or name; ``errors`` is masked all the same, since a plugin's
        text may quote one."""
        where, params = [], {"limit": limit}
        if client:
            where.append("client = :client")
            params["client"] = client
        if control_id:
            where.append("control_id = :control_id")
            params["control_id"] = control_id
        if sender:
            where.append("sender = :sender" if "|" in sender else "substr(sender, 1, :app_len) = :sender_app")
            params.update(sender=sender, sender_app=sender + "|", app_len=len(sender) + 1)
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
        rows = [dict(row) for row in self._conn.execute(sql, params)]
        names = patient_names(self._conn, [r["id"] for r in rows if r["errors"]])
        for r in rows:
            if r["errors"]:
                r["errors"] = mask_text(r["errors"], names.get(r["id"], ()))
        return rows

    def get_message(self, message_id: int) -> dict | None:
        """One message: ``errors`` and ``records`` (JSON texts) masked as every operator view
        is, ``raw`` as received (``messages show --raw``, the forensic view)."""
        row = self._conn.execute(
            f"SELECT {', '.join(self.COLUMNS)}, raw, records FROM messages WHERE id = :id", {"id": message_id}).fetchone()
        if row is None:
            return None
        found = dict(row)
        records = json.loads(found["records"]) if found["records"] else None
        names = names_in_records(records)
        if records is not None:
            found["records"] = json.dumps(mask_records(records), ensure_ascii=False)
        if found["errors"]:
            found["errors"] = mask_text(found["errors"], names)
        found["not_routed"] = [{"destination": destination, "reason": reason, "text": mask_text(text or "", names)}
                               for destination, reason, text in not_routed_of(self._conn, message_id)]
        return found

    def count_by_status(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT status, count(*) FROM messages GROUP BY status").fetchall())
