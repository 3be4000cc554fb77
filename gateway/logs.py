"""Log output: Twisted structured events, as text for people or JSON lines for collectors.

The JSON form is what Loki and journald ingest: one flat object per line, ``time`` (ISO 8601,
UTC), ``level``, ``logger`` (the event's namespace, ``hssk.intake``) and ``message`` (the event
rendered as the text log would show it), plus ``traceback`` when the event carries a failure.
The event's own fields are not copied: the message already holds what was meant to be read, and
only what it renders has passed through masking.
"""
from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from typing import IO

from twisted.logger import (FileLogObserver, FilteringLogObserver, ILogObserver, LogLevel,
                            LogLevelFilterPredicate, formatEvent, formatEventAsClassicLogText, formatTime,
                            globalLogBeginner, timeFormatRFC3339)

#: A format that is one field and nothing else, as the per-message line's ``"{decided}"``.
_ONE_FIELD = re.compile(r"\{([A-Za-z_]\w*)\}")


def event_text(event: dict) -> str:
    """:func:`formatEvent`, without ``string.Formatter`` for a format that is a single field: at
    ``info`` the gateway logs one such line per message on the reactor, and the general
    formatter was most of that line's cost. Anything else goes to :func:`formatEvent`, which
    also says when an event cannot be formatted."""
    fmt = event.get("log_format")
    if type(fmt) is str and "log_flattened" not in event:
        match = _ONE_FIELD.fullmatch(fmt)
        if match is not None and match.group(1) in event:
            try:
                return str(event[match.group(1)])
            except Exception:  # formatEvent meets the same error and writes what it could not format
                return formatEvent(event)
    return formatEvent(event)


class ClassicText:
    """Twisted's classic text line (``2026-12-05T21:12:03+0000 [hssk.intake#info] ...``), as
    :func:`twisted.logger.textFileLogObserver` writes it, made cheaper for the line logged per
    message: the time stamp is formatted once per second, and a one-field message skips
    ``string.Formatter``. Events with a failure or a ``log_system`` go to Twisted's formatter."""

    def __init__(self) -> None:
        self._second: int | None = None
        self._stamp = ""

    def _time(self, when: float | None) -> str:
        if when is None:
            return formatTime(when, timeFormatRFC3339)
        second = int(when)
        if second != self._second:
            self._second, self._stamp = second, formatTime(second, timeFormatRFC3339)
        return self._stamp

    def __call__(self, event: dict) -> str | None:
        if "log_failure" in event or "log_system" in event:
            return formatEventAsClassicLogText(event, formatTime=self._time)
        text = event_text(event)
        if not text:
            return None
        level = event.get("log_level")
        line = (f"{self._time(event.get('log_time'))} [{event.get('log_namespace', '-')}#"
                f"{level.name if level is not None else '-'}] {text}")
        return line.replace("\n", "\n\t") + "\n"


def json_line(event: dict) -> str:
    """One event as one line of flat JSON."""
    record = {
        "time": datetime.fromtimestamp(event.get("log_time") or 0, timezone.utc).isoformat(timespec="milliseconds"),
        "level": getattr(event.get("log_level"), "name", "info"),
        "logger": event.get("log_namespace", ""),
        "message": event_text(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False) + "\n"


def observer_for(log_format: str, out: IO[str], level: str = "info") -> ILogObserver:
    """Writes to ``out`` the events at ``level`` or above; below it nothing is formatted."""
    observer = FileLogObserver(out, json_line if log_format == "json" else ClassicText())
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    return FilteringLogObserver(observer, [predicate])


def start_logging(log_format: str = "text", level: str = "info") -> None:
    globalLogBeginner.beginLoggingTo([observer_for(log_format, sys.stdout, level)], redirectStandardIO=False)
