"""``hssk-gateway report …``: reports for the provincial health department and the programme's
managers, read from the journal directly, whether or not the gateway runs.

Each report is a function of its own here, registered by :func:`add_report_commands`:
``report feeds`` (each facility's feed health, :mod:`gateway.core.feed_health`) and
``report coverage`` (per district, the residents a population list gave and those of them with a
clinical record in a period, against the programme's targets, :mod:`gateway.core.coverage`).
Days on the command line are days in Vietnam.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.core.coverage import TARGETS, DistrictCoverage, coverage, total
from gateway.core.feed_health import FacilityFeed, feed_report, silence_thresholds

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
CSV_COLUMNS = ["province", "district", "residents", "with_clinical_records", "percent",
               *(f"meets_{year}_target_{share:.0f}" for year, share in TARGETS)]


def add_report_commands(sub, common: argparse.ArgumentParser) -> None:
    report = sub.add_parser("report", help="reports read from the journal").add_subparsers(dest="report",
                                                                                          required=True)
    feeds = report.add_parser("feeds", parents=[common],
                              help="per facility: messages per day by kind, refusals and why, the last message, "
                                   "facilities gone silent")
    feeds.add_argument("--from", dest="start", type=_day, metavar="DATE",
                       help="first day in Vietnam, YYYY-MM-DD (default: 6 days before --to)")
    feeds.add_argument("--to", dest="end", type=_day, metavar="DATE", help="last day in Vietnam, inclusive (default: today)")
    out = feeds.add_mutually_exclusive_group()
    out.add_argument("--csv", metavar="FILE", help="write the daily counts as CSV (- for stdout)")
    out.add_argument("--png", metavar="FILE", help="draw messages per day per facility as a PNG chart")
    out.add_argument("--json", action="store_true")
    feeds.set_defaults(func=cmd_report_feeds)
    cover = report.add_parser("coverage", parents=[common], help="residents with a clinical record, by district, "
                                                                  "against the 80 % (2020) and 95 % (2025) targets")
    cover.add_argument("--from", dest="start", type=_day, metavar="YYYY-MM-DD",
                       help="records received from this day (Vietnam time; default: the first)")
    cover.add_argument("--to", dest="end", type=_day, metavar="YYYY-MM-DD",
                       help="records received up to and including this day (default: today)")
    written = cover.add_mutually_exclusive_group()
    written.add_argument("--csv", metavar="FILE", help="write the figures as CSV (- for stdout)")
    written.add_argument("--png", metavar="FILE", help="write a bar chart by district with the target lines")
    written.add_argument("--json", action="store_true")
    cover.set_defaults(func=cmd_report_coverage)



def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is no day like 2025-01-31") from None


def _start_of(day: dt.date) -> float:
    return dt.datetime.combine(day, dt.time(), ZONE).timestamp()


def cmd_report_feeds(args: argparse.Namespace) -> int:
    from gateway.cli import OperatorError, _config_from, _require_journal
    from gateway.core.store import open_store

    config = _config_from(args)
    _require_journal(config)
    end = args.end or dt.datetime.now(ZONE).date()
    start = args.start or end - timedelta(days=6)
    if start > end:
        raise OperatorError(f"--from {start} is after --to {end}")
    default, by_facility = silence_thresholds(config.feeds)
    conn = open_store(config).connect()
    try:
        feeds = feed_report(conn, _start_of(start), _start_of(end + timedelta(days=1)), time.time(), default,
                            by_facility, (code for client in config.clients for code in client.facilities))
    finally:
        conn.close()
    if args.json:
        print(json.dumps({"from": start.isoformat(), "to": end.isoformat(), "facilities": [f.to_dict() for f in feeds]},
                         ensure_ascii=False, indent=2))
    elif args.csv:
        _write_feeds_csv(feeds, args.csv)
    elif args.png:
        _draw(feeds, start, end, Path(args.png))
        print(f"wrote {args.png}: messages per day per facility, {start} to {end}")
    else:
        _print(feeds, start, end)
    return 0


_COLUMNS = ("facility", "day", "kind", "received", "accepted", "error", "rejected", "ignored", "last_message_at",
            "silent")


def _write_feeds_csv(feeds: list[FacilityFeed], target: str) -> None:
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


def cmd_report_coverage(args: argparse.Namespace) -> int:
    from gateway.cli import OperatorError, _config_from, _require_journal
    from gateway.core.store import open_store

    config = _config_from(args)
    _require_journal(config)
    end_day = args.end or dt.datetime.now(ZONE).date()
    if args.start is not None and args.start > end_day:
        raise OperatorError(f"--from {args.start} is after --to {end_day}")
    start = _start_of(args.start) if args.start else 0.0
    conn = open_store(config).connect()
    try:
        conn.execute("PRAGMA query_only = ON")
        districts = coverage(conn, start, _start_of(end_day + dt.timedelta(days=1)))
    finally:
        conn.close()
    period = f"{args.start or 'the first record'} to {end_day}"
    if args.csv:
        _write_coverage_csv(args.csv, districts)
    elif args.png:
        write_chart(args.png, districts, period)
        print(f"wrote {args.png}: {len(districts)} districts, {period}")
    elif args.json:
        print(json.dumps({"from": str(args.start or ""), "to": str(end_day), "targets": dict(TARGETS),
                          "districts": [_row(d) for d in districts], "total": _row(total(districts))}, indent=2))
    else:
        _print_table(districts, period)
    return 0


def _row(d: DistrictCoverage) -> dict:
    return dict(zip(CSV_COLUMNS, [d.province, d.district, d.residents, d.with_records, d.percent,
                                  *(d.meets(share) for _, share in TARGETS)]))


def _write_coverage_csv(path: str, districts: list[DistrictCoverage]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for d in districts:
        writer.writerow({k: (str(v).lower() if isinstance(v, bool) else v) for k, v in _row(d).items()})
    if path == "-":
        sys.stdout.write(out.getvalue())
    else:
        with open(path, "w", encoding="utf-8", newline="") as stream:
            stream.write(out.getvalue())


def _print_table(districts: list[DistrictCoverage], period: str) -> None:
    print(f"coverage of residents with a clinical record, {period} (targets: "
          + ", ".join(f"{share:.0f} % by {year}" for year, share in TARGETS) + ", QĐ 5349/QĐ-BYT)")
    if not districts:
        print("no residents: import a population list first (hssk-gateway bhxh import FILE)")
        return
    print(f"{'PROVINCE':<9}{'DISTRICT':<9}{'RESIDENTS':>10}{'WITH RECORDS':>14}{'PERCENT':>9}  TARGETS MET")
    for d in [*districts, total(districts)]:
        met = ", ".join(str(year) for year, share in TARGETS if d.meets(share)) or "-"
        print(f"{d.province or 'all':<9}{d.district or '':<9}{d.residents:>10,}{d.with_records:>14,}"
              f"{d.percent:>8.1f}%  {met}")


def write_chart(path: str, districts: list[DistrictCoverage], period: str) -> None:
    """A bar per district (its share of residents with a record), and a line per target."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the chart is a file
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(6.0, 0.5 * len(districts) + 2), 4.5), dpi=100)
    axes = figure.add_subplot()
    labels = [f"{d.province}-{d.district}" if d.district else d.province or "?" for d in districts]
    axes.bar(labels, [d.percent for d in districts], color="#4a7ebb")
    for (year, share), style in zip(TARGETS, ("--", "-")):
        axes.axhline(share, color="#c0392b", linestyle=style, linewidth=1.2, label=f"{share:.0f} % target ({year})")
    axes.set_ylim(0, 100)
    axes.set_ylabel("residents with a clinical record (%)")
    axes.set_xlabel("province-district")
    axes.set_title(f"HSSK coverage by district, {period}")
    axes.tick_params(axis="x", labelrotation=60)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, format="png")
