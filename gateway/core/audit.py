"""The audit log: who got in (or was refused), and what operators did, in a hash chain.

One append-only table of the journal database, ``audit_log``. Each entry holds when, who (the
actor: the OS user for the CLI, the admin identity for the admin API and the console, the client
for intake), from where (the peer), what (the action and its target) and how it ended (outcome and
reason), and two SHA-256 digests: the previous entry's, and its own over a canonical encoding of
its id, content and that previous digest. Editing an entry breaks its own digest; deleting or
reordering entries breaks the next entry's link; :func:`verify` names the first entry where the
chain breaks. What a chain alone cannot show is the loss of its newest entries: the copy to a
syslog collector (:mod:`gateway.core.audit_syslog`), kept on another host, is the witness for
those.

Appends hold the database's write lock (the gateway's journal writer, or the CLI's ``BEGIN
IMMEDIATE``), so the gateway and a CLI command never link two entries to the same predecessor.

What is recorded, and why intake successes are thinned: every authentication failure (wrong
token or certificate, an unknown sender while ``auth.required``, a wrong admin token, the admin API
from a non-loopback peer without a token) is one entry. A success is one entry per surface, actor
and peer address per ``audit.success_window_seconds`` (an hour by default): a HIS posts thousands
of messages an hour, and an entry (a digest and a row in the commit) per message would make the
log the biggest table and slow the intake, while one per window still says who was in, from where,
and since when. An MLLP connection authenticates once, so a long-lived connection costs one entry.
Operator actions and reads of message bodies are each one entry, made in the same transaction as
the action where the action writes (a review decision, a reveal).

Entries hold no patient identifier in clear: targets are journal row ids, destination and person
ids, and reasons pass through :func:`gateway.model.masking.mask_text`.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlite_utils
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from gateway.core.metrics import Metrics
from gateway.core.postgres import POSTGRESQL, dialect
from gateway.model.masking import mask_text

log = Logger(namespace="hssk.audit")

#: The previous digest of the first entry.
GENESIS = "0" * 64

#: Surfaces: where an actor came in.
CLI, ADMIN, HTTP, MLLP = "cli", "admin", "http", "mllp"
SURFACES = (CLI, ADMIN, HTTP, MLLP)

#: The actor of an intake sender that names no client, let in while ``auth.required`` is false.
ANONYMOUS = "anonymous"

#: Outcomes.
OK, REFUSED, FAILED = "ok", "refused", "failed"

#: Actions (a closed set: they are metric label values).
AUTH = "auth"
OUTBOX_RETRY = "outbox.retry"
OUTBOX_PAUSE = "outbox.pause"
OUTBOX_RESUME = "outbox.resume"
OUTBOX_PURGE = "outbox.purge"
OUTBOX_FLUSH = "outbox.flush"
OUTBOX_PAYLOAD_READ = "outbox.payload_read"
MESSAGES_REPLAY = "messages.replay"
MESSAGES_READ = "messages.read"
FEED = "feed"
REVIEW_ACCEPT = "identity.review_accept"
REVIEW_REJECT = "identity.review_reject"
PERSONS_REVEAL = "persons.reveal"
#: A copy of the whole journal, every message body in it.
JOURNAL_BACKUP = "journal.backup"
ACTIONS = (AUTH, OUTBOX_RETRY, OUTBOX_PAUSE, OUTBOX_RESUME, OUTBOX_PURGE, OUTBOX_FLUSH, OUTBOX_PAYLOAD_READ,
           MESSAGES_REPLAY, MESSAGES_READ, FEED, REVIEW_ACCEPT, REVIEW_REJECT, PERSONS_REVEAL, JOURNAL_BACKUP)

#: The longest reason kept; an error text longer than this is cut.
MAX_REASON = 500


@dataclass(frozen=True)
class AuditEntry:
    """One thing to record, before it has a place in the chain."""

    surface: str
    actor: str
    action: str
    peer: str = ""
    target: str = ""
    outcome: str = OK
    reason: str = ""


_CONTENT = ("at", "surface", "actor", "peer", "action", "target", "outcome", "reason")


def create_audit_log(db: sqlite_utils.Database) -> None:
    """The ``audit_log`` table (store migration ``0014_audit_log``), indexed for the questions
    ``audit list`` asks: since when, by whom, which action."""
    db["audit_log"].create({
        "id": int, "at": float, "surface": str, "actor": str, "peer": str, "action": str, "target": str,
        "outcome": str, "reason": str, "prev_hash": str, "hash": str,
    }, pk="id", not_null={"at", "surface", "actor", "action", "outcome", "prev_hash", "hash"})
    db["audit_log"].create_index(["at"], index_name="audit_log_by_time")
    db["audit_log"].create_index(["actor", "id"], index_name="audit_log_by_actor")
    db["audit_log"].create_index(["action", "id"], index_name="audit_log_by_action")


def entry_hash(entry_id: int, content: Sequence, prev_hash: str) -> str:
    """SHA-256 over the canonical encoding: compact JSON (UTF-8, no escapes of non-ASCII) of the
    id, the content in :data:`_CONTENT` order (time as SQLite stores it, a double) and the previous
    digest. The id is in it, so swapping two entries' contents breaks both."""
    canonical = json.dumps([entry_id, *content, prev_hash], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def append(conn: sqlite3.Connection, now: float, entries: Iterable[AuditEntry]) -> list[dict]:
    """Chain ``entries`` after the newest entry; the caller holds the write lock (inside the
    journal writer's transaction, or the CLI's ``BEGIN IMMEDIATE``). Returns the rows written.
    On PostgreSQL every node's writer holds its own write lock, so the chain's end is taken as well,
    until the commit: two nodes never chain onto the same entry."""
    if dialect(conn) == POSTGRESQL:
        conn.lock_keys(["audit_log"])
    last = conn.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    last_id, prev = last if last is not None else (0, GENESIS)
    written = []
    for entry in entries:
        last_id += 1
        content = [float(now), entry.surface, entry.actor, entry.peer, entry.action, mask_text(entry.target),
                   entry.outcome, mask_text(entry.reason)[:MAX_REASON]]
        digest = entry_hash(last_id, content, prev)
        conn.execute("INSERT INTO audit_log (id, at, surface, actor, peer, action, target, outcome, reason, "
                     "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [last_id, *content, prev, digest])
        written.append(dict(zip(("id", *_CONTENT, "prev_hash", "hash"), (last_id, *content, prev, digest))))
        prev = digest
    return written


@dataclass(frozen=True)
class Broken:
    """Where the chain breaks: the entry, and what is wrong with it."""

    entry_id: int
    problem: str


def verify(conn: sqlite3.Connection) -> tuple[int, Broken | None]:
    """Walk the chain oldest first: (entries checked, the first break or None)."""
    prev, prev_id, count = GENESIS, 0, 0
    for row in conn.execute(f"SELECT id, {', '.join(_CONTENT)}, prev_hash, hash FROM audit_log ORDER BY id"):
        entry_id, content, stored_prev, stored = row[0], list(row[1:-2]), row[-2], row[-1]
        count += 1
        if stored_prev != prev:
            before = f"entry {prev_id}" if prev_id else "the start of the log"
            return count, Broken(entry_id, f"its previous-entry digest does not match {before}: an entry between "
                                           f"them was deleted, or they were reordered")
        if entry_hash(entry_id, content, stored_prev) != stored:
            return count, Broken(entry_id, "its content does not match its digest: the entry was edited")
        prev, prev_id = stored, entry_id
    return count, None


def list_entries(conn: sqlite3.Connection, *, since: float | None = None, actor: str | None = None,
                 action: str | None = None, limit: int = 100) -> list[dict]:
    """Newest first."""
    where, params = [], {"limit": limit}
    for column, value, test in (("at", since, "at >= :at"), ("actor", actor, "actor = :actor"),
                                ("action", action, "action = :action")):
        if value is not None:
            where.append(test)
            params[column] = value
    sql = f"SELECT id, {', '.join(_CONTENT)}, prev_hash, hash FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    cursor = conn.execute(sql + " ORDER BY id DESC LIMIT :limit", params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


def counts_since(conn: sqlite3.Connection, after_id: int, surface: str) -> tuple[int, dict[tuple[str, str], int]]:
    """Entries of ``surface`` after ``after_id``, counted by (action, outcome), and the newest id."""
    newest = conn.execute("SELECT coalesce(max(id), 0) FROM audit_log").fetchone()[0]
    counted = conn.execute("SELECT action, outcome, count(*) FROM audit_log WHERE id > ? AND id <= ? AND surface = ? "
                           "GROUP BY action, outcome", (after_id, newest, surface)).fetchall()
    return newest, {(action, outcome): n for action, outcome, n in counted}


class AuditLog:
    """The running gateway's side: transports and the admin API record here; entries are chained
    in one writer task per reactor turn (so a burst costs one task), then copied to syslog from
    the thread pool, never on the reactor. A failed commit keeps the entries for the next one
    (at most ``max_pending``: past that the oldest are dropped, logged and counted)."""

    def __init__(self, writer, store, reactor, clock: IReactorTime, metrics: Metrics, success_window: float = 3600.0,
                 sink=None, max_pending: int = 10_000, max_tracked: int = 10_000) -> None:
        self._writer = writer
        self._store = store
        self._reactor = reactor
        self._clock = clock
        self._metrics = metrics
        self._window = success_window
        self._sink = sink
        self._max_pending = max_pending
        self._max_tracked = max_tracked
        self._pending: list[AuditEntry] = []
        self._scheduled = False
        self._flushing: Deferred | None = None
        self._copying: Deferred = succeed(None)
        #: (surface, actor, peer host) → when its success was last recorded.
        self._seen: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        #: The newest entry id the CLI count has seen; None before the first count, which only
        #: takes the baseline (what came before this gateway started was counted by the one before).
        self._cli_seen: int | None = None

    def record(self, entry: AuditEntry) -> None:
        self._metrics.audit_entries.labels(action=entry.action, outcome=entry.outcome).inc()
        if entry.action == AUTH and entry.outcome != OK:
            self._metrics.auth_failures.labels(surface=entry.surface).inc()
        self._pending.append(entry)
        if len(self._pending) > self._max_pending:
            dropped = len(self._pending) - self._max_pending
            del self._pending[:dropped]
            self._metrics.audit_dropped.inc(dropped)
            log.error("the audit log could not be written and {count} entries waiting were dropped", count=dropped)
        if not self._scheduled:
            self._scheduled = True
            self._clock.callLater(0, self._flush_soon)

    def authenticated(self, surface: str, actor: str, peer: str, host: str) -> None:
        """A success: recorded when this surface, actor and address had none recorded within
        the window (see the module's docstring)."""
        key = (surface, actor, host)
        now = self._clock.seconds()
        last = self._seen.get(key)
        if last is not None and now - last < self._window:
            return
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_tracked:
            self._seen.popitem(last=False)
        self.record(AuditEntry(surface, actor, AUTH, peer, outcome=OK))

    def refused(self, surface: str, peer: str, reason: str, actor: str = "") -> None:
        self.record(AuditEntry(surface, actor, AUTH, peer, outcome=REFUSED, reason=reason))

    def _flush_soon(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> Deferred:
        """Chain what is pending; fires when it is committed (or its commit failed, logged)."""
        if self._flushing is not None:  # one task at a time keeps the entries in recorded order
            return self._flushing.addBoth(lambda _: self.flush())
        entries, self._pending = self._pending, []
        if not entries:
            return succeed(None)
        d = self._writer.run(lambda conn, now: append(conn, now, entries))
        d.addCallbacks(self._written, self._not_written, errbackArgs=(entries,))
        self._flushing = d

        def done(result):
            self._flushing = None
            return result

        return d.addBoth(done)

    def _written(self, rows: list[dict]) -> None:
        """Copy to syslog one send after the other, so the collector gets the entries in order."""
        if self._sink is not None:
            self._copying.addCallback(
                lambda _: deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._sink.send, rows))
            self._copying.addErrback(lambda f: log.failure("copying audit entries to syslog failed", f))

    def _not_written(self, failure, entries: list[AuditEntry]) -> None:
        log.error("the audit log could not be written ({error}); {count} entries kept for the next commit",
                  error=failure.getErrorMessage(), count=len(entries))
        self._pending[:0] = entries

    def count_cli_entries(self) -> Deferred:
        """Count, into the metrics, the entries CLI commands (other processes) chained since the
        last call, read in the thread pool; the gateway calls it on the outbox refresh's schedule."""
        return self._store.read_in_thread(self._reactor, self._count_cli_entries).addErrback(
            lambda f: log.failure("counting the CLI's audit entries failed", f))

    def _count_cli_entries(self, conn: sqlite3.Connection) -> None:
        newest, counted = counts_since(conn, self._cli_seen or 0, CLI)
        first = self._cli_seen is None
        self._cli_seen = newest
        if first:
            return
        for (action, outcome), n in counted.items():
            self._metrics.audit_entries.labels(action=action, outcome=outcome).inc(n)

