"""The outbox table: what is queued for which destination, and every state change it goes
through, as plain SQL run on the journal writer thread.

Rows are written in the same transaction as their journal row (an AA always implies queued
work) and change state only on the writer thread, so SQLite has one writer. Only the oldest
undelivered row of a person is ``pending``; the person's later rows are ``waiting`` and move up
one at a time as the row ahead is delivered or dead-lettered. So one person's failing record
holds back that person's later records and nobody else's, and claiming is a plain index scan.
Scheduling lives in :mod:`gateway.core.dispatch`.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.core.destination import DEAD, DELIVERED, Delivery
from gateway.core.postgres import POSTGRESQL, dialect
from gateway.model.masking import mask_text, names_in_records
from gateway.rules.person_index import person_key

PENDING, IN_FLIGHT, WAITING = "pending", "in_flight", "waiting"
STATES = (PENDING, WAITING, IN_FLIGHT, DELIVERED, DEAD)
#: States that still owe a delivery.
UNDELIVERED = (PENDING, WAITING, IN_FLIGHT)


@dataclass(frozen=True)
class OutboxItem:
    """What the route step queues for one destination: a rendered payload and its keys."""

    destination: str
    idempotency_key: str
    ordering_key: str
    content_type: str
    payload: bytes


@dataclass(frozen=True)
class NotRouted:
    """A destination whose routes take a record set that its format cannot carry: the route step
    leaves it out instead of refusing the message, and the journal keeps why (``reason`` a fixed
    word, ``text`` for the operator)."""

    destination: str
    reason: str
    text: str


def idempotency_key(destination: str, sender: str, control_id: str, record_identity: str) -> str:
    """Stable across retries, restarts and replays of the same source message, different per
    destination, so a receiver that honours it stores each record once."""
    text = "\x1f".join((destination, sender, control_id, record_identity))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


#: Most durable first: the 12-digit citizen id is for life, the BHXH number for a working life,
#: while a BHYT card is renewed or re-issued (a new group, a new benefit level) with the same
#: BHXH number in its last ten digits. Keying on the card would make a renewed card a new person.
_ORDERING_SYSTEMS = ("CCCD", "BHXH", "BHYT", "PASSPORT", "MR")


def ordering_key(records, message) -> str:
    """Whose records these are, for per-person ordering: the most durable identifier the record
    set has, hashed so the outbox never holds it in clear. A record set without a person is
    ordered with nothing else. The journal writer replaces it with the person's id when the person
    index knows the person by another identifier (:mod:`gateway.rules.person_index`), and a person
    first seen gets this key as its id."""
    person = records.person
    identity = ""
    if person is not None:
        for system in _ORDERING_SYSTEMS:
            value = person.identifier(system)
            if value:
                identity = f"{system}:{value}" + (f"@{message.sending_facility}" if system == "MR" else "")
                break
    if not identity:
        identity = f"message:{message.sender}:{message.control_id}"
    return person_key(identity)


_INSERT = """
INSERT OR IGNORE INTO outbox (message_id, destination, idempotency_key, ordering_key, state, attempts,
                              next_attempt_at, created_at, updated_at, content_type, payload)
VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)
"""

_HAS_UNDELIVERED = """
SELECT 1 FROM outbox WHERE destination = ? AND ordering_key = ? AND state IN ('pending', 'waiting', 'in_flight')
LIMIT 1
"""


def insert_outbox_rows(conn: sqlite3.Connection, items: Iterable[tuple[int, OutboxItem]], now: float,
                       unordered: frozenset[str] = frozenset()) -> None:
    """Queue rows. A person's row is ``pending`` only when nothing of theirs is undelivered for
    that destination; otherwise it is ``waiting`` behind it and becomes pending when the row
    ahead settles. Per-person order is thus a property of the rows, and claiming is a plain
    index scan of pending rows however long one person's backlog is.

    An item whose idempotency key is queued already (a replay, another client's copy of the
    message) is the same record: it is skipped, and holds nothing back."""
    items = list(items)
    if dialect(conn) == POSTGRESQL:
        lock_persons(conn, {(i.destination, i.ordering_key) for _, i in items if i.destination not in unordered})
    queued = queued_keys(conn, [i.idempotency_key for _, i in items])
    ahead: set[tuple[str, str]] = set()
    rows = []
    for message_id, i in items:
        if i.idempotency_key in queued:
            continue
        queued.add(i.idempotency_key)
        person = (i.destination, i.ordering_key)
        if i.destination in unordered or (
                person not in ahead and conn.execute(_HAS_UNDELIVERED, person).fetchone() is None):
            state = PENDING
        else:
            state = WAITING
        ahead.add(person)
        rows.append((message_id, i.destination, i.idempotency_key, i.ordering_key, state, now, now, now,
                     i.content_type, i.payload))
    conn.executemany(_INSERT, rows)


def lock_persons(conn, persons: Iterable[tuple[str, str]]) -> None:
    """On PostgreSQL, take these (destination, person) pairs until the commit: whether a person's
    new row waits is decided from the rows ahead of it, and the node that settles the row ahead
    must see the new one to let it go, so queuing and settling one person take turns across nodes."""
    conn.lock_keys(f"person\x1f{destination}\x1f{person}" for destination, person in persons)


def queued_keys(conn: sqlite3.Connection, keys: list[str]) -> set[str]:
    """Which of ``keys`` the outbox holds already: one indexed lookup per 500 keys."""
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        found.update(key for (key,) in conn.execute(
            f"SELECT idempotency_key FROM outbox WHERE idempotency_key IN ({', '.join('?' * len(chunk))})", chunk))
    return found


#: When a row is delivered or dead, the next waiting row of the same person becomes pending.
#: Both lookups are prefixes of the ``outbox_by_person`` index.
_PROMOTE_NEXT = """
UPDATE outbox SET state = 'pending', updated_at = :now
WHERE id = (SELECT min(id) FROM outbox
            WHERE destination = :destination AND ordering_key = :person AND state = 'waiting')
  AND NOT EXISTS (SELECT 1 FROM outbox
                  WHERE destination = :destination AND ordering_key = :person AND state IN ('pending', 'in_flight'))
"""

#: Waiting rows whose person has nothing pending or in flight (an operator purged or edited
#: rows, or an older version left them): the oldest of each becomes pending.
_PROMOTE_ORPHANS = """
UPDATE outbox SET state = 'pending', updated_at = :now
WHERE id IN (SELECT min(w.id) FROM outbox AS w WHERE w.state = 'waiting'
             AND NOT EXISTS (SELECT 1 FROM outbox AS a WHERE a.destination = w.destination
                             AND a.ordering_key = w.ordering_key AND a.state IN ('pending', 'in_flight'))
             GROUP BY w.destination, w.ordering_key)
"""


#: Due pending rows, earliest due first, following the ``outbox_due`` index so the scan stops
#: after ``limit`` rows. Waiting rows are never candidates, so no per-row subquery is needed.
_DUE = """
SELECT id, message_id, idempotency_key, ordering_key, content_type, payload, attempts, created_at
FROM outbox
WHERE destination = :destination AND state = 'pending' AND next_attempt_at <= :now
ORDER BY next_attempt_at, id
LIMIT :limit
"""


#: On PostgreSQL, several nodes claim from one outbox: due pending rows, and rows in flight whose
#: node's lease ran out (it died, or lost the database), locked as they are read and skipping
#: rows another node is claiming at this moment. A person with a row in flight under a live
#: lease has nothing claimable.
_DUE_LEASED = """
SELECT id, message_id, idempotency_key, ordering_key, content_type, payload, attempts, created_at
FROM outbox AS o
WHERE destination = :destination
  AND ((state = 'pending' AND next_attempt_at <= :now) OR (state = 'in_flight' AND lease_until < :now))
  AND NOT EXISTS (SELECT 1 FROM outbox AS b WHERE b.destination = o.destination AND b.ordering_key = o.ordering_key
                  AND b.state = 'in_flight' AND b.lease_until >= :now AND b.id <> o.id)
ORDER BY next_attempt_at, id
LIMIT :limit
FOR UPDATE SKIP LOCKED
"""


def claim_due(conn: sqlite3.Connection, now: float, destination: str, limit: int,
              busy_keys: frozenset[str]) -> list[Delivery]:
    """Mark up to ``limit`` due rows in flight and return them (writer thread). At most one row
    per person, and none of a person already in flight (a dead row an operator retried can be
    pending beside that person's current row). On PostgreSQL a claimed row is leased to this
    node (``lease_owner``, ``lease_until``) for the connection's ``lease_seconds``."""
    if limit <= 0:
        return []
    leased = dialect(conn) == POSTGRESQL
    rows = conn.execute(_DUE_LEASED if leased else _DUE,
                        {"destination": destination, "now": now, "limit": limit + len(busy_keys)}).fetchall()
    claimed, seen = [], set(busy_keys)
    for r in rows:
        if r[3] not in seen and len(claimed) < limit:
            claimed.append(r)
            seen.add(r[3])
    if claimed and leased:
        conn.executemany("UPDATE outbox SET state = 'in_flight', updated_at = ?, lease_owner = ?, lease_until = ? "
                         "WHERE id = ?", [(now, conn.node, now + conn.lease_seconds, r[0]) for r in claimed])
    elif claimed:
        conn.executemany("UPDATE outbox SET state = 'in_flight', updated_at = ? WHERE id = ?",
                         [(now, r[0]) for r in claimed])
    return [Delivery(row_id=r[0], message_id=r[1], destination=destination, idempotency_key=r[2], ordering_key=r[3],
                     content_type=r[4], payload=r[5], attempts=r[6], created_at=r[7]) for r in claimed]


@dataclass(frozen=True)
class Settled:
    """How one attempt ended, as recorded: the row's new state and when it is due again."""

    row_id: int
    state: str
    label: str
    reason: str
    next_attempt_at: float | None
    created_at: float
    #: The destination's ``DeliveryResult.detail``, kept as the row's ``last_detail``.
    detail: str = ""


def record_results(conn: sqlite3.Connection, now: float, settled: list[Settled]) -> None:
    """Record how attempts ended; a row that is finished (delivered or dead) lets its person's
    next waiting row go. On PostgreSQL only a row still leased to this node is recorded: one
    whose lease ran out is another node's now, which delivers it again under the same key."""
    finished = [s.row_id for s in settled if s.state in (DELIVERED, DEAD)]
    people = conn.execute(
        f"SELECT DISTINCT destination, ordering_key FROM outbox WHERE id IN ({', '.join('?' * len(finished))})",
        finished).fetchall() if finished else []
    leased = dialect(conn) == POSTGRESQL
    if leased:
        lock_persons(conn, people)
    conn.executemany(
        """UPDATE outbox SET state = :state, attempts = attempts + 1, updated_at = :now,
                             next_attempt_at = coalesce(:next_attempt_at, next_attempt_at),
                             delivered_at = CASE WHEN :state = 'delivered' THEN :now ELSE delivered_at END,
                             last_error = CASE WHEN :state = 'delivered' THEN NULL ELSE :reason END,
                             last_result = :label, last_detail = nullif(:detail, '')""" + (
            ", lease_owner = NULL, lease_until = NULL" if leased else "")
        + " WHERE id = :row_id AND state = 'in_flight'" + (" AND lease_owner = :node" if leased else ""),
        [{"state": s.state, "now": now, "next_attempt_at": s.next_attempt_at, "reason": s.reason[:2000],
          "label": s.label, "detail": s.detail[:2000], "row_id": s.row_id} | ({"node": conn.node} if leased else {})
         for s in settled])
    if people:
        conn.executemany(_PROMOTE_NEXT, [{"now": now, "destination": d, "person": p} for d, p in people])


def recover_in_flight(conn: sqlite3.Connection, now: float) -> int:
    """Rows a crash left in flight go back to pending: delivery is at-least-once, and the
    idempotency key makes the second delivery harmless. On PostgreSQL only this node's own rows:
    another node's are its work in progress, and become claimable when their lease runs out."""
    if dialect(conn) == POSTGRESQL:
        recovered = conn.execute("UPDATE outbox SET state = 'pending', updated_at = ?, lease_owner = NULL, "
                                 "lease_until = NULL WHERE state = 'in_flight' AND lease_owner = ?",
                                 (now, conn.node)).rowcount
    else:
        recovered = conn.execute("UPDATE outbox SET state = 'pending', updated_at = ? WHERE state = 'in_flight'",
                                 (now,)).rowcount
    conn.execute(_PROMOTE_ORPHANS, {"now": now})
    return recovered


def retry_dead(conn: sqlite3.Connection, now: float, *, row_id: int | None = None,
               destination: str | None = None) -> int:
    """Send dead rows again from scratch (attempt count reset): one by id, or all of a destination."""
    if row_id is not None:
        where, params = "id = :id", {"id": row_id}
    else:
        where, params = "destination = :destination", {"destination": destination}
    return conn.execute(
        f"UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = :now, created_at = :now, "
        f"updated_at = :now WHERE state = 'dead' AND {where}", {"now": now, **params}).rowcount


def set_paused(conn: sqlite3.Connection, now: float, destination: str, paused: bool) -> None:
    conn.execute(
        "INSERT INTO destination_state (destination, paused, updated_at) VALUES (:d, :p, :now) "
        "ON CONFLICT(destination) DO UPDATE SET paused = :p, updated_at = :now",
        {"d": destination, "p": int(paused), "now": now})


def request_flush(conn: sqlite3.Connection, now: float, destination: str) -> None:
    conn.execute(
        "INSERT INTO destination_state (destination, paused, flush_requested_at, updated_at) VALUES (:d, 0, :now, :now) "
        "ON CONFLICT(destination) DO UPDATE SET flush_requested_at = :now, updated_at = :now",
        {"d": destination, "now": now})


def purge_delivered(conn: sqlite3.Connection, before: float, limit: int) -> int:
    """Delete up to ``limit`` rows delivered before ``before``, and blank the journal bodies of
    messages that have nothing left to deliver. Small batches keep each commit short."""
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM outbox WHERE state = 'delivered' AND delivered_at < ? ORDER BY id LIMIT ?", (before, limit))]
    if not ids:
        return 0
    marks = ", ".join("?" * len(ids))
    message_ids = [r[0] for r in conn.execute(f"SELECT DISTINCT message_id FROM outbox WHERE id IN ({marks})", ids)]
    conn.execute(f"DELETE FROM outbox WHERE id IN ({marks})", ids)
    conn.execute(
        f"UPDATE messages SET raw = X'', records = NULL WHERE id IN ({', '.join('?' * len(message_ids))}) "
        f"AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.message_id = messages.id)", message_ids)
    return len(ids)


#: Messages past a retention that still hold their bytes and have no outbox row left. Through the
#: ``messages_with_body`` partial index (its condition is the first term), so each pass reads only
#: such messages, never the journal's long tail of bodies blanked already.
_EXPIRED_BODIES = """
SELECT id, status FROM messages INDEXED BY messages_with_body
WHERE length(raw) > 0 AND received_at < :before AND status IN ({statuses})
  AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.message_id = messages.id)
ORDER BY received_at LIMIT :limit
"""


def prune_bodies(conn: sqlite3.Connection, before: float, statuses: Iterable[str], limit: int) -> dict[str, int]:
    """Blank the bytes and records of up to ``limit`` messages of these journal statuses received
    before ``before`` with nothing left to deliver: an AE/AR message (nothing ever queued), an
    inbound ACK, an accepted message routed to no destination. The row stays, with its errors
    and content digest, so operators still see it and a resend is still recognised. Returns how
    many of each status were blanked."""
    names = list(statuses)
    params = {f"s{n}": name for n, name in enumerate(names)} | {"before": before, "limit": limit}
    found = conn.execute(_EXPIRED_BODIES.format(statuses=", ".join(f":s{n}" for n in range(len(names)))),
                         params).fetchall()
    conn.executemany("UPDATE messages SET raw = X'', records = NULL WHERE id = ?", [(row[0],) for row in found])
    counts: dict[str, int] = {}
    for _, status in found:
        counts[status] = counts.get(status, 0) + 1
    return counts


def record_circuit(conn: sqlite3.Connection, now: float, destination: str, state: str) -> None:
    """The running gateway's circuit breaker for ``destination`` is now in ``state`` (since ``now``)."""
    conn.execute(
        "INSERT INTO destination_state (destination, paused, circuit_state, circuit_since, updated_at) "
        "VALUES (:d, 0, :state, :now, :now) ON CONFLICT (destination) DO UPDATE SET circuit_state = :state, "
        "circuit_since = :now, updated_at = :now", {"d": destination, "state": state, "now": now})


def reset_circuits(conn: sqlite3.Connection, now: float, destinations: Iterable[str]) -> None:
    """At start: these destinations' circuits are closed, and any other one recorded by an
    earlier run (a destination since disabled or removed) has no circuit any more."""
    names = list(destinations)
    others = f" AND destination NOT IN ({', '.join('?' * len(names))})" if names else ""  # () is SQLite's alone
    conn.execute("UPDATE destination_state SET circuit_state = NULL, circuit_since = NULL, updated_at = ? "
                 "WHERE circuit_state IS NOT NULL" + others, [now, *names])
    for name in names:
        record_circuit(conn, now, name, "closed")


def destination_status(conn: sqlite3.Connection, now: float) -> dict[str, dict]:
    """Per destination: rows by state, age of the oldest pending row, paused flag, the circuit
    state the running gateway last recorded (and since when), and the last flush request
    (read-only). ``flush_requested_at`` is None until ``outbox flush`` asks once; the delivery
    service runs a batch when it sees a newer value than the one it handled."""
    status: dict[str, dict] = {}

    def entry_for(destination: str) -> dict:
        return status.setdefault(destination, {s: 0 for s in STATES} | {
            "oldest_pending_age_seconds": 0.0, "paused": False, "circuit_state": None, "circuit_since": None,
            "flush_requested_at": None})

    for destination, state, count, oldest in conn.execute(
            "SELECT destination, state, count(*), min(created_at) FROM outbox GROUP BY destination, state"):
        entry = entry_for(destination)
        entry[state] = count
        if state in UNDELIVERED and oldest is not None:
            entry["oldest_pending_age_seconds"] = max(entry["oldest_pending_age_seconds"], now - oldest)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(destination_state)")}
    # A journal the gateway has not migrated yet (the CLI of a newer version) has no circuit columns.
    circuit = "circuit_state, circuit_since" if "circuit_state" in columns else "NULL, NULL"
    for destination, paused, circuit_state, circuit_since, flush_requested_at in conn.execute(
            f"SELECT destination, paused, {circuit}, flush_requested_at FROM destination_state"):
        entry = entry_for(destination)
        entry.update(paused=bool(paused), circuit_state=circuit_state, circuit_since=circuit_since,
                     flush_requested_at=flush_requested_at)
    return status


@dataclass(frozen=True)
class BatchRow:
    """One pending row a batch file will carry, with the sender (``APP|FACILITY``) of its message."""

    row_id: int
    message_id: int
    idempotency_key: str
    content_type: str
    payload: bytes
    created_at: float
    sender: str


#: A batch destination's pending rows whose message was received before the period's end. The
#: cut is on ``messages.received_at`` (the transports' injected clock, the moment the gateway
#: took the record), so a recollection after a crash picks the same rows however late it runs.
_BATCH_ROWS = """
SELECT o.id, o.message_id, o.idempotency_key, o.content_type, o.payload, o.created_at, m.sender
FROM outbox AS o JOIN messages AS m ON m.id = o.message_id
WHERE o.destination = :destination AND o.state IN ('pending', 'waiting') AND m.received_at < :before
ORDER BY o.id
"""


def pending_for_batch(conn: sqlite3.Connection, destination: str, before: float) -> list[BatchRow]:
    """The rows of one batch file, in id order (writer thread, so the read is consistent with
    the marks that follow it)."""
    return [BatchRow(*row) for row in conn.execute(_BATCH_ROWS, {"destination": destination, "before": before})]


def mark_batch_delivered(conn: sqlite3.Connection, now: float, row_ids: list[int], label: str) -> int:
    """The sink accepted the file: exactly its rows become delivered, in one transaction."""
    return conn.executemany(
        """UPDATE outbox SET state = 'delivered', attempts = attempts + 1, updated_at = :now, delivered_at = :now,
                             last_error = NULL, last_result = :label
           WHERE id = :row_id AND state IN ('pending', 'waiting')""",
        [{"now": now, "label": label, "row_id": row_id} for row_id in row_ids]).rowcount


def record_batch_failure(conn: sqlite3.Connection, now: float, row_ids: list[int], label: str, reason: str) -> None:
    """The sink refused the file: its rows stay pending (a later batch carries them) and say why."""
    conn.executemany(
        """UPDATE outbox SET attempts = attempts + 1, updated_at = :now, last_error = :reason, last_result = :label
           WHERE id = :row_id AND state IN ('pending', 'waiting')""",
        [{"now": now, "label": label, "reason": reason[:2000], "row_id": row_id} for row_id in row_ids])


# --- Operator queries, shared by the CLI and the admin API -------------------------------------
# Read helpers take any connection (the CLI's own, or a read connection of the running gateway);
# the one write helper runs inside the caller's transaction, like every state change above.

#: What an operator sees of a row. The payload is left out (it holds patient data) unless one
#: row is asked for with it.
ROW_COLUMNS = ("id", "message_id", "destination", "state", "attempts", "next_attempt_at", "last_result",
               "last_error", "last_detail", "created_at", "updated_at", "delivered_at", "content_type",
               "idempotency_key")


def list_rows(conn: sqlite3.Connection, *, destination: str | None = None, state: str | None = None,
              limit: int = 50) -> list[dict]:
    """Rows oldest first (queue order), optionally of one destination and one state, never with
    their payload, and with names and identifiers in ``last_error`` masked. The (destination,
    state, ...) index answers the usual "dead rows of D"."""
    where, params = [], {"limit": limit}
    if destination is not None:
        where.append("destination = :destination")
        params["destination"] = destination
    if state is not None:
        where.append("state = :state")
        params["state"] = state
    sql = f"SELECT {', '.join(ROW_COLUMNS)} FROM outbox"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id LIMIT :limit"
    return _masked(conn, [dict(zip(ROW_COLUMNS, row)) for row in conn.execute(sql, params)])


def rows_of_message(conn: sqlite3.Connection, message_id: int) -> list[dict]:
    """The rows one message queued, by destination, masked as :func:`list_rows`'s are."""
    return _masked(conn, [dict(zip(ROW_COLUMNS, row)) for row in conn.execute(
        f"SELECT {', '.join(ROW_COLUMNS)} FROM outbox WHERE message_id = ? ORDER BY destination, id", (message_id,))])


def get_row(conn: sqlite3.Connection, row_id: int, *, with_payload: bool = False) -> dict | None:
    """One row by id, its ``last_error`` masked as in :func:`list_rows`; ``with_payload`` adds the
    payload bytes (for ``outbox show --payload``, the one view of a row in clear)."""
    columns = ROW_COLUMNS + (("payload",) if with_payload else ())
    found = conn.execute(f"SELECT {', '.join(columns)} FROM outbox WHERE id = :id", {"id": row_id}).fetchone()
    return _masked(conn, [dict(zip(columns, found))])[0] if found else None


def _masked(conn: sqlite3.Connection, rows: list[dict]) -> list[dict]:
    """``last_error`` as operators see it. It is a destination's answer (a store's error body, an
    MLLP ERR text) as the destination reported it, and may quote the patient. Only the row's own
    records tell which words are the patient's name, so the name is masked here, where the row
    is shown, at no cost to delivery; identifier shapes are masked again with it."""
    names = patient_names(conn, [r["message_id"] for r in rows if r["last_error"]])
    for r in rows:
        if r["last_error"]:
            r["last_error"] = mask_text(r["last_error"], names.get(r["message_id"], ()))
    return rows


def patient_names(conn: sqlite3.Connection, message_ids: Iterable[int]) -> dict[int, tuple[str, ...]]:
    """The names each message's records carry (see :func:`names_in_records`), for masking texts
    about those messages. A message whose records were purged or never made has none."""
    ids = sorted(set(message_ids))
    found: dict[int, tuple[str, ...]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for message_id, records in conn.execute(
                f"SELECT id, records FROM messages WHERE records IS NOT NULL AND id IN ({', '.join('?' * len(chunk))})",
                chunk):
            found[message_id] = names_in_records(json.loads(records))
    return found


def _has_not_routed(conn: sqlite3.Connection) -> bool:
    """A journal the gateway has not migrated yet (the CLI of a newer version) has no such table."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'not_routed'").fetchone() is not None


def not_routed_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Per destination, the record sets it wanted but whose format it cannot carry. A scan of the
    ``not_routed_by_destination`` index, so operator views ask it, not the delivery refresh."""
    if not _has_not_routed(conn):
        return {}
    return dict(conn.execute("SELECT destination, count(*) FROM not_routed GROUP BY destination").fetchall())


def not_routed_of(conn: sqlite3.Connection, message_id: int) -> list[tuple[str, str, str]]:
    """``(destination, reason, text)`` of what one message's record sets were not routed to."""
    if not _has_not_routed(conn):
        return []
    return conn.execute("SELECT destination, reason, text FROM not_routed WHERE message_id = :id ORDER BY id",
                        {"id": message_id}).fetchall()


def destination_names(conn: sqlite3.Connection) -> set[str]:
    """Destinations the journal knows: those with rows, and those an operator paused or flushed.
    A destination removed from the config still has rows worth inspecting and retrying."""
    return {name for (name,) in conn.execute(
        "SELECT DISTINCT destination FROM outbox UNION SELECT destination FROM destination_state")}


def retry_dead_row(conn: sqlite3.Connection, now: float, row_id: int) -> str | None:
    """Make one dead row pending again. Returns the state the row was in (only ``dead`` rows
    change), or None when there is no such row, so the caller can say which of the two it was."""
    found = conn.execute("SELECT state FROM outbox WHERE id = :id", {"id": row_id}).fetchone()
    if found is None:
        return None
    if found[0] == DEAD:
        retry_dead(conn, now, row_id=row_id)
    return found[0]


def with_idle_destinations(status: dict[str, dict], names: Iterable[str]) -> dict[str, dict]:
    """``destination_status`` plus an all-zero entry for each named destination that has no rows
    yet, so a newly configured destination is listed before its first message; sorted by name."""
    idle = {s: 0 for s in STATES} | {"oldest_pending_age_seconds": 0.0, "paused": False, "circuit_state": None,
                                     "circuit_since": None, "flush_requested_at": None}
    return {name: idle | status.get(name, {}) for name in sorted(set(status) | set(names))}
