"""The SQLite journal: schema, migrations, the group-commit writer thread, and read queries.

One database file under the data dir, in WAL mode. All writes go through :class:`JournalWriter`,
one thread that takes whatever is queued, commits it in one transaction (one fsync for the group)
and hands the results back to the reactor in one call. The reactor thread never touches the
write connection, so an fsync never stalls a socket. Copying the WAL back into the database file
is not part of any commit: see :mod:`gateway.core.checkpoint`.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.config import GatewayConfig
from gateway.core.ack import ack_codes
from gateway.core.audit import create_audit_log
from gateway.core.checkpoint import Checkpointer
from gateway.core.metrics import Metrics
from gateway.core.outbox import insert_outbox_rows, not_routed_of, patient_names
from gateway.core.postgres import POSTGRESQL, SQLITE, PostgresStore, dialect, read_in_thread
from gateway.formats.hl7v2 import CharsetError, Hl7Message, MessageFormatError
from gateway.model.masking import mask_records, mask_text, names_in_records
from gateway.model.outcome import ACCEPT, ERROR, STATUS_BY_CODE, Issue
from gateway.rules.person_index import (Resolved, create_person_index, create_person_residence, find_persons,
                                        resolve_persons)

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


def _create_readiness(db: sqlite_utils.Database) -> None:
    """One row the readiness probe rewrites: a probe that writes nothing succeeds on a full disk."""
    db["readiness"].create({"id": int, "checked_at": float}, pk="id")


_REDIGEST_PAGE = """
SELECT id, raw, charset, content_sha256 FROM messages
WHERE id > :after AND status IN ('accepted', 'error') AND control_id != '' AND length(raw) > 0
  AND substr(sender, 1, 4) != 'XML|'
ORDER BY id LIMIT 1000
"""


def _redigest_without_msh7(db: sqlite_utils.Database) -> None:
    """The content identity no longer covers MSH-7 (see :func:`gateway.formats.hl7v2.content_digest`).
    Rows journaled before hold the digest of the whole text, so the resend of such a message would
    be a conflict (AE 205) however it was sent; their digests are computed again. Only the rows a
    resend is looked up against (AA and AE, with a control id and their bytes) are read, and a row
    changes only when its stored digest is the old one of its own text: an XML file's, or that of
    bytes that did not decode, stays. Costs one decode and two hashes per such row, once."""
    after = 0
    while True:
        page = db.conn.execute(_REDIGEST_PAGE, {"after": after}).fetchall()
        if not page:
            return
        after = page[-1][0]
        changed = []
        for row_id, raw, charset, stored in page:
            try:
                message = Hl7Message.from_bytes(raw, charset or "")
            except (MessageFormatError, CharsetError):
                continue
            if hashlib.sha256(message.text.encode("utf-8")).hexdigest() == stored:
                changed.append((message.content_digest, row_id))
        db.conn.executemany("UPDATE messages SET content_sha256 = ? WHERE id = ?", changed)


#: The step that recomputes content digests without MSH-7 (named for the test that undoes it).
CONTENT_DIGEST_STEP = "0006_content_digest_without_msh7"


def _index_messages_with_body(db: sqlite_utils.Database) -> None:
    """Retention blanks the bytes of old messages; this index holds only the messages that still
    have theirs, so each pruning pass finds its few candidates without reading the journal's
    long tail of blanked rows (see ``gateway.core.outbox.prune_bodies``)."""
    db.conn.execute("CREATE INDEX messages_with_body ON messages (received_at) WHERE length(raw) > 0")


def _add_acks_sent(db: sqlite_utils.Database) -> None:
    """The MSA-1 codes the sender was sent, comma-separated in wire order (``CA``, ``CE,AE``; empty
    when MSH-15/16 asked for none, and for a replay, which answers nobody): in enhanced mode that
    is not ``ack_code``, the decision. NULL for XML files (answered in HTTP), inbound ACKs and
    rows from before this step."""
    db["messages"].add_column("acks_sent", str)


def _add_replay_columns(db: sqlite_utils.Database) -> None:
    """What a replay needs besides the bytes (see :mod:`gateway.core.replay`): ``replay_of``, the
    first attempt a replayed row is a new attempt of (NULL for what a sender sent), indexed for
    "the latest attempt of this message"; ``request``, the portal form fields a file came with
    (JSON); ``forced_charset``, the charset the transport imposed (a listener's ``mllp.charset``, an
    HTTP Content-Type charset). Rows from before this step have neither, and are replayed with
    today's listener charset and no form."""
    db["messages"].add_column("replay_of", int)
    db["messages"].add_column("request", str)
    db["messages"].add_column("forced_charset", str)
    db.conn.execute("CREATE INDEX messages_by_replay_of ON messages (replay_of) WHERE replay_of IS NOT NULL")


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


def _add_message_source(db: sqlite_utils.Database) -> None:
    """The registered source that read each input (``hl7v2``, ``xml130``, a plugin's), so a replay
    reads the bytes with the same one. Rows from before this step are NULL: an ``XML|`` sender's
    is an XML 130 file, every other an HL7 v2 message (see :mod:`gateway.core.replay`)."""
    db["messages"].add_column("source", str)


def _add_outbox_detail(db: sqlite_utils.Database) -> None:
    """What the remote answered about a row's last attempt that operators must find again (the
    BHXH portal's transaction number), from ``DeliveryResult.detail``."""
    db["outbox"].add_column("last_detail", str)


#: Schema steps, applied in order and recorded in ``_migrations``; append, never edit.
MIGRATIONS: Sequence[tuple[str, Callable[[sqlite_utils.Database], None]]] = (
    ("0001_create_messages", _create_messages),
    ("0002_create_outbox", _create_outbox),
    ("0003_destination_circuit_state", _add_circuit_state),
    ("0004_messages_client", _add_message_client),
    ("0005_readiness", _create_readiness),
    (CONTENT_DIGEST_STEP, _redigest_without_msh7),
    ("0007_messages_with_body_index", _index_messages_with_body),
    ("0008_messages_acks_sent", _add_acks_sent),
    ("0009_messages_replay", _add_replay_columns),
    ("0010_not_routed", _create_not_routed),
    ("0011_messages_source", _add_message_source),
    ("0012_person_index", create_person_index),
    ("0013_outbox_detail", _add_outbox_detail),
    ("0014_audit_log", create_audit_log),
    ("0015_person_residence", create_person_residence),
)


class Store:
    """Where the database lives and how every connection to it is configured: the SQLite
    backend, and the default. :class:`gateway.core.postgres.PostgresStore` answers the same
    questions for a database several nodes share."""

    dialect = SQLITE
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    #: One gateway per data dir (``gateway.core.datadir_lock``): no node name is needed.
    node = ""

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

    def retryable(self, error: Exception) -> bool:
        """One writer per journal: nothing another writer did makes a commit fail."""
        return False

    def connect_writer(self) -> sqlite3.Connection:
        """The journal writer's connection: SQLite's own auto-checkpoint is off, the
        :class:`Checkpointer` copies the WAL instead."""
        conn = self.connect()
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def checkpointer(self, metrics: Metrics) -> Checkpointer:
        return Checkpointer(self.connect, metrics)

    def make_private(self) -> None:
        """The data dir 0700, the journal and its WAL and shared-memory files 0600: they hold
        every patient's messages. SQLite gives its -wal and -shm files the database file's mode,
        so the database is created empty with 0600 before SQLite opens it; a journal made
        before this rule is tightened in place."""
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        for path in (self.path, self.path.with_name(self.path.name + "-wal"),
                     self.path.with_name(self.path.name + "-shm")):
            if path.exists():
                os.chmod(path, 0o600)

    def read_in_thread(self, reactor, query: Callable[[sqlite3.Connection], Any]) -> Deferred:
        """See :func:`gateway.core.postgres.read_in_thread`."""
        return read_in_thread(self.connect, reactor, query)

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


def open_store(config: GatewayConfig) -> Store | PostgresStore:
    """The journal ``store.backend`` names. For PostgreSQL the node is ``store.node``, or this
    host's name when unset (a restart on the same host then takes back its own rows in flight)."""
    if config.store.backend == "postgresql":
        return PostgresStore(os.environ.get(config.store.dsn_env, ""), config.store.node or socket.gethostname(),
                             config.store.lease_seconds)
    return Store(config.database_path, config.store.synchronous)


@dataclass(frozen=True)
class Committed:
    """The journal's verdict on one message: its row, and the answer to give (repeats get the
    stored answer of the first copy)."""

    message_id: int
    ack_code: str | None
    issues: tuple[Issue, ...]
    duplicate: bool = False
    #: Identity links the person index made while resolving this decision's persons.
    links: int = 0


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
            "repeat_count", "last_repeat_at", "client", "acks_sent", "replay_of", "request", "forced_charset",
            "source")
_ROW = "(" + ", ".join("?" * len(_COLUMNS)) + ")"

#: The first copies whose answer was final (AA or AE) among a batch's keys, and their replays;
#: an AR invites the sender to try again, so an AR'd copy is never an original. Two IN lists keep
#: the (sender, control_id) index usable; the few extra pairs they admit, and the copies another
#: client sent, are filtered in Python.
_FIND_ORIGINALS = """
SELECT coalesce(client, ''), sender, control_id, id, content_sha256, ack_code, errors, replay_of FROM messages
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
#: How many times a group is tried when the database aborts it for another node's sake.
_COMMIT_ATTEMPTS = 3


class JournalWriter:
    """The single writer thread. ``submit`` from any thread; results arrive on the reactor."""

    def __init__(self, store: Store, reactor, metrics: Metrics, max_batch: int = 512, clock=None,
                 checkpointer: Checkpointer | None = None) -> None:
        self._store = store
        self._checkpointer = checkpointer or store.checkpointer(metrics)
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
        #: Called on the reactor after a commit in which the person index linked persons, so the
        #: links are announced to the plugins (:mod:`gateway.core.identity_updates`).
        self.on_linked: Callable[[], None] | None = None
        self._last_failure: tuple[float, str] | None = None

    def start(self) -> None:
        self._conn = self._store.connect_writer()
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
        """Fires with True when the writer can take the write lock and write a row now — the
        readiness check. It writes, because taking the lock alone succeeds on a full disk."""
        return self.run(_write_probe)

    @property
    def last_failure(self) -> tuple[float, str] | None:
        """When and why the last commit that carried messages failed, until one succeeds."""
        return self._last_failure

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
            results, task_results = self._transaction(jobs, tasks)
        except self._store.errors as e:
            self._metrics.commit_failures.inc()
            log.error("journal commit of {count} messages failed: {error}", count=len(jobs), error=str(e))
            if jobs:
                self._last_failure = (self._clock.seconds(), str(e))
            results = [e] * len(jobs)
            task_results = [e] * len(tasks)
        else:
            if jobs:
                self._last_failure = None
            self._checkpointer.committed()
            if jobs:
                self._metrics.commit_batch_size.observe(len(jobs))
                self._metrics.commit_duration.observe(time.perf_counter() - started)
        for job, result in zip(jobs, results):
            job.record_commit(result)
        queued = {item.destination for job, result in zip(jobs, results) if isinstance(result, Committed)
                  for item in job.decision.outbox} if self.on_queued is not None else set()
        linked = self.on_linked if any(isinstance(r, Committed) and r.links for r in results) else None
        self._reactor.callFromThread(_answer_all, jobs, tasks, task_results, queued and self.on_queued, queued, linked)

    def _transaction(self, jobs: list, tasks: list) -> tuple[list, list]:
        """One transaction for the group. On PostgreSQL, two nodes' groups can wait for each
        other's locks (one locks person P then Q, the other Q then P); the server aborts one, and
        that group is run again from the start, as nothing of it was committed."""
        attempt = 1
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    now = self._clock.seconds()
                    decisions = [job.decision for job in jobs]
                    results = journal_decisions(self._conn, decisions, now, self.unordered_destinations) if jobs else []
                    task_results = [_run_task(task, self._conn, now, self._store.errors) for task in tasks]
                    self._conn.execute("COMMIT")
                    return results, task_results
                except BaseException:
                    # SQLite rolls back by itself on some errors (SQLITE_FULL, SQLITE_IOERR); a second
                    # ROLLBACK would then raise and hide the error that says what went wrong.
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except self._store.errors as e:
                if attempt >= _COMMIT_ATTEMPTS or not self._store.retryable(e):
                    raise
                log.warn("journal commit of {count} messages met another node's ({error}); trying again",
                         count=len(jobs), error=str(e).splitlines()[0])
                attempt += 1


def journal_decisions(conn: sqlite3.Connection, decisions: list, now: float,
                      unordered: frozenset[str] = frozenset()) -> list[Committed]:
    """Journal a batch with as few SQLite calls as possible — one lookup, one multi-row
    INSERT — because every call releases and re-takes the GIL, and under load each re-take
    waits for the reactor or a pipeline worker to yield it.

    A decision whose (client, sender, control id) already has a final answer is a repeat
    (same content: the stored answer, no new row) or a conflict (different content: AE 205,
    new row). Copies of one message inside the batch are treated the same way. The client is
    part of the key, and a decision refused for who sent it is never a repeat, so another
    client's copy of the same bytes cannot fetch the stored answer (nor learn that it exists).

    A replay (``envelope.replay_of``) is neither: it is a new attempt of a journaled message,
    always a new row, and its answer, when final, is the one the message's resends get from
    then on. Its outbox rows have the first attempt's idempotency keys, so what was queued
    already is not queued again.

    The persons of the accepted decisions are resolved in the person index first, in journal
    order (:func:`gateway.rules.person_index.resolve_persons`), and their outbox rows ordered by
    the person's id: rows already queued keep the key they were queued with.
    """
    originals = _find_originals(conn, decisions)
    links: dict[int, int] = {}
    rows: list[list] = []
    plan: list[tuple[str, int, tuple]] = []  # ("row", index in rows) | ("old", journal id)
    repeats: dict[int, int] = {}
    for decision in decisions:
        source = decision.source  # the HL7 message or the XML file's DocumentSource
        key = _repeat_key(decision)
        ack_code, issues = decision.ack_code, decision.issues
        envelope = decision.envelope
        if envelope.replay_of is None and _may_repeat(decision):
            earlier = originals.get(key, {})
            original = earlier.get(decision.digest)
            if original is not None:
                where, ref, code, stored, _ = original
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
        status = "ignored" if ack_code is None else STATUS_BY_CODE[ack_code]
        request = decision.request
        rows.append([
            envelope.received_at, now, envelope.transport, envelope.peer, envelope.listener, decision.sender,
            decision.control_id, decision.message_type, source.version if source else "",
            source.charset if source else "", decision.plugin, ack_code, status,
            json.dumps([i.to_dict() for i in issues], ensure_ascii=False) if issues else None,
            decision.digest, envelope.raw, decision.records_json, 0, None, envelope.client or None,
            None if ack_code is None or decision.document is not None
            else "" if envelope.replay_of is not None else ",".join(ack_codes(decision.message, ack_code)),
            envelope.replay_of,
            None if request is None else json.dumps({"document": request.document, "facility": request.facility}),
            envelope.forced_charset, decision.source_name,
        ])
        plan.append(("row", len(rows) - 1, (ack_code, tuple(issues), False)))
        if status in ("accepted", "error") and decision.control_id:
            _remember(originals.setdefault(key, {}), decision.digest,
                      ("row", len(rows) - 1, ack_code, tuple(issues)), envelope.replay_of)
    ids: list[int] = []
    if rows:
        insert = f"INSERT INTO messages ({', '.join(_COLUMNS)}) VALUES " + ", ".join([_ROW] * len(rows))
        values = [value for row in rows for value in row]
        if dialect(conn) == SQLITE:
            cursor = conn.execute(insert, values)
            # Rowids of a multi-row INSERT are consecutive: this thread is the only writer and
            # holds the write lock, and SQLite gives each new row max(rowid) + 1.
            ids = list(range(cursor.lastrowid - len(rows) + 1, cursor.lastrowid + 1))
        else:
            # Another node may take ids from the same sequence meanwhile, but one statement takes
            # its own in the order of its rows.
            ids = sorted(row_id for (row_id,) in conn.execute(insert + " RETURNING id", values))
        accepted = [(ids[ref], decision) for decision, (where, ref, (code, _, _)) in zip(decisions, plan)
                    if where == "row" and code == ACCEPT]
        resolved = _resolved_persons(conn, accepted, now)
        queued = []
        for message_id, decision in accepted:
            outbox, found = decision.outbox, resolved.get(message_id)
            if found is not None:
                links[message_id] = found.links
                if found.keys:
                    outbox = [replace(i, ordering_key=found.keys.get(i.ordering_key, i.ordering_key)) for i in outbox]
            queued += [(message_id, item) for item in outbox]
        if queued:
            insert_outbox_rows(conn, queued, now, unordered)
        not_routed = [(message_id, n.destination, n.reason, n.text[:2000], now)
                      for message_id, decision in accepted for n in decision.not_routed]
        if not_routed:
            conn.executemany(_INSERT_NOT_ROUTED, not_routed)
    if repeats:
        conn.executemany(_COUNT_REPEATS, [{"repeats": n, "now": now, "id": i} for i, n in repeats.items()])
    return [Committed(ids[ref] if where == "row" else ref, code, issues, duplicate,
                      links.get(ids[ref], 0) if where == "row" else 0)
            for where, ref, (code, issues, duplicate) in plan]


def _resolved_persons(conn: sqlite3.Connection, accepted: list, now: float) -> dict[int, Resolved]:
    """The accepted decisions' persons resolved in the person index, in journal order, by message
    id, in one savepoint for the batch: a fault of the index must not cost the commit (and every
    message in it), so the batch's record sets then keep the ordering keys the pipeline gave them,
    and the fault is logged."""
    with_persons = [(message_id, decision) for message_id, decision in accepted if decision.persons]
    if not with_persons:
        return {}
    conn.execute("SAVEPOINT persons")
    try:
        found = {message_id: resolve_persons(conn, decision.persons, now) for message_id, decision in with_persons}
    except Exception as e:
        if not conn.in_transaction:  # SQLite ended the whole transaction (a full disk): the commit fails
            raise
        conn.execute("ROLLBACK TO persons")
        conn.execute("RELEASE persons")
        log.error("the person index failed on a commit of {count} messages ({error_type}: {error}); their records "
                  "are ordered by their own identifiers", count=len(with_persons), error_type=type(e).__name__,
                  error=mask_text(str(e)))
        return {}
    conn.execute("RELEASE persons")
    return found


def _find_originals(conn: sqlite3.Connection, decisions: list) -> dict[tuple[str, str, str], dict[str, tuple]]:
    """Every earlier final answer per (client, sender, control id), keyed by content digest.

    A conflicting copy's own AE 205 row is an original too, so resending that copy is a repeat.
    """
    keys = {_repeat_key(d) for d in decisions if _may_repeat(d)}
    if not keys:
        return {}
    if dialect(conn) == POSTGRESQL:
        # Another node may be journaling a copy of the same message right now: each key is taken
        # until this commit, so of two copies the second is looked up after the first is in.
        conn.lock_keys("message\x1f" + "\x1f".join(key) for key in keys)
    senders = sorted({k[1] for k in keys})
    control_ids = sorted({k[2] for k in keys})
    sql = _FIND_ORIGINALS.format(senders=", ".join("?" * len(senders)), control_ids=", ".join("?" * len(control_ids)))
    found: dict[tuple[str, str, str], dict[str, tuple]] = {}
    for client, sender, control_id, row_id, digest, code, errors, replay_of in conn.execute(
            sql, senders + control_ids):
        key = (client, sender, control_id)
        if key in keys:
            stored = tuple(Issue.from_dict(e) for e in json.loads(errors or "[]"))
            _remember(found.setdefault(key, {}), digest, ("old", row_id, code, stored), replay_of, row_id)
    return found


def _remember(by_digest: dict[str, tuple], digest: str, answer: tuple, replay_of: int | None,
              row_id: int | None = None) -> None:
    """Keep ``answer`` (where, ref, code, issues) as what a resend of ``digest`` gets, rows taken
    in id order: the first copy's answer, unless a later replay of that first copy answered
    since. Each kept answer ends with the id of the first attempt it belongs to (None for a row
    of this batch, which no replay can name yet)."""
    current = by_digest.get(digest)
    if replay_of is None:
        if current is None:
            by_digest[digest] = (*answer, row_id)
    elif current is None or current[4] == replay_of:
        by_digest[digest] = (*answer, replay_of)


def _repeat_key(decision) -> tuple[str, str, str]:
    """Whose message this is, for telling a repeat from a new one: a repeat is a repeat only for
    the client that sent the original (``""`` for an anonymous sender)."""
    return decision.envelope.client or "", decision.sender, decision.control_id


def _may_repeat(decision) -> bool:
    """Whether ``decision`` is looked up among the originals. Not when it is refused for what came
    with the bytes (who sent them, a portal form that contradicts the file; see
    ``Decision.repeatable``): that refusal is the answer, whatever the journal holds, just as it
    would be for a file never sent before."""
    if decision.source is None or decision.ack_code is None or not decision.control_id:
        return False
    return decision.repeatable


class _Task:
    __slots__ = ("fn", "deferred")

    def __init__(self, fn: Callable, deferred: Deferred) -> None:
        self.fn = fn
        self.deferred = deferred


class _TaskFailed:
    """A task's own exception, carried back to the reactor without aborting the group commit."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _run_task(task: _Task, conn: sqlite3.Connection, now: float, errors: tuple[type[Exception], ...]):
    conn.execute("SAVEPOINT task")
    try:
        result = task.fn(conn, now)
    except errors:
        raise
    except Exception as e:  # a buggy task fails alone; the messages committed with it stay committed
        conn.execute("ROLLBACK TO task")
        conn.execute("RELEASE task")
        return _TaskFailed(e)
    conn.execute("RELEASE task")
    return result


def _write_probe(conn: sqlite3.Connection, now: float) -> bool:
    conn.execute("INSERT INTO readiness (id, checked_at) VALUES (1, ?) "
                 "ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at", (now,))
    return True


def _answer_all(jobs: list, tasks: list, task_results: list, on_queued, queued: set[str], on_linked=None) -> None:
    for job in jobs:
        job.answer()
    if on_queued:
        on_queued(queued)
    if on_linked:
        on_linked()
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
               "repeat_count", "last_repeat_at", "client", "acks_sent", "replay_of", "request", "source")

    def __init__(self, store: Store) -> None:
        self._conn = store.connect()
        self._conn.row_factory = sqlite3.Row
        # A journal the gateway has not migrated yet (the CLI of a newer version) lacks the newest
        # columns: they read as NULL rather than failing the query.
        present = {row[1] for row in self._conn.execute("PRAGMA table_info(messages)")}
        self._select = ", ".join(c if c in present else f"NULL AS {c}" for c in self.COLUMNS)

    def close(self) -> None:
        self._conn.close()

    def query(self, question: Callable[..., Any], *args: object) -> Any:
        """``question(connection, *args)`` on this journal's connection (an outbox or index query)."""
        return question(self._conn, *args)

    def list_messages(self, *, control_id: str | None = None, sender: str | None = None, status: str | None = None,
                      since: float | None = None, until: float | None = None, client: str | None = None,
                      facility: str | None = None, message_type: str | None = None, person: str | None = None,
                      limit: int = 50) -> list[dict]:
        """Newest first. ``sender`` matches ``APP|FACILITY`` exactly or, without ``|``, the application;
        ``facility`` the sender's facility (its part after ``|``); ``message_type`` exactly or, ending
        in ``*``, by its start (``ADT^*``); ``client`` is the authenticated ``[clients.NAME]``;
        ``person`` a person id or an identifier's value: the messages queued for that person or a
        person merged into it (their outbox rows' ordering key; a message routed nowhere is not
        found). ERR texts are ours or a plugin's and should hold no identifier or name; ``errors``
        is masked all the same, since a plugin's text may quote one."""
        where, params = [], {"limit": limit}
        if facility:
            where.append("substr(sender, instr(sender, '|') + 1) = :facility AND instr(sender, '|') > 0")
            params["facility"] = facility
        if message_type:
            if message_type.endswith("*"):
                where.append("substr(message_type, 1, :type_len) = :type_start")
                params.update(type_start=message_type[:-1], type_len=len(message_type) - 1)
            else:
                where.append("message_type = :message_type")
                params["message_type"] = message_type
        if person:
            where.append("id IN (SELECT message_id FROM outbox WHERE ordering_key IN "
                         "(SELECT value FROM json_each(:persons)))")
            params["persons"] = json.dumps(self._persons_named(person))
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
        sql = f"SELECT {self._select} FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT :limit"
        rows = [_with_acks_sent_listed(dict(row)) for row in self._conn.execute(sql, params)]
        names = patient_names(self._conn, [r["id"] for r in rows if r["errors"]])
        for r in rows:
            if r["errors"]:
                r["errors"] = mask_text(r["errors"], names.get(r["id"], ()))
        return rows

    def _persons_named(self, text: str) -> list[str]:
        """The person ``text`` names (its id, or an identifier's value) and those merged into it."""
        found = {text.strip(), *find_persons(self._conn, identifier=text, limit=20)}
        replaced = self._conn.execute("SELECT id FROM persons WHERE replaced_by IN (SELECT value FROM json_each(?))",
                                      (json.dumps(sorted(found)),)).fetchall()
        return sorted(found | {row[0] for row in replaced})

    def attempts_of(self, message_id: int) -> list[dict]:
        """Every attempt of the message ``message_id`` is one of: what the sender sent and each
        replay of it (``replay_of``), oldest first."""
        first = self._conn.execute("SELECT coalesce(replay_of, id) FROM messages WHERE id = ?",
                                   (message_id,)).fetchone()
        if first is None:
            return []
        return [dict(row) for row in self._conn.execute(
            "SELECT id, received_at, ack_code, status FROM messages WHERE id = :first OR replay_of = :first "
            "ORDER BY id", {"first": first[0]})]

    def get_message(self, message_id: int) -> dict | None:
        """One message: ``errors`` and ``records`` (JSON texts) masked as every operator view
        is, ``raw`` as received (``messages show --raw``, the forensic view)."""
        row = self._conn.execute(
            f"SELECT {self._select}, raw, records FROM messages WHERE id = :id", {"id": message_id}).fetchone()
        if row is None:
            return None
        found = _with_acks_sent_listed(dict(row))
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


def _with_acks_sent_listed(row: dict) -> dict:
    """``acks_sent`` as the list of codes (``[]``: none was sent; None: not recorded)."""
    sent = row["acks_sent"]
    row["acks_sent"] = None if sent is None else [code for code in sent.split(",") if code]
    return row
