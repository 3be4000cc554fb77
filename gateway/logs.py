"""Log output: Twisted structured events, as text for people or JSON lines for collectors.

The JSON form is what Loki and journald ingest: one flat object per line, ``time`` (ISO 8601,
UTC), ``level``, ``logger`` (the event's namespace, ``hssk.intake``) and ``message`` (the event
rendered as the text log would show it), plus ``traceback`` when the event carries a failure.
The event's own fields are not copied: the message already holds what was meant to be read, and
only what it renders has passed through masking.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import IO

from twisted.logger import (FileLogObserver, FilteringLogObserver, ILogObserver, LogLevel,
                            LogLevelFilterPredicate, formatEvent, globalLogBeginner, textFileLogObserver)


def json_line(event: dict) -> str:
    """One event as one line of flat JSON."""
    record = {
        "time": datetime.fromtimestamp(event.get("log_time") or 0, timezone.utc).isoformat(timespec="milliseconds"),
        "level": getattr(event.get("log_level"), "name", "info"),
        "logger": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False) + "\n"


def observer_for(log_format: str, out: IO[str], level: str = "info") -> ILogObserver:
    """Writes to ``out`` the events at ``level`` or above; below it nothing is formatted."""
    observer = FileLogObserver(out, json_line) if log_format == "json" else textFileLogObserver(out)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    return FilteringLogObserver(observer, [predicate])


def start_logging(log_format: str = "text", level: str = "info") -> None:
    globalLogBeginner.beginLoggingTo([observer_for(log_format, sys.stdout, level)], redirectStandardIO=False)
