"""The cross-check of what reached the health record store against what reached BHXH, per facility
and day, from the journal and outbox the gateway keeps anyway.

An episode is an XML 130 claim's HOSO, named by its MA_LK (episode key) within its facility
(MA_CSKCB), and belongs to the Vietnam-time day the gateway first accepted it. Destinations play
roles given in ``[plugins.bhxh.reconcile]``: ``record_stores`` (the EHR store) and ``bhxh`` (the
portal; by default every destination of kind ``bhxh``). For each episode the outbox says:

- ``store``: delivered to a record store;
- ``bhxh_submitted``: handed to a BHXH destination at least once (delivered, refused or retrying);
- ``bhxh_accepted``: delivered there (the portal answered 200);
- ``bhxh_refused``: given up on there (dead: the portal refused it), and not accepted since.

An episode at the store and not accepted by BHXH is ``missing_at_bhxh``; one accepted by BHXH
and not at the store ``missing_at_store``. Each outbox row is found by its idempotency key
(destination, the file's sender and control id, MA_LK), as the pipeline made it, so a file sent
again, a replay or a correction (a later file with the same MA_LK) counts once per episode.
"""
from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from gateway.plugin import VIETNAM_TIME, ConfigError, GatewayConfig, GaugeValue, idempotency_key

#: Counted per facility and day, in this order (the CSV's columns, the gauge's ``side`` values).
SIDES = ("received", "store", "bhxh_submitted", "bhxh_accepted", "bhxh_refused", "missing_at_bhxh",
         "missing_at_store")
#: The sides that are gaps (the gap gauge's ``side`` values).
GAPS = ("missing_at_bhxh", "missing_at_store")
BHXH_KIND = "bhxh"

_EPISODES = """
SELECT m.id, m.received_at, m.sender, m.control_id,
       json_extract(r.value, '$.encounter.ma_lk') AS ma_lk,
       json_extract(r.value, '$.encounter.facility') AS facility
  FROM messages AS m, json_each(m.records) AS r
 WHERE m.status = 'accepted' AND m.message_type = 'XML130'
   AND m.received_at >= :start AND m.received_at < :end
   AND json_valid(m.records) AND json_type(m.records) = 'array'
 ORDER BY m.id
"""
_ROWS = "SELECT idempotency_key, state, attempts, last_error FROM outbox WHERE idempotency_key IN ({keys})"
#: Keys asked per query: well under SQLite's limit of bound parameters.
_CHUNK = 500


@dataclass(frozen=True)
class Roles:
    """Which destinations are the record store and which are BHXH."""

    record_stores: tuple[str, ...]
    bhxh: tuple[str, ...]


@dataclass(frozen=True)
class ReconcileSettings:
    """``[plugins.bhxh.reconcile]``: the roles, and for the gauges the days looked back
    (``window_days``), the hours an episode is given to reach both sides before it counts as a
    gap (``settle_hours``) and the gap that raises the alert (``gap_alert_threshold``)."""

    roles: Roles
    window_days: int = 7
    settle_hours: float = 24.0
    gap_alert_threshold: int = 0


@dataclass
class Episode:
    facility: str
    ma_lk: str
    day: date
    store: bool = False
    bhxh_submitted: bool = False
    bhxh_accepted: bool = False
    bhxh_refused: bool = False
    bhxh_error: str = ""
    received_at: float = 0.0

    @property
    def missing_at_bhxh(self) -> bool:
        return self.store and not self.bhxh_accepted

    @property
    def missing_at_store(self) -> bool:
        return self.bhxh_accepted and not self.store


@dataclass
class Report:
    """The episodes of a period and their counts per (facility, day)."""

    episodes: list[Episode] = field(default_factory=list)

    def counts(self) -> dict[tuple[str, date], Counter]:
        found: dict[tuple[str, date], Counter] = {}
        for episode in self.episodes:
            counter = found.setdefault((episode.facility, episode.day), Counter())
            counter["received"] += 1
            for side in SIDES[1:]:
                counter[side] += bool(getattr(episode, side))
        return dict(sorted(found.items()))

    def missing(self) -> list[Episode]:
        return [e for e in self.episodes if e.missing_at_bhxh or e.missing_at_store]


def settings_from(config: GatewayConfig, table: Mapping[str, Any], key: str) -> ReconcileSettings:
    """The roles and gauge settings, each destination named checked against the config."""
    if not isinstance(table, Mapping):
        raise ConfigError(key, "a table: record_stores, bhxh, window_days, settle_hours, gap_alert_threshold")
    known = {d.name: d for d in config.destinations}
    unknown = sorted(set(table) - {"record_stores", "bhxh", "window_days", "settle_hours", "gap_alert_threshold"})
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", "unknown key (known: record_stores, bhxh, window_days, "
                                                 "settle_hours, gap_alert_threshold)")
    bhxh = _names(table, "bhxh", [d.name for d in config.destinations if d.kind == BHXH_KIND], known, key)
    stores = _names(table, "record_stores", [name for name in known if name not in bhxh], known, key)
    both = sorted(set(stores) & set(bhxh))
    if both:
        raise ConfigError(f"{key}.bhxh", f"{', '.join(both)} cannot be both a record store and BHXH")
    window, settle, threshold = (table.get("window_days", 7), table.get("settle_hours", 24.0),
                                 table.get("gap_alert_threshold", 0))
    for name, value, minimum in (("window_days", window, 1), ("settle_hours", settle, 0),
                                 ("gap_alert_threshold", threshold, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise ConfigError(f"{key}.{name}", f"a number, at least {minimum}")
    return ReconcileSettings(Roles(tuple(stores), tuple(bhxh)), int(window), float(settle), int(threshold))


def _names(table: Mapping[str, Any], name: str, default: list[str], known: Mapping[str, Any], key: str) -> list[str]:
    value = table.get(name, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}.{name}", "a list of destination names")
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ConfigError(f"{key}.{name}", f"{', '.join(unknown)} is no [destinations.NAME]")
    return value


def day_start(day: date) -> float:
    """The first second of a Vietnam-time day, as a timestamp."""
    return datetime(day.year, day.month, day.day, tzinfo=VIETNAM_TIME).timestamp()


def reconcile(conn: sqlite3.Connection, roles: Roles, first: date, last: date,
              facilities: Iterable[str] = ()) -> Report:
    """The episodes first accepted from ``first`` to ``last`` (Vietnam-time days, both included),
    of ``facilities`` only when some are given."""
    wanted = frozenset(facilities)
    conn.row_factory = sqlite3.Row
    rows = conn.execute(_EPISODES, {"start": day_start(first), "end": day_start(last + timedelta(days=1))}).fetchall()
    episodes: dict[tuple[str, str], Episode] = {}
    keys: list[tuple[Episode, str, str]] = []
    for row in rows:
        if not row["ma_lk"] or wanted and row["facility"] not in wanted:
            continue
        episode = episodes.get((row["facility"], row["ma_lk"]))
        if episode is None:
            day = datetime.fromtimestamp(row["received_at"], VIETNAM_TIME).date()
            episode = Episode(row["facility"] or "", row["ma_lk"], day, received_at=row["received_at"])
            episodes[(episode.facility, episode.ma_lk)] = episode
        for destination in roles.record_stores + roles.bhxh:
            role = "store" if destination in roles.record_stores else "bhxh"
            keys.append((episode, role, idempotency_key(destination, row["sender"], row["control_id"], row["ma_lk"])))
    outbox = _outbox_rows(conn, [key for _, _, key in keys])
    for episode, role, key in keys:
        if key in outbox:
            _mark(episode, role, outbox[key])
    return Report(list(episodes.values()))


def _outbox_rows(conn: sqlite3.Connection, keys: list[str]) -> dict[str, sqlite3.Row]:
    """The outbox rows of these idempotency keys (a replay's rows too, which a later message holds)."""
    found = {}
    for n in range(0, len(keys), _CHUNK):
        chunk = keys[n:n + _CHUNK]
        found.update((r["idempotency_key"], r) for r in conn.execute(_ROWS.format(keys=", ".join("?" * len(chunk))),
                                                                     chunk))
    return found


def _mark(episode: Episode, role: str, row: sqlite3.Row) -> None:
    delivered = row["state"] == "delivered"
    if role == "store":
        episode.store |= delivered
        return
    episode.bhxh_submitted |= row["attempts"] > 0 or row["state"] in ("delivered", "dead")
    if delivered:
        episode.bhxh_accepted, episode.bhxh_refused, episode.bhxh_error = True, False, ""
    elif row["state"] == "dead" and not episode.bhxh_accepted:
        episode.bhxh_refused, episode.bhxh_error = True, row["last_error"] or ""


def window(now: float, days: int) -> tuple[date, date]:
    """The last ``days`` Vietnam-time days up to the one ``now`` falls in."""
    today = datetime.fromtimestamp(now, VIETNAM_TIME).date()
    return today - timedelta(days=days - 1), today


def gauge_values(report: Report, settings: ReconcileSettings, now: float) -> list[GaugeValue]:
    """The gauges of a window's report: every side per facility, and the gaps of the episodes
    older than ``settle_hours`` (a younger one may still be on its way to either side)."""
    settled = now - settings.settle_hours * 3600
    episodes: dict[str, Counter] = {}
    gaps: dict[str, Counter] = {}
    for (facility, _), counter in report.counts().items():
        episodes.setdefault(facility, Counter()).update(counter)
    for episode in report.episodes:
        gap = gaps.setdefault(episode.facility, Counter())
        for side in GAPS:
            gap[side] += bool(getattr(episode, side)) and episode.received_at <= settled
    values = [GaugeValue("hssk_bhxh_reconcile_gap_threshold_episodes", settings.gap_alert_threshold)]
    for facility, counter in episodes.items():
        values += [GaugeValue("hssk_bhxh_reconcile_episodes", counter[side], {"facility": facility, "side": side})
                   for side in SIDES]
        values += [GaugeValue("hssk_bhxh_reconcile_gap_episodes", gaps[facility][side],
                              {"facility": facility, "side": side}) for side in GAPS]
    return values
