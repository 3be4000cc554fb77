"""Feeding a file: each record of a file an operator loads (a population list, an immunization
export) becomes one input of a registered source, through the same intake, journal and outbox as
what senders send.

The source splits the file into records (``Source.split``), and names each record by its content
(:meth:`gateway.core.documents.DocumentSource.named_by_content`), so each is one journaled message
with idempotency keys of its own. A record fed again, in the same file or another, meets its
first copy in the journal and is answered from it without being queued again: feeding a file a
second time queues nothing twice, and a feed that stopped half-way (the gateway at a bound, the
operator's Ctrl-C, a crash) goes on where it stopped when the same file is fed again.

Records go to :meth:`Intake.submit` a window at a time, in the file's order (one
:class:`ArrivalOrder`, so the journal and each person's deliveries keep it), and the live
traffic waits behind at most a window of them. Two ways in, one writer per journal each:

- the running gateway's admin API (``POST /admin/feed/SOURCE``, ``hssk-gateway feed --url``):
  its intake, its workers, its single journal writer;
- ``hssk-gateway feed`` without ``--url``: an intake and a journal writer of the CLI's own
  process (:func:`feed_here`), while it holds the data directory's lock, so no gateway starts on
  the journal meanwhile; it refuses when a gateway holds it. Nothing is delivered then: the
  gateway delivers the queued rows when it starts.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.config import GatewayConfig
from gateway.core.intake import ArrivalOrder, Intake
from gateway.core.sources import Source
from gateway.model.envelope import Envelope
from gateway.model.masking import mask_text
from gateway.model.outcome import ACCEPT, ERROR, Outcome

log = Logger(namespace="hssk.feed")

#: The journal's transport for a fed record.
TRANSPORT = "feed"
#: Records submitted and not yet answered at once: enough for the group commit to gather them,
#: few enough that a live message waits behind a handful of decisions at most.
WINDOW = 16
#: Records with a problem listed one by one in a report; the rest are counted.
MAX_PROBLEMS = 100


class FeedRefused(Exception):
    """The feed cannot start: an unknown source, one that cannot be fed from a file."""


@dataclass
class FeedReport:
    """What became of a file's records: how many were read, skipped (the caller knew them fed
    before), queued (accepted), already there (repeats: fed before), answered AE or AR, and the
    first :data:`MAX_PROBLEMS` of those by their place in the file (``record`` counts from 1).
    ``stopped`` says why the feed ended before the file did, and that feeding the same file again
    goes on from there."""

    source: str
    file: str
    records: int = 0
    skipped: int = 0
    accepted: int = 0
    repeats: int = 0
    errors: int = 0
    rejected: int = 0
    ignored: int = 0
    problems: list[dict] = field(default_factory=list)
    stopped: str | None = None

    def add(self, record: int, outcome: Outcome) -> None:
        if outcome.duplicate:
            self.repeats += 1
        elif outcome.ack_code == ACCEPT:
            self.accepted += 1
        elif outcome.ack_code is None:
            self.ignored += 1
        else:
            if outcome.ack_code == ERROR:
                self.errors += 1
            else:
                self.rejected += 1
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append({"record": record, "message_id": outcome.message_id,
                                      "ack_code": outcome.ack_code,
                                      "errors": [{**i.to_dict(), "text": mask_text(i.text)} for i in outcome.issues]})

    @property
    def settled(self) -> int:
        """Records read and answered (skipped ones included), in the file's order."""
        return self.skipped + self.accepted + self.repeats + self.errors + self.rejected + self.ignored

    def to_dict(self) -> dict:
        return asdict(self)


def csv_records(stream: BinaryIO) -> Iterator[bytes]:
    """A CSV file's records for a source's ``split``: each data row as the header line plus that
    row's line, ``\n`` ends, read a line at a time (a file of any length in constant memory). A
    record so reads by itself (a replay needs nothing else), and the same row fed again, in any
    file with that header, is the same record. Bytes are not decoded here: a row that is not UTF-8
    is that record's error, journaled, not the file's."""
    lines = (line.rstrip(b"\r\n") for line in stream)
    header = next(lines, b"").removeprefix(b"\xef\xbb\xbf")
    for line in lines:
        if line.strip():
            yield header + b"\n" + line + b"\n"


def feedable(sources: Iterable[Source], name: str) -> Source:
    """The source called ``name``, when it can be fed from a file; else :class:`FeedRefused`
    naming the ones that can."""
    found = {source.name: source for source in sources}
    source = found.get(name)
    if source is None or source.split is None:
        can = ", ".join(sorted(s.name for s in found.values() if s.split is not None)) or "none"
        what = "is not a registered source" if source is None else "cannot be fed from a file (it has no split)"
        raise FeedRefused(f"source {name!r} {what}; sources fed from files here: {can}")
    return source


async def feed(intake: Intake, source: Source, records: Iterator[bytes], clock: IReactorTime, *, file: str,
               peer: str, max_record_bytes: int, skip: int = 0,
               progress: Callable[[FeedReport], None] | None = None) -> FeedReport:
    """Submit each record of ``records`` (the source's split of ``file``) as an input of
    ``source``, a :data:`WINDOW` at a time, and report. A record the gateway did not store (a
    bound reached, the gateway stopping, the journal failing) stops the feed: what came before it
    is journaled, and feeding the file again goes on from it. So does a record larger than
    ``max_record_bytes`` or a split that fails (the file, or the plugin, is broken).

    The first ``skip`` records are read and not submitted: a caller that recorded how far an
    earlier feed of the same file got (a checkpoint) resumes without deciding them again (a record
    submitted again would be a repeat, answered from the journal, only slower). ``progress`` is
    called with the report after each record is answered, in the file's order."""
    report = FeedReport(source.name, file)
    order = ArrivalOrder()
    waiting: deque[tuple[int, Deferred]] = deque()

    async def settle_oldest() -> None:
        number, answered = waiting.popleft()
        outcome = await answered
        if not outcome.committed:
            if report.stopped is None:
                report.stopped = (f"record {number} was not stored: {'; '.join(i.text for i in outcome.issues)}; "
                                  f"the records before it are journaled: feed the same file again to go on")
        else:
            report.add(number, outcome)
            if progress is not None:
                progress(report)

    while report.stopped is None:
        try:
            raw = next(records, None)
        except Exception as e:  # the source's split is plugin code: a broken file or a bug ends the feed, reported
            report.stopped = (f"reading the file failed after record {report.records}: {type(e).__name__}: "
                              f"{mask_text(str(e))}")
            break
        if raw is None:
            break
        report.records += 1
        if report.records <= skip:
            report.skipped += 1
            continue
        if len(raw) > max_record_bytes:
            report.stopped = (f"record {report.records} is {len(raw)} bytes, more than {max_record_bytes} "
                              f"(http.max_body_bytes); is this a {source.name} file?")
            break
        envelope = Envelope(raw, TRANSPORT, peer, clock.seconds(), file)
        waiting.append((report.records, intake.submit(envelope, order, source=source.name)))
        if len(waiting) >= WINDOW:
            await settle_oldest()
    while waiting:
        await settle_oldest()
    log.info("fed {records} records of {file} as {source}: {skipped} skipped, {accepted} queued, {repeats} repeats, "
             "{errors} AE, {rejected} AR{stopped}", records=report.records, file=file, source=source.name,
             skipped=report.skipped,
             accepted=report.accepted, repeats=report.repeats, errors=report.errors, rejected=report.rejected,
             stopped=f"; stopped: {report.stopped}" if report.stopped else "")
    return report


class LocalAdmission:
    """The bounds of intake for a feed in the CLI's own process, where no delivery service counts
    the outbox: refused once the outbox holds ``outbox.max_pending`` undelivered rows, or free disk
    is under ``store.min_free_disk_bytes``. Both are looked at again every :data:`RECOUNT` records,
    so the outbox may pass its bound by at most that many records' rows."""

    RECOUNT = 256

    def __init__(self, config: GatewayConfig, conn: sqlite3.Connection) -> None:
        self._config = config
        self._conn = conn
        self._calls = 0
        self._refusal: str | None = None

    def __call__(self) -> str | None:
        if self._calls % self.RECOUNT == 0:
            self._refusal = self._look()
        self._calls += 1
        return self._refusal

    def _look(self) -> str | None:
        pending = self._conn.execute(_UNDELIVERED).fetchone()[0]
        if pending >= self._config.outbox.max_pending:
            return (f"the outbox holds {pending} undelivered rows, its limit (outbox.max_pending); start the gateway "
                    f"to deliver them")
        free = shutil.disk_usage(self._config.data_dir).free
        if free < self._config.store.min_free_disk_bytes:
            return f"free disk {free} bytes is below the floor (store.min_free_disk_bytes)"
        return None


_UNDELIVERED = "SELECT count(*) FROM outbox WHERE state IN ('pending', 'waiting', 'in_flight')"


async def feed_here(config: GatewayConfig, plugins, source_name: str, path: str, reactor, *, skip: int = 0,
                    progress: Callable[[FeedReport], None] | None = None) -> FeedReport:
    """The CLI's feed without a running gateway: this process's own intake, pipeline workers and
    journal writer on the data directory's journal (brought to today's schema first). The caller
    holds the data directory's lock. ``skip`` and ``progress`` as for :func:`feed`."""
    from gateway.core.lookups import LookupRunner
    from gateway.core.metrics import Metrics
    from gateway.core.pipeline import Pipeline
    from gateway.core.store import JournalWriter, open_store

    pipeline = Pipeline(plugins.hook, config)
    source = feedable(pipeline.sources, source_name)
    store = open_store(config)
    store.migrate()
    metrics = Metrics()
    writer = JournalWriter(store, reactor, metrics, config.store.max_batch)
    writer.unordered_destinations = frozenset(d.name for d in config.destinations if d.kind == "batch")
    intake = Intake(pipeline, writer, reactor, metrics, workers=config.pipeline.workers,
                    timeout=config.pipeline.timeout_seconds, max_in_flight=config.pipeline.max_in_flight,
                    lookups=LookupRunner(plugins.hook, reactor, reactor, metrics))
    conn = store.connect()
    intake.admission = LocalAdmission(config, conn)
    writer.start()
    intake.start()
    try:
        with open(path, "rb") as stream:
            report = await feed(intake, source, source.split(stream), reactor, file=os.path.basename(path),
                                peer="cli", max_record_bytes=config.http.max_body_bytes, skip=skip,
                                progress=progress)
    finally:
        await intake.stop()
        await writer.stop()
        conn.close()
    return report
