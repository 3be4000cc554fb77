"""Batch schedules: ``daily HH:MM`` or ``weekly DAY HH:MM`` in a named time zone.

The Ministry asks provinces with several vendors to synchronise weekly with the national
center; a batch destination collects the records of one period and sends them as one file at
the period's end.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class Schedule:
    """A recurring instant. ``weekday`` is None for a daily schedule (0 = Monday otherwise)."""

    hour: int
    minute: int
    weekday: int | None
    zone: ZoneInfo

    def next_after(self, seconds: float) -> float:
        """The first scheduled instant strictly after ``seconds`` (a Unix time)."""
        now = datetime.fromtimestamp(seconds, self.zone)
        candidate = now.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        if self.weekday is not None:
            candidate += timedelta(days=(self.weekday - candidate.weekday()) % 7)
        step = timedelta(days=1 if self.weekday is None else 7)
        while candidate.timestamp() <= seconds:
            candidate += step
        return candidate.timestamp()

    def previous_at_or_before(self, seconds: float) -> float:
        """The latest scheduled instant at or before ``seconds``: the start of the current period."""
        step = 86400 if self.weekday is None else 7 * 86400
        start = self.next_after(seconds - step - 1)
        while self.next_after(start) <= seconds:
            start = self.next_after(start)
        return start

    def period_label(self, end: float) -> str:
        """A name for the period ending at ``end``: ``2025-03-15`` daily, ``2025-W11`` weekly."""
        last = datetime.fromtimestamp(end - 1, self.zone)
        if self.weekday is None:
            return last.strftime("%Y-%m-%d")
        year, week, _ = last.isocalendar()
        return f"{year}-W{week:02d}"


def parse_schedule(text: str, timezone: str = "Asia/Ho_Chi_Minh") -> Schedule:
    """
    >>> s = parse_schedule("weekly MON 02:00")
    >>> (s.weekday, s.hour, s.minute)
    (0, 2, 0)
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {timezone!r}") from None
    parts = text.split()
    if len(parts) == 2 and parts[0].lower() == "daily":
        weekday, clock = None, parts[1]
    elif len(parts) == 3 and parts[0].lower() == "weekly" and parts[1].upper()[:3] in DAYS:
        weekday, clock = DAYS.index(parts[1].upper()[:3]), parts[2]
    else:
        raise ScheduleError(f"must be 'daily HH:MM' or 'weekly DAY HH:MM' (DAY one of {', '.join(DAYS)}), got {text!r}")
    try:
        hour, minute = (int(p) for p in clock.split(":"))
    except ValueError:
        raise ScheduleError(f"time {clock!r} must be HH:MM") from None
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ScheduleError(f"time {clock!r} is not a time of day")
    return Schedule(hour, minute, weekday, zone)
