"""Replay: a journaled message's bytes, as received, go through today's pipeline again.

An operator replays what was answered AE or AR once the plugin or the config at fault is fixed
(the AE 207 texts promise it). The bytes keep what the transport knew of them (transport, peer,
listener, client, time received, imposed charset, portal form fields); the client's facilities
are today's config. The new decision is journaled as a new attempt of the message
(``messages.replay_of``, the first attempt's id) and answered to nobody. Its outbox rows carry
the first attempt's idempotency keys, so a record queued already is not queued again, and a
later resend of the same bytes gets the latest attempt's answer (see
:func:`gateway.core.store.journal_decisions`).

Two ways in, one rule each for who writes:

- the running gateway (``POST /admin/messages/...``, and ``hssk-gateway messages replay --url``):
  :class:`Replayer` hands the envelopes to the gateway's own intake, so its workers (or child
  processes), timeouts and bounds decide, and its single journal writer commits;
- the CLI without ``--url`` (:func:`replay_here`): it runs the pipeline in its own process, with
  the plugins installed and the config given, and journals in short transactions of its own, as
  the ``outbox`` commands do. That is for a stopped gateway.

Messages are replayed in the order they first arrived, a few at a time, and their new rows
keep that order, so a person's replayed records queue in the order the sender sent them.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import DeferredSemaphore, gatherResults, succeed
from twisted.internet.threads import deferToThreadPool

from gateway.config import GatewayConfig
from gateway.core.clients import ClientRegistry
from gateway.core.documents import SENDER_PREFIX, DocumentRequest
from gateway.core.intake import ArrivalOrder, Intake
from gateway.core.lookups import not_performed
from gateway.core.outbox import queued_keys
from gateway.core.pipeline import Decision, Pipeline
from gateway.core.sources import HL7_V2, XML_130
from gateway.core.store import Store, journal_decisions
from gateway.model.envelope import Envelope
from gateway.model.masking import mask_text, names_in_records
from gateway.model.outcome import ACCEPT, STATUS_BY_CODE, Outcome

#: The statuses a period's messages are picked by; an inbound ACK (``ignored``) only by its id.
SELECTABLE_STATUSES = ("accepted", "error", "rejected")
MAX_LIMIT = 1000
#: What a message whose bytes retention removed is answered.
PRUNED = "its bytes were removed after the retention period (outbox.retention_days); it cannot be replayed"
#: The answer of a remote lookup a replay cannot perform: only the running gateway reaches remote services.
NO_LOOKUPS = "decided outside the running gateway (a dry run, or a replay without --url), which performs no lookups"


@dataclass(frozen=True)
class Selection:
    """Which journaled messages to replay: one by id, or the latest attempts that have ``status``
    among the messages received in [since, until), at most ``limit``, oldest first."""

    message_id: int | None = None
    status: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100

    def problem(self) -> str | None:
        """What is wrong with the selection, said for the operator; None when it can be made."""
        if (self.message_id is None) == (self.status is None):
            return "give a message id, or a status and the start of the period to look in (since), not both"
        if self.status is not None:
            if self.status not in SELECTABLE_STATUSES:
                return f"status {self.status!r} is not one of {', '.join(SELECTABLE_STATUSES)}"
            if self.since is None:
                return "a status needs since, the start of the period to look in (an ISO date or date-time)"
        if not 1 <= self.limit <= MAX_LIMIT:
            return f"limit must be from 1 to {MAX_LIMIT}, got {self.limit}"
        return None


@dataclass(frozen=True)
class Journaled:
    """A journaled message as a replay needs it."""

    id: int
    first_attempt: int
    received_at: float
    transport: str
    peer: str
    listener: str
    client: str
    #: None for a row journaled before the charset was recorded.
    forced_charset: str | None
    raw: bytes
    request: DocumentRequest | None
    sender: str
    control_id: str
    ack_code: str | None
    #: The registered source that read it.
    source: str


#: Rows from before sources were journaled are HL7 v2 messages or XML 130 files (``XML|`` senders).
_SELECT = f"""
SELECT id, coalesce(replay_of, id), received_at, transport, peer, listener, coalesce(client, ''), forced_charset,
       raw, request, sender, control_id, ack_code,
       coalesce(source, CASE WHEN substr(sender, 1, 4) = '{SENDER_PREFIX}' THEN '{XML_130}' ELSE '{HL7_V2}' END)
FROM messages AS m
"""

#: The latest attempt of each message (no later replay of its first attempt) whose status is
#: the one asked for, in the order the messages first arrived.
_LATEST_WITH_STATUS = _SELECT + """
WHERE m.status = :status AND m.received_at >= :since AND m.received_at < :until
  AND NOT EXISTS (SELECT 1 FROM messages AS later
                  WHERE later.replay_of = coalesce(m.replay_of, m.id) AND later.id > m.id)
ORDER BY coalesce(m.replay_of, m.id), m.id
LIMIT :limit
"""


def select(conn: sqlite3.Connection, selection: Selection) -> tuple[list[Journaled], bool]:
    """The messages to replay, and whether ``limit`` left some out."""
    if selection.message_id is not None:
        rows = conn.execute(_SELECT + "WHERE m.id = :id", {"id": selection.message_id}).fetchall()
        return [_journaled(row) for row in rows], False
    rows = conn.execute(_LATEST_WITH_STATUS, {
        "status": selection.status, "since": selection.since,
        "until": selection.until if selection.until is not None else float("inf"),
        "limit": selection.limit + 1}).fetchall()
    return [_journaled(row) for row in rows[:selection.limit]], len(rows) > selection.limit


def _journaled(row: tuple) -> Journaled:
    request = json.loads(row[9]) if row[9] else None
    return Journaled(*row[:9], DocumentRequest(**request) if request else None, *row[10:])


def envelope_of(message: Journaled, clients: ClientRegistry, listener_charset: str) -> Envelope:
    """The envelope the message came in, marked as a replay of its first attempt. A row from
    before the imposed charset was journaled takes the MLLP listener's today."""
    client = clients.named(message.client) if message.client else None
    charset = message.forced_charset
    if charset is None:
        charset = listener_charset if message.transport == "mllp" else ""
    return Envelope(message.raw, message.transport, message.peer, message.received_at, message.listener,
                    client.facility if client else None, charset, client.name if client else "",
                    client.facilities if client else frozenset(), replay_of=message.first_attempt)


def decide(pipeline: Pipeline, message: Journaled, envelope: Envelope) -> Decision:
    """Decided here, in this thread: remote lookups are answered ``not_performed``, and the
    plugin that asked decides what that means, as for a service that is down."""
    decision = pipeline.decide(envelope, None, message.request, source=message.source)
    if decision.lookups:
        decision = pipeline.decide(envelope, None, message.request, source=message.source,
                                   answers=not_performed(decision.lookups, NO_LOOKUPS))
    return decision


def _unknown_source(message: Journaled, pipeline: Pipeline) -> str | None:
    """Why ``message`` cannot be replayed by this pipeline: its source is not registered any more."""
    if message.source in pipeline.sources:
        return None
    return (f"its source {message.source!r} is not registered (the plugin that added it is not loaded); it cannot "
            f"be replayed")


def _skipped(message: Journaled, pipeline: Pipeline) -> str | None:
    return PRUNED if not message.raw else _unknown_source(message, pipeline)


def _entry(message: Journaled, ack_code: str | None = None, errors: list[dict] | None = None,
           message_id: int | None = None, queued: int = 0, skipped: str | None = None) -> dict:
    """One line of a replay's answer: the message, what it was, what it is now, what was queued."""
    return {"id": message.id, "control_id": message.control_id, "sender": message.sender, "was": message.ack_code,
            "ack_code": ack_code, "status": None if skipped else STATUS_BY_CODE.get(ack_code, "ignored"),
            "errors": errors or [], "message_id": message_id, "queued": queued, "skipped": skipped}


def _planned(message: Journaled, decision: Decision, queued: set[str]) -> dict:
    """A dry run's line: the decision, its errors masked as every operator view is, and the
    rows it would queue (those whose idempotency key is not queued already)."""
    records = json.loads(decision.records_json) if decision.records_json else None
    names = names_in_records(records)
    errors = [{**i.to_dict(), "text": mask_text(i.text, names)} for i in decision.issues]
    would = sum(1 for item in decision.outbox if item.idempotency_key not in queued)
    return _entry(message, decision.ack_code, errors, queued=would if decision.ack_code == ACCEPT else 0)


def _recorded(conn: sqlite3.Connection, message: Journaled, message_id: int) -> dict:
    """A replay's line, read back from the journal: the new row's decision (errors masked) and the
    outbox rows it queued."""
    code, errors, records = conn.execute(
        "SELECT ack_code, errors, records FROM messages WHERE id = ?", (message_id,)).fetchone()
    names = names_in_records(json.loads(records)) if records else ()
    queued = conn.execute("SELECT count(*) FROM outbox WHERE message_id = ?", (message_id,)).fetchone()[0]
    return _entry(message, code, json.loads(mask_text(errors, names)) if errors else [], message_id, queued)


def _already_queued(conn: sqlite3.Connection, decisions: list[Decision]) -> set[str]:
    return queued_keys(conn, [item.idempotency_key for d in decisions for item in d.outbox])


def _answer(dry_run: bool, entries: list[dict], more: bool) -> dict:
    return {"dry_run": dry_run, "replayed": entries, "more": more}


class Replayer:
    """Replays for the running gateway: decided by its intake (its workers or child processes,
    its timeouts and bounds), journaled by its single writer. A dry run decides on the reactor's
    thread pool with the gateway's pipeline and journals nothing."""

    def __init__(self, intake: Intake, pipeline: Pipeline, store: Store, clients: ClientRegistry,
                 config: GatewayConfig, reactor) -> None:
        self._intake = intake
        self._pipeline = pipeline
        self._store = store
        self._clients = clients
        self._listener_charset = config.mllp.charset
        #: Replays in flight at once, one per worker: a live message waits behind at most one
        #: round of them.
        self._window = config.pipeline.workers
        self._reactor = reactor

    def _read(self, query: Callable[[sqlite3.Connection], Any]):
        return self._store.read_in_thread(self._reactor, query)

    async def select(self, selection: Selection) -> tuple[list[Journaled], bool]:
        return await self._read(lambda conn: select(conn, selection))

    async def replay(self, messages: list[Journaled], more: bool, dry_run: bool) -> dict:
        envelopes = [envelope_of(m, self._clients, self._listener_charset) for m in messages]
        skipped = [_skipped(m, self._pipeline) for m in messages]
        if dry_run:
            decisions = [await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), decide,
                                                 self._pipeline, m, e) if not skip else None
                         for m, e, skip in zip(messages, envelopes, skipped)]
            queued = await self._read(lambda conn: _already_queued(conn, [d for d in decisions if d]))
            return _answer(True, [_planned(m, d, queued) if d else _entry(m, skipped=skip)
                                  for m, d, skip in zip(messages, decisions, skipped)], more)
        order, window = ArrivalOrder(), DeferredSemaphore(self._window)
        outcomes = await gatherResults([window.run(self._submit, m, e, order) if not skip else succeed(None)
                                        for m, e, skip in zip(messages, envelopes, skipped)])

        def read_back(conn: sqlite3.Connection) -> list[dict]:
            return [_entry(m, skipped=skip) if outcome is None
                    else _entry(m, skipped=_not_journaled(outcome)) if outcome.message_id is None
                    else _recorded(conn, m, outcome.message_id) for m, outcome, skip in zip(messages, outcomes, skipped)]

        return _answer(False, await self._read(read_back), more)

    def _submit(self, message: Journaled, envelope: Envelope, order: ArrivalOrder):
        return self._intake.submit(envelope, order, source=message.source, request=message.request)


def _not_journaled(outcome: Outcome) -> str:
    """Why the intake did not journal a replay (a bound, the gateway stopping, the journal failing)."""
    return "not replayed: " + "; ".join(i.text for i in outcome.issues)


def replay_here(store: Store, config: GatewayConfig, pipeline: Pipeline, selection: Selection,
                dry_run: bool, unordered: frozenset[str] = frozenset()) -> dict:
    """The CLI's replay, in this process: each message decided here and, unless ``dry_run``,
    journaled in a transaction of its own (BEGIN IMMEDIATE, so a running writer and this take
    turns). For a stopped gateway; a running one is asked through its admin API instead.
    ``unordered``: the batched destinations, whose rows need no per-person order."""
    clients = ClientRegistry.from_config(config.clients, config.auth)
    conn = store.connect()
    try:
        messages, more = select(conn, selection)
        entries = []
        for message in messages:
            skipped = _skipped(message, pipeline)
            if skipped:
                entries.append(_entry(message, skipped=skipped))
                continue
            decision = decide(pipeline, message, envelope_of(message, clients, config.mllp.charset))
            if dry_run:
                entries.append(_planned(message, decision, _already_queued(conn, [decision])))
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                [committed] = journal_decisions(conn, [decision], time.time(), unordered)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            entries.append(_recorded(conn, message, committed.message_id))
        return _answer(dry_run, entries, more)
    finally:
        conn.close()
