"""Log output: Twisted structured events, as text for people or JSON lines for collectors."""
from __future__ import annotations

import sys

from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner,
                            jsonFileLogObserver, textFileLogObserver)


def start_logging(log_format: str = "text", level: LogLevel = LogLevel.info) -> None:
    observer = jsonFileLogObserver(sys.stdout) if log_format == "json" else textFileLogObserver(sys.stdout)
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])], redirectStandardIO=False)
