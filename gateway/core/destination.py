"""Where records go: each destination kind delivers one outbox row (or one batch file) and says
how it went. Kinds know their wire protocol; scheduling, retries and ordering live in
:mod:`gateway.core.outbox`. This is the interface the machinery delivers through; the built-in
kinds implement it in :mod:`gateway.destinations`, a plugin's kinds in the plugin.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

DELIVERED = "delivered"
RETRY = "retry"
DEAD = "dead"


@dataclass(frozen=True)
class Delivery:
    """One outbox row handed to a destination."""

    row_id: int
    message_id: int
    destination: str
    idempotency_key: str
    ordering_key: str
    content_type: str
    payload: bytes
    attempts: int
    created_at: float


@dataclass(frozen=True)
class DeliveryResult:
    """``outcome`` is delivered / retry / dead; ``label`` is a bounded metrics label such as
    ``2xx``, ``5xx``, ``timeout``, ``connection``, ``AA``; ``retry_after`` honours the remote's
    own advice in seconds. ``detail`` is what the remote answered that an operator must be able to
    find later, such as the BHXH portal's transaction number (``maGiaoDich``) kept for
    reconciliation: it is stored on the row as ``last_detail`` and shown by ``outbox show``, so
    it must hold no patient data (version note: contract 1.2, issue 18)."""

    outcome: str
    label: str
    reason: str = ""
    retry_after: float | None = None
    detail: str = ""


class Destination(Protocol):
    name: str

    def deliver(self, delivery: Delivery) -> Deferred:
        """Fires with a :class:`DeliveryResult`; must not errback (errors are results)."""

    def close(self) -> Deferred:
        """Release connections at shutdown."""
