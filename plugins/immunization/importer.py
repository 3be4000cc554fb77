"""``hssk-gateway immunization import FILE``: an immunization list export, fed row by row.

Built on the gateway's feed (each row one input of the ``immunization_csv`` source, journaled,
decided and queued like what senders send, named by its content): so importing a file twice
queues nothing twice. The command adds what a long import needs:

- **streaming**: the file is read a line at a time, twice (once for its digest and row count,
  once to feed it), so memory does not grow with the file;
- **progress**: rows done, of how many, and rows per second on stderr (``--quiet`` for none);
- **resume**: how far the import of this file (by its SHA-256, whatever its name) got is kept in
  the plugin's table ``immunization_imports``, every :data:`CHECKPOINT_ROWS` rows; an interrupted
  import (Ctrl-C, a crash, ``kill -9``) started again skips the rows it knows are journaled and
  feeds the rest. Rows between the last checkpoint and the interruption are fed again and
  answered from the journal as repeats, so no row is lost or doubled;
- ``--url``: through the running gateway's admin API (``POST /admin/feed/immunization_csv``), in
  chunks of :data:`CHUNK_ROWS` rows, since the gateway holds the data directory; without it, in
  this process, on a stopped gateway's journal (as ``hssk-gateway feed`` does).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.plugin import Command, CommandContext, CommandError, MigrationSet, PluginJournal, csv_records
from plugins.immunization.lists import SOURCE

#: Rows between two checkpoints: a resume feeds again at most this many rows.
CHECKPOINT_ROWS = 1000
#: Rows per request to a running gateway's admin API.
CHUNK_ROWS = 2000


def create_imports(db) -> None:
    db["immunization_imports"].create({"digest": str, "file": str, "rows": int, "done": int, "updated_at": float},
                                      pk="digest")


MIGRATIONS = MigrationSet("immunization", [("0001_create_imports", create_imports)])


def scan(path: str) -> tuple[str, int]:
    """The file's SHA-256 and its number of rows (records), read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    with open(path, "rb") as stream:
        rows = sum(1 for _ in csv_records(stream))
    return digest.hexdigest(), rows


def checkpoint_of(journal: PluginJournal, digest: str) -> int:
    found = journal.read(lambda conn: conn.execute("SELECT done FROM immunization_imports WHERE digest = ?",
                                                   (digest,)).fetchone())
    return found[0] if found else 0


def save_checkpoint(journal: PluginJournal, digest: str, file: str, rows: int, done: int) -> None:
    def save(conn, now: float) -> None:
        conn.execute("INSERT INTO immunization_imports (digest, file, rows, done, updated_at) VALUES (?, ?, ?, ?, ?) "
                     "ON CONFLICT (digest) DO UPDATE SET done = max(done, excluded.done), file = excluded.file, "
                     "updated_at = excluded.updated_at", (digest, file, rows, done, now))

    journal.wait(journal.write, save)


@dataclass
class Progress:
    """Rows answered so far, how many the file has, and since when; shown on one line of stderr."""

    total: int
    start: int
    shown: bool
    started: float = field(default_factory=time.monotonic)
    last: float = 0.0

    def show(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.shown or (not final and now - self.last < 0.5):
            return
        self.last = now
        rate = (done - self.start) / max(now - self.started, 1e-6)
        width = 30
        filled = int(width * done / self.total) if self.total else width
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} rows, {rate:,.0f} rows/s")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


class Checkpoints:
    """Keeps the checkpoint behind the rows answered in order: it stops moving at the first row
    answered AR (not processed, to be fed again), so a resume never skips one."""

    def __init__(self, journal: PluginJournal, digest: str, file: str, rows: int, done: int) -> None:
        self.journal, self.digest, self.file, self.rows = journal, digest, file, rows
        self.saved = done
        self.frozen = False

    def advance(self, settled: int, rejected: int) -> None:
        if rejected:
            self.frozen = True
        if not self.frozen and settled - self.saved >= CHECKPOINT_ROWS:
            self.save(settled)

    def save(self, settled: int) -> None:
        if not self.frozen and settled > self.saved:
            save_checkpoint(self.journal, self.digest, self.file, self.rows, settled)
            self.saved = settled


def import_command(args: argparse.Namespace, context: CommandContext) -> int:
    path = args.file
    if not os.path.isfile(path):
        raise CommandError(f"no file {path}")
    journal = context.journal()
    digest, rows = scan(path)
    done = 0 if args.restart else checkpoint_of(journal, digest)
    checkpoints = Checkpoints(journal, digest, os.path.basename(path), rows, done)
    progress = Progress(rows, done, shown=not args.quiet)
    if args.url:
        report = _through_the_gateway(context, args.url, path, done, checkpoints, progress)
    else:
        def follow(report) -> None:
            progress.show(report.settled)
            checkpoints.advance(report.settled, report.rejected)

        report = context.feed(SOURCE, path, skip=done, progress=follow)
        checkpoints.advance(_settled(report), report["rejected"])
        checkpoints.save(_settled(report))
    progress.show(_settled(report), final=True)
    report.update(file=os.path.basename(path), rows=rows, seconds=round(time.monotonic() - progress.started, 3))
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(f"{rows} rows of {report['file']}: {report['skipped']} done before (skipped), {report['accepted']} "
              f"queued, {report['repeats']} already there, {report['errors']} AE, {report['rejected']} AR")
        for problem in report["problems"]:
            errors = "; ".join(e["text"] for e in problem["errors"]) or "-"
            print(f"  row {problem['record']}: {problem['ack_code']} (message {problem['message_id']}): {errors}")
        if report["stopped"]:
            print(f"stopped: {report['stopped']}")
    return 1 if report["stopped"] else 0


def _through_the_gateway(context: CommandContext, url: str, path: str, done: int, checkpoints: Checkpoints,
                         progress: Progress) -> dict:
    """Chunks of rows (each with the header) posted to the running gateway's admin API, in order;
    the first that does not go through whole stops the import."""
    total = {"records": 0, "skipped": done, "accepted": 0, "repeats": 0, "errors": 0, "rejected": 0, "ignored": 0,
             "problems": [], "stopped": None}
    for first, chunk in _chunks(path, done):
        answer = _post(context, url, chunk, os.path.basename(path))
        for key in ("accepted", "repeats", "errors", "rejected", "ignored"):
            total[key] += answer[key]
        total["problems"] += [{**p, "record": p["record"] + first - 1} for p in answer["problems"]]
        total["problems"] = total["problems"][:100]
        settled = first - 1 + _settled(answer)
        checkpoints.advance(settled, answer["rejected"])
        progress.show(settled)
        if answer["stopped"]:
            total["stopped"] = f"at row {settled + 1}: {answer['stopped']}"
            break
    total["records"] = _settled(total)
    checkpoints.save(total["records"])
    return total


def _settled(report: dict) -> int:
    """Rows answered (or skipped as done before), in the file's order."""
    return sum(report[k] for k in ("skipped", "accepted", "repeats", "errors", "rejected", "ignored"))


def _chunks(path: str, done: int) -> Iterator[tuple[int, bytes]]:
    """(number of the chunk's first row, the header and up to CHUNK_ROWS rows) after ``done`` rows."""
    with open(path, "rb") as stream:
        header, rows, first = b"", [], done + 1
        for n, record in enumerate(csv_records(stream), 1):
            head, _, row = record.partition(b"\n")
            header = head
            if n <= done:
                continue
            rows.append(row + b"\n")
            if len(rows) == CHUNK_ROWS:
                yield first, header + b"\n" + b"".join(rows)
                first, rows = n + 1, []
        if rows:
            yield first, header + b"\n" + b"".join(rows)


def _post(context: CommandContext, url: str, body: bytes, file: str) -> dict:
    query = urllib.parse.urlencode({"file": file})
    request = urllib.request.Request(f"{url.rstrip('/')}/admin/feed/{SOURCE}?{query}", data=body, method="POST")
    token_env = context.config.auth.admin_token_env
    if token_env and os.environ.get(token_env):
        request.add_header("Authorization", f"Bearer {os.environ[token_env]}")
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise CommandError(f"the gateway at {url} answered {e.code}: {e.read()[:300].decode('utf-8', 'replace')}")
    except (urllib.error.URLError, OSError) as e:
        raise CommandError(f"cannot reach the gateway's admin API at {url}: {e}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the CSV export (UTF-8, a header line naming the columns)")
    parser.add_argument("--url", help="the running gateway's HTTP listener (http://127.0.0.1:8080): import through "
                                      "its admin API")
    parser.add_argument("--restart", action="store_true", help="ignore the checkpoint and feed every row again (rows "
                                                               "journaled already are answered as repeats)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--json", action="store_true")


IMPORT = Command("import", "journal and queue each row of an immunization list export (CSV), resuming where an "
                           "interrupted import of the same file stopped", import_command, arguments=_arguments)
