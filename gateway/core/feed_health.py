"""Feed health: what each facility sent per day and kind, what was refused and why, when it last
sent, and which facilities went silent (``hssk-gateway report feeds``, and the gauge the
"facility silent" alert watches).

A message's facility is the part of its sender after ``|`` (MSH-4 of an HL7 message, MACSKCB of
an XML 130 file). A facility is silent when its newest message is older than its threshold
(``feeds.silent_after_hours``, or its own in ``feeds.silent_after_hours_by_facility``). The
facilities the report knows are those that sent in the journal and those the configuration names
(clients' facilities, thresholds): a configured facility that never sent is silent too.

Days are local calendar days (the operators' own), counted from ``received_at``.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.core.metrics import OTHER, Metrics
from gateway.model.masking import mask_text

log = Logger(namespace="hssk.feeds")

_DAILY = """
SELECT substr(sender, instr(sender, '|') + 1) AS facility, date(received_at, 'unixepoch', 'localtime') AS day,
       coalesce(nullif(message_type, ''), '-') AS kind, status, count(*)
FROM messages
WHERE received_at >= :since AND received_at < :until AND replay_of IS NULL AND instr(sender, '|') > 0
GROUP BY facility, day, kind, status
"""

_REFUSALS = """
SELECT substr(sender, instr(sender, '|') + 1) AS facility, ack_code, errors
FROM messages
WHERE received_at >= :since AND received_at < :until AND replay_of IS NULL AND status IN ('error', 'rejected')
  AND instr(sender, '|') > 0
"""

_LAST = """
SELECT substr(sender, instr(sender, '|') + 1) AS facility, max(received_at)
FROM messages WHERE received_at > :after AND instr(sender, '|') > 0 GROUP BY facility
"""


@dataclass
class FacilityFeed:
    """One facility over the report's period."""

    facility: str
    last_message_at: float | None
    silent_after_seconds: float
    silent: bool
    #: (day, kind) → {"received", "accepted", "error", "rejected", "ignored"}.
    daily: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    #: (ack code, ERR code, text) → count: why messages were answered AE or AR.
    refusals: dict[tuple[str, int, str], int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "facility": self.facility, "last_message_at": self.last_message_at,
            "silent_after_seconds": self.silent_after_seconds, "silent": self.silent,
            "daily": [{"day": day, "kind": kind, **counts} for (day, kind), counts in sorted(self.daily.items())],
            "refusals": [{"ack_code": ack, "code": code, "text": text, "count": n}
                         for (ack, code, text), n in sorted(self.refusals.items(), key=lambda i: (-i[1], i[0]))],
        }


_STATUSES = ("accepted", "error", "rejected", "ignored")


def silence_thresholds(feeds) -> tuple[float, dict[str, float]]:
    """``[feeds]`` (hours) as seconds: the default, and each facility's own."""
    return feeds.silent_after_hours * 3600.0, {code: hours * 3600.0
                                               for code, hours in feeds.silent_after_hours_by_facility.items()}


def feed_report(conn: sqlite3.Connection, since: float, until: float, now: float, default_silence: float,
                silence: Mapping[str, float], configured: Iterable[str] = ()) -> list[FacilityFeed]:
    """Every facility the journal or the configuration knows, by code. Replays are left out:
    they are an operator's second attempt, not something the facility sent."""
    last = dict(conn.execute(_LAST, {"after": 0}).fetchall())
    codes = sorted(set(last) | set(configured) | set(silence))
    feeds: dict[str, FacilityFeed] = {}
    for code in codes:
        threshold = silence.get(code, default_silence)
        seen = last.get(code)
        feeds[code] = FacilityFeed(code, seen, threshold, seen is None or now - seen > threshold)
    window = {"since": since, "until": until}
    for code, day, kind, status, n in conn.execute(_DAILY, window):
        counts = feeds[code].daily.setdefault((day, kind), dict.fromkeys(("received", *_STATUSES), 0))
        counts["received"] += n
        counts[status] = counts.get(status, 0) + n
    for code, ack_code, errors in conn.execute(_REFUSALS, window):
        issues = json.loads(errors) if errors else []
        first = issues[0] if issues else {"code": 0, "text": "no ERR recorded"}  # the first ERR is the reason
        key = (ack_code or "-", int(first.get("code") or 0), mask_text(" ".join(first.get("text", "").split()))[:160])
        feeds[code].refusals[key] = feeds[code].refusals.get(key, 0) + 1
    return list(feeds.values())


class FacilityClock:
    """Keeps ``hssk_facility_last_message_timestamp_seconds`` for the facilities the metrics know
    (configured clients' and plugins', see :class:`gateway.core.metrics.LabelValues`), and
    ``hssk_facility_silence_threshold_seconds`` beside it for the alert. Reads only messages newer
    than the last it saw (the ``received_at`` index), in the thread pool."""

    def __init__(self, store, reactor, metrics: Metrics, default_silence: float, silence: Mapping[str, float]) -> None:
        self._store = store
        self._reactor = reactor
        self._metrics = metrics
        self._after = 0.0
        for code in metrics.labels.facilities | set(silence):
            if metrics.labels.facility(code) != OTHER:
                metrics.facility_silence_threshold.labels(facility=code).set(silence.get(code, default_silence))

    def refresh(self) -> Deferred:
        return self._store.read_in_thread(self._reactor, self._read).addCallbacks(
            self._update, lambda f: log.failure("reading the facilities' last messages failed", f))

    def _read(self, conn: sqlite3.Connection) -> list[tuple[str, float]]:
        return conn.execute(_LAST, {"after": self._after}).fetchall()

    def _update(self, rows: list[tuple[str, float]]) -> None:
        for code, received_at in rows:
            self._after = max(self._after, received_at)
            if self._metrics.labels.facility(code) != OTHER:
                self._metrics.facility_last_message.labels(facility=code).set(received_at)
