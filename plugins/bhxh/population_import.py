"""``hssk-gateway bhxh import FILE``: a population or card list into the person index, and each
changed resident to the destinations.

A batch of :data:`BATCH_ROWS` rows at a time (:mod:`plugins.bhxh.population` reads them, in a
process of its own, :mod:`plugins.bhxh.population_reader`):

1. each row is checked and digested; a row that breaks a rule is a problem (listed by row and
   field, kept in ``bhxh_population_problems``), never imported;
2. rows whose digest equals the one recorded for their BHXH number (``bhxh_population_rows``) are
   unchanged and cost nothing more: importing the same list twice routes nothing;
3. the others (new residents, or a field or identifier that changed) go to the journal in ONE
   transaction (``PluginJournal.import_persons``, :mod:`gateway.core.population`): the person
   index in bulk (a new card for a known BHXH number joins that person's history, a CCCD
   attaches), their residence, their record sets routed to every destination that takes
   ``BHXH_POPULATION``, one journal row, and in the same transaction the rows' digests and the
   checkpoint (rows read, byte offset) in ``bhxh_population_imports``;
4. progress: a bar on a terminal, a plain line every :data:`PLAIN_EVERY` seconds otherwise.

An import killed at any point resumes, started again on the same file (by its SHA-256), after
the last batch committed: nothing before it is read again, nothing after it was committed, so no
row is lost or doubled. ``--restart`` starts at the first row (the digests still skip what is
unchanged).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field

from gateway.plugin import (Command, CommandContext, CommandError, ListedPersons, MigrationSet, PluginJournal,
                            mask_text)
from plugins.bhxh.population import (KIND, SOURCE, ListError, PopulationSettings, Problem, file_digest, file_format,
                                     person_of)
from plugins.bhxh.population_reader import CheckedBatch, checked_batches

#: Rows per batch (one transaction): large enough that a batch's queries and inserts are bulk work.
BATCH_ROWS = 5000
#: Seconds between two progress lines when stderr is not a terminal.
PLAIN_EVERY = 10.0
#: Problems a report lists (all are kept in bhxh_population_problems).
LISTED_PROBLEMS = 20
#: BHXH numbers per query for their recorded digests.
DIGEST_CHUNK = 1000
_DIGESTS = f"SELECT bhxh, digest FROM bhxh_population_rows WHERE bhxh IN ({', '.join('?' * DIGEST_CHUNK)})"


def create_tables(db) -> None:
    db.execute("CREATE TABLE bhxh_population_rows (bhxh INTEGER PRIMARY KEY, digest INTEGER NOT NULL, "
               "updated_at REAL NOT NULL)")
    db["bhxh_population_imports"].create({
        "digest": str, "file": str, "size": int, "rows": int, "offset": int, "changed": int, "problems": int,
        "started_at": float, "updated_at": float, "finished_at": float,
    }, pk="digest")
    db["bhxh_population_problems"].create({
        "id": int, "import_digest": str, "row": int, "field": str, "text": str, "created_at": float,
    }, pk="id", not_null={"import_digest", "row", "field", "text"})
    db["bhxh_population_problems"].create_index(["import_digest", "row"], index_name="bhxh_population_problems_by_row")


MIGRATIONS = MigrationSet("bhxh_population", [("0001_create_tables", create_tables)])


@dataclass
class Progress:
    """How far the import is, on stderr: a bar redrawn on a terminal, a line now and then elsewhere."""

    size: int
    tty: bool
    quiet: bool
    started: float = field(default_factory=time.monotonic)
    last: float = 0.0

    def show(self, offset: int, rows: int, changed: int, final: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not final and now - self.last < (0.25 if self.tty else PLAIN_EVERY)):
            return
        self.last = now
        rate = rows / max(now - self.started, 1e-6)
        share = 1.0 if final else min(offset / self.size, 1.0) if self.size and offset else None
        text = f"{rows:,} rows" + (f" ({share:.0%})" if share is not None else "") + \
            f", {changed:,} changed, {rate:,.0f} rows/s"
        if self.tty:
            filled = int(30 * (share or 0.0))  # an XML list is read by record, not by byte: no share known
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text}" + ("\n" if final else ""))
        else:
            sys.stderr.write(f"bhxh import: {text}\n")
        sys.stderr.flush()


@dataclass
class Tally:
    rows: int = 0
    skipped: int = 0
    changed: int = 0
    unchanged: int = 0
    queued: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0


def import_command(args: argparse.Namespace, context: CommandContext, settings: PopulationSettings) -> int:
    path = args.file
    if not os.path.isfile(path):
        raise CommandError(f"no file {path}")
    kind = file_format(path, args.format)
    digest = file_digest(path)
    journal = context.journal()
    start = None if args.restart else _checkpoint(journal, digest)
    rows, offset = (start[0], start[1]) if start else (0, 0)
    tally = Tally(skipped=rows)
    progress = Progress(os.path.getsize(path), sys.stderr.isatty(), args.quiet)
    _begin(journal, digest, os.path.basename(path), os.path.getsize(path), rows, offset)
    try:
        for batch in checked_batches(path, kind, settings, args.batch_rows, rows=rows, offset=offset):
            _one_batch(journal, digest, batch, tally)
            progress.show(batch.offset, batch.rows, tally.changed)
    except ListError as e:
        raise CommandError(f"{os.path.basename(path)}: {e}") from None
    journal.wait(journal.write, lambda conn, now: conn.execute(
        "UPDATE bhxh_population_imports SET finished_at = ?, updated_at = ? WHERE digest = ?", (now, now, digest)))
    progress.show(progress.size, tally.skipped + tally.rows, tally.changed, final=True)
    _report(args, os.path.basename(path), tally, time.monotonic() - progress.started)
    return 0


def _one_batch(journal: PluginJournal, digest: str, batch: CheckedBatch, tally: Tally) -> None:
    problems = batch.problems
    known = _digests(journal, [r.bhxh for r in batch.residents])
    changed = [r for r in batch.residents if known.get(r.bhxh) != r.digest]
    tally.rows += batch.count
    tally.unchanged += len(batch.residents) - len(changed)
    tally.changed += len(changed)
    tally.problem_count += len(problems)
    tally.problems += problems[:max(0, LISTED_PROBLEMS - len(tally.problems))]

    def record(conn, now: float) -> None:
        conn.executemany("INSERT INTO bhxh_population_rows (bhxh, digest, updated_at) VALUES (?, ?, ?) "
                         "ON CONFLICT (bhxh) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                         [(r.bhxh, r.digest, now) for r in changed])
        conn.executemany("INSERT INTO bhxh_population_problems (import_digest, row, field, text, created_at) "
                         "VALUES (?, ?, ?, ?, ?)", [(digest, p.row, p.field, p.text, now) for p in problems])
        conn.execute("UPDATE bhxh_population_imports SET rows = ?, offset = ?, changed = changed + ?, "
                     "problems = problems + ?, updated_at = ? WHERE digest = ?",
                     (batch.rows, batch.offset, len(changed), len(problems), now, digest))

    if changed:
        listed = ListedPersons(KIND, SOURCE, tuple(person_of(r.fields) for r in changed),
                               tuple(f"{r.bhxh:010d}" for r in changed), tuple(r.said for r in changed))
        imported, _ = journal.wait(journal.import_persons, listed, record)
        tally.queued += imported.queued
    else:
        journal.wait(journal.write, record)


def _digests(journal: PluginJournal, numbers: list[int]) -> dict[int, int]:
    """The digests recorded for these BHXH numbers, :data:`DIGEST_CHUNK` numbers a query (the last
    list padded with -1, no number: one statement text, prepared once)."""
    def read(conn) -> dict[int, int]:
        found = {}
        for n in range(0, len(numbers), DIGEST_CHUNK):
            chunk = numbers[n:n + DIGEST_CHUNK]
            found.update(conn.execute(_DIGESTS, chunk + [-1] * (DIGEST_CHUNK - len(chunk))).fetchall())
        return found

    return journal.read(read) if numbers else {}


def _checkpoint(journal: PluginJournal, digest: str) -> tuple[int, int] | None:
    """(rows, byte offset) an unfinished import of this file committed; None when there is none."""
    found = journal.read(lambda conn: conn.execute(
        "SELECT rows, offset FROM bhxh_population_imports WHERE digest = ? AND finished_at IS NULL",
        (digest,)).fetchone())
    return (found[0], found[1]) if found and found[0] else None


def _begin(journal: PluginJournal, digest: str, name: str, size: int, rows: int, offset: int) -> None:
    def begin(conn, now: float) -> None:
        conn.execute(
            "INSERT INTO bhxh_population_imports (digest, file, size, rows, offset, changed, problems, started_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, 0, 0, ?, ?) ON CONFLICT (digest) DO UPDATE SET file = excluded.file, "
            "rows = excluded.rows, offset = excluded.offset, finished_at = NULL, updated_at = excluded.updated_at, "
            "changed = CASE WHEN excluded.rows = 0 THEN 0 ELSE changed END, "
            "problems = CASE WHEN excluded.rows = 0 THEN 0 ELSE problems END",
            (digest, name, size, rows, offset, now, now))
        if not rows:
            conn.execute("DELETE FROM bhxh_population_problems WHERE import_digest = ?", (digest,))

    journal.wait(journal.write, begin)


def _report(args: argparse.Namespace, name: str, tally: Tally, seconds: float) -> None:
    report = {"file": name, "rows": tally.skipped + tally.rows, "resumed_after": tally.skipped,
              "changed": tally.changed, "unchanged": tally.unchanged, "queued": tally.queued,
              "problems": tally.problem_count, "seconds": round(seconds, 3),
              "listed_problems": [{"row": p.row, "field": p.field, "text": mask_text(p.text)} for p in tally.problems]}
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return
    print(f"{report['rows']:,} rows of {name}" + (f" ({tally.skipped:,} imported before, resumed after them)"
                                                  if tally.skipped else "")
          + f": {tally.changed:,} new or changed, {tally.unchanged:,} unchanged, {tally.problem_count:,} with a "
            f"problem; {tally.queued:,} outbox rows queued, in {seconds:.1f} s")
    for p in report["listed_problems"]:
        print(f"  row {p['row']}: {p['field']}: {p['text']}")
    if tally.problem_count > len(tally.problems):
        print("  … every problem is in the journal table bhxh_population_problems")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the population or card list: CSV (UTF-8, a header naming the columns) or XML")
    parser.add_argument("--format", choices=("csv", "xml"), help="the file's format (default: by its name and "
                                                                 "first byte)")
    parser.add_argument("--restart", action="store_true", help="begin at the first row, not after the last batch an "
                                                               "interrupted import of this file committed")
    parser.add_argument("--batch-rows", type=_positive, default=BATCH_ROWS, metavar="N",
                        help=f"rows per transaction (default {BATCH_ROWS}); an interrupted import resumes after the "
                             f"last whole batch")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--json", action="store_true", help="the report as JSON")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def import_command_of(settings) -> Command:
    """The command, reading the plugin's settings when it runs (after ``hssk_configure``)."""
    return Command("import", "import a population or card list (CSV or XML) into the person index, routing each new "
                             "or changed resident, resuming where an interrupted import of the same file stopped",
                   lambda args, context: import_command(args, context, settings()), arguments=_arguments)
