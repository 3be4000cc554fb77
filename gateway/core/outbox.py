"""The outbox table: what is queued for which destination, and every state change it goes
through, as plain SQL run on the journal writer thread.

Rows are written in the same transaction as their journal row (an AA always implies queued
work) and change state only on the writer thread, so SQLite has one writer. Claiming takes the
oldest undelivered row of each person only: one person's failing record holds back that
person's later records and nobody else's. Scheduling lives in :mod:`gateway.core.dispatch`.
"""
from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.destinations import DEAD, DELIVERED, Delivery

PENDING, IN_FLIGHT = "pending", "in_flight"
STATES = (PENDING, IN_FLIGHT, DELIVERED, DEAD)


@dataclass(frozen=True)
class OutboxItem:
    """What the route step queues for one destination: a rendered payload and its keys."""

    destination: str
    idempotency_key: str
    ordering_key: str
    content_type: str
    payload: bytes


def idempotency_key(destination: str, sender: str, control_id: str, record_identity: str) -> str:
    """Stable across retries, restarts and replays of the same source message, different per
    destination, so a receiver that honours it stores each record once."""
    text = "\x1f".join((destination, sender, control_id, record_identity))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


_ORDERING_SYSTEMS = ("CCCD", "BHYT", "BHXH", "PASSPORT", "MR")


def ordering_key(records, message) -> str:
    """Whose records these are, for per-person ordering: the strongest identifier the record
    set has, hashed so the outbox never holds it in clear. A record set without a person is
    ordered with nothing else."""
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
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:24]


_INSERT = """
INSERT OR IGNORE INTO outbox (message_id, destination, idempotency_key, ordering_key, state, attempts,
                              next_attempt_at, created_at, updated_at, content_type, payload)
VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?)
"""


def insert_outbox_rows(conn: sqlite3.Connection, items: Iterable[tuple[int, OutboxItem]], now: float) -> None:
    conn.executemany(_INSERT, [
        (message_id, i.destination, i.idempotency_key, i.ordering_key, now, now, now, i.content_type, i.payload)
        for message_id, i in items])


#: Due rows that are the oldest undelivered row of their person for this destination.
_DUE = """
SELECT id, message_id, idempotency_key, ordering_key, content_type, payload, attempts, created_at
FROM outbox AS o
WHERE o.destination = :destination AND o.state = 'pending' AND o.next_attempt_at <= :now
  AND NOT EXISTS (
    SELECT 1 FROM outbox AS earlier
    WHERE earlier.destination = o.destination AND earlier.ordering_key = o.ordering_key
      AND earlier.state IN ('pending', 'in_flight') AND earlier.id < o.id)
ORDER BY o.id
LIMIT :limit
"""


def claim_due(conn: sqlite3.Connection, now: float, destination: str, limit: int,
              busy_keys: frozenset[str]) -> list[Delivery]:
    """Mark up to ``limit`` due rows in flight and return them (writer thread)."""
    rows = conn.execute(_DUE, {"destination": destination, "now": now, "limit": limit + len(busy_keys)}).fetchall()
    claimed = [r for r in rows if r[3] not in busy_keys][:limit]
    if claimed:
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


def record_results(conn: sqlite3.Connection, now: float, settled: list[Settled]) -> None:
    conn.executemany(
        """UPDATE outbox SET state = :state, attempts = attempts + 1, updated_at = :now,
                             next_attempt_at = coalesce(:next_attempt_at, next_attempt_at),
                             delivered_at = CASE WHEN :state = 'delivered' THEN :now ELSE delivered_at END,
                             last_error = CASE WHEN :state = 'delivered' THEN NULL ELSE :reason END,
                             last_result = :label
           WHERE id = :row_id AND state = 'in_flight'""",
        [{"state": s.state, "now": now, "next_attempt_at": s.next_attempt_at, "reason": s.reason[:2000],
          "label": s.label, "row_id": s.row_id} for s in settled])


def recover_in_flight(conn: sqlite3.Connection, now: float) -> int:
    """Rows a crash left in flight go back to pending: delivery is at-least-once, and the
    idempotency key makes the second delivery harmless."""
    return conn.execute("UPDATE outbox SET state = 'pending', updated_at = ? WHERE state = 'in_flight'",
                        (now,)).rowcount


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


def destination_status(conn: sqlite3.Connection, now: float) -> dict[str, dict]:
    """Per destination: rows by state, age of the oldest pending row, paused flag (read-only)."""
    status: dict[str, dict] = {}
    for destination, state, count, oldest in conn.execute(
            "SELECT destination, state, count(*), min(created_at) FROM outbox GROUP BY destination, state"):
        entry = status.setdefault(destination, {s: 0 for s in STATES} | {"oldest_pending_age_seconds": 0.0,
                                                                         "paused": False})
        entry[state] = count
        if state in (PENDING, IN_FLIGHT) and oldest is not None:
            entry["oldest_pending_age_seconds"] = max(entry["oldest_pending_age_seconds"], now - oldest)
    for destination, paused in conn.execute("SELECT destination, paused FROM destination_state"):
        entry = status.setdefault(destination, {s: 0 for s in STATES} | {"oldest_pending_age_seconds": 0.0,
                                                                         "paused": False})
        entry["paused"] = bool(paused)
    return status
