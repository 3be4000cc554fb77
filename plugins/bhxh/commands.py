"""The BHXH plugin's commands: ``hssk-gateway bhxh reconcile`` (the cross-check of
:mod:`plugins.bhxh.reconcile`, as a table or CSV) and ``hssk-gateway bhxh password-hash`` (what
an account's ``password_sha256`` holds)."""
from __future__ import annotations

import argparse
import csv
import getpass
import sys
from datetime import date

from gateway.plugin import Command, CommandContext, CommandError
from plugins.bhxh.intake import password_sha256
from plugins.bhxh.reconcile import SIDES, Report, reconcile, settings_from

NAME = "bhxh"


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day like 2026-12-01") from None


def _reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="first", type=_day, required=True, help="first day (Vietnam time), YYYY-MM-DD")
    parser.add_argument("--to", dest="last", type=_day, required=True, help="last day, included")
    parser.add_argument("--facility", action="append", default=[], help="only this facility (MA_CSKCB); repeatable")
    parser.add_argument("--csv", action="store_true", help="CSV on stdout instead of a table")
    parser.add_argument("--missing", action="store_true",
                        help="list the episodes missing on either side instead of the counts")


def run_reconcile(args: argparse.Namespace, context: CommandContext) -> int:
    if args.last < args.first:
        raise CommandError(f"--to {args.last} is before --from {args.first}")
    settings = settings_from(context.config, context.config.plugin_settings(NAME).get("reconcile", {}),
                             f"plugins.{NAME}.reconcile")
    report = context.journal().read(lambda conn: reconcile(conn, settings.roles, args.first, args.last,
                                                           args.facility))
    rows = _missing_rows(report) if args.missing else _count_rows(report)
    if args.csv:
        csv.writer(sys.stdout, lineterminator="\n").writerows(rows)
        return 0
    print(f"record stores: {', '.join(settings.roles.record_stores) or 'none'}; "
          f"BHXH: {', '.join(settings.roles.bhxh) or 'none'} ({args.first} to {args.last}, Vietnam time)")
    widths = [max(len(str(row[n])) for row in rows) for n in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _count_rows(report: Report) -> list[list]:
    rows: list[list] = [["facility", "day", *SIDES]]
    totals = dict.fromkeys(SIDES, 0)
    for (facility, day), counter in report.counts().items():
        rows.append([facility, day.isoformat(), *(counter[side] for side in SIDES)])
        for side in SIDES:
            totals[side] += counter[side]
    rows.append(["total", "", *totals.values()])
    return rows


def _missing_rows(report: Report) -> list[list]:
    rows: list[list] = [["facility", "day", "ma_lk", "missing", "bhxh_state", "bhxh_error"]]
    for e in sorted(report.missing(), key=lambda e: (e.facility, e.day, e.ma_lk)):
        state = "refused" if e.bhxh_refused else "pending" if e.bhxh_submitted else "not submitted"
        rows.append([e.facility, e.day.isoformat(), e.ma_lk, "bhxh" if e.missing_at_bhxh else "store",
                     "accepted" if e.bhxh_accepted else state, e.bhxh_error])
    return rows


def run_password_hash(args: argparse.Namespace, context: CommandContext) -> int:
    print(password_sha256(getpass.getpass("the account's password: ")))
    return 0


COMMANDS = [
    Command("reconcile", "count per facility and day the episodes at the record store and at BHXH, and list the "
            "ones missing on either side", run_reconcile, arguments=_reconcile_arguments),
    Command("password-hash", "print the password_sha256 of a portal account's password (read without echo)",
            run_password_hash),
]
