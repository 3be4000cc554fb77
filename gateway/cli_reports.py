"""``hssk-gateway report …``: reports for the provincial health department, read from the journal.

Each report is a function of its own here, registered by :func:`add_report_commands`.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from gateway.core.feed_health import FacilityFeed, feed_report, silence_thresholds


def add_report_commands(sub, common: argparse.ArgumentParser) -> None:
    report = sub.add_parser("report", help="reports read from the journal").add_subparsers(dest="report",
                                                                                          required=True)
    feeds = report.add_parser("feeds", parents=[common],
                              help="per facility: messages per day by kind, refusals and why, the last message, "
                                   "facilities gone silent")
    feeds.add_argument("--from", dest="start", type=_day, metavar="DATE",
                       help="first local day, YYYY-MM-DD (default: 6 days before --to)")
    feeds.add_argument("--to", dest="end", type=_day, metavar="DATE", help="last local day, inclusive (default: today)")
    out = feeds.add_mutually_exclusive_group()
    out.add_argument("--csv", metavar="FILE", help="write the daily counts as CSV (- for stdout)")
    out.add_argument("--png", metavar="FILE", help="draw messages per day per facility as a PNG chart")
    out.add_argument("--json", action="store_true")
    feeds.set_defaults(func=cmd_report_feeds)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _start_of(day: date) -> float:
    return time.mktime(day.timetuple())


def cmd_report_feeds(args: argparse.Namespace) -> int:
    from gateway.cli import OperatorError, _config_from, _require_journal
    from gateway.core.store import Store

    config = _config_from(args)
    _require_journal(config)
    end = args.end or date.today()
    start = args.start or end - timedelta(days=6)
    if start > end:
        raise OperatorError(f"--from {start} is after --to {end}")
    default, by_facility = silence_thresholds(config.feeds)
    conn = Store(config.database_path, config.store.synchronous).connect()
    try:
        feeds = feed_report(conn, _start_of(start), _start_of(end + timedelta(days=1)), time.time(), default,
                            by_facility, (code for client in config.clients for code in client.facilities))
    finally:
        conn.close()
    if args.json:
        print(json.dumps({"from": start.isoformat(), "to": end.isoformat(), "facilities": [f.to_dict() for f in feeds]},
                         ensure_ascii=False, indent=2))
    elif args.csv:
        _write_csv(feeds, args.csv)
    elif args.png:
        _draw(feeds, start, end, Path(args.png))
        print(f"wrote {args.png}: messages per day per facility, {start} to {end}")
    else:
        _print(feeds, start, end)
    return 0


_COLUMNS = ("facility", "day", "kind", "received", "accepted", "error", "rejected", "ignored", "last_message_at",
            "silent")


def _write_csv(feeds: list[FacilityFeed], target: str) -> None:
    """One row per facility, day and kind; a facility with nothing in the period has one row
    without day and kind, so a silent one is in the file too."""
    out = sys.stdout if target == "-" else open(target, "w", newline="", encoding="utf-8")
    try:
        writer = csv.writer(out)
        writer.writerow(_COLUMNS)
        for feed in feeds:
            last = _iso(feed.last_message_at)
            rows = sorted(feed.daily.items()) or [(("", ""), dict.fromkeys(_COLUMNS[3:8], 0))]
            for (day, kind), counts in rows:
                writer.writerow([feed.facility, day, kind, *(counts[c] for c in _COLUMNS[3:8]), last,
                                 "yes" if feed.silent else "no"])
    finally:
        if out is not sys.stdout:
            out.close()


def _iso(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds)) if seconds else ""


def _print(feeds: list[FacilityFeed], start: date, end: date) -> None:
    print(f"feeds from {start} to {end}")
    if not feeds:
        print("no facility has sent anything, and none is configured")
    for feed in feeds:
        silent = f"  SILENT (nothing for more than {feed.silent_after_seconds / 3600:g} h)" if feed.silent else ""
        print(f"\nfacility {feed.facility}: last message {_iso(feed.last_message_at) or 'never'}{silent}")
        for (day, kind), counts in sorted(feed.daily.items()):
            print(f"  {day}  {kind:18}  {counts['received']:>6} received  {counts['accepted']:>6} AA  "
                  f"{counts['error']:>5} AE  {counts['rejected']:>5} AR")
        for (ack, code, text), n in sorted(feed.refusals.items(), key=lambda i: -i[1]):
            print(f"  refused {n:>5} x {ack} {code}: {text}")


def _draw(feeds: list[FacilityFeed], start: date, end: date, path: Path) -> None:
    """Lines of messages received per day, one per facility; a silent facility's name is marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    figure, axes = pyplot.subplots(figsize=(10, 5), dpi=100)
    try:
        for feed in feeds:
            per_day: dict[str, int] = {}
            for (day, _), counts in feed.daily.items():
                per_day[day] = per_day.get(day, 0) + counts["received"]
            label = feed.facility + (" (silent)" if feed.silent else "")
            axes.plot(days, [per_day.get(d.isoformat(), 0) for d in days], marker="o", label=label)
        axes.set_title(f"Messages received per day, {start} to {end}")
        axes.set_ylabel("messages")
        if feeds:
            axes.legend(loc="upper left", fontsize="small")
        figure.autofmt_xdate()
        figure.savefig(path, format="png")
    finally:
        pyplot.close(figure)
