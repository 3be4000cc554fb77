"""Scheduling for ``batch`` destinations: the records of one period (``daily HH:MM`` or
``weekly DAY HH:MM`` in the configured zone) go out as one file, because the Ministry asks
provinces that run several vendors to synchronise with the national center weekly rather than
record by record. It sits in the core beside :mod:`gateway.core.dispatch` because it schedules
outbox rows; the file itself goes out through a destination (the sink), as every delivery does.

A :class:`BatchRunner` arms one timer on the injected clock for the next fire time. When it
fires, it collects (on the writer, so the read and the later marks agree) the destination's
pending rows whose message was received before the fire time, builds one file, hands it to the
sink (a ``file`` folder or an ``http`` URL) and, only when the sink answers DELIVERED, marks
exactly those rows delivered in one writer task. A refused file leaves its rows pending: RETRY
tries the same file again with backoff, DEAD records the reason and waits for the next period
(or an operator's flush), whose file carries the rows again.

File formats (``batch_format``):

* ``ndjson``: one payload per line, in row id order. JSON payloads (the core renderer's) are
  written as they are, recompacted only if they contain a line break; any other payload becomes
  ``{"id", "content_type", "payload_base64"}`` so every line stays one JSON document.
* ``xml130``: the GIAMDINHHS claim-file envelope of vn-standards §1.2 — ``THONGTINDONVI/MACSKCB``,
  ``THONGTINHOSO`` with ``NGAYLAP`` (the period end's date, yyyyMMdd in the configured zone, so a
  rebuilt file is identical), ``SOLUONGHOSO`` and ``DANHSACHHOSO``, then an empty ``CHUKYDONVI``
  for a signer to fill. Each outbox row (one record set, one episode) is one ``HOSO`` with one
  ``FILEHOSO``: ``NOIDUNGFILE`` is the base64 of the payload bytes (UTF-8) as the standard asks;
  ``LOAIHOSO`` is the table code (``XML1``…``XML15``) when the payload is an XML 130 table we
  recognise by its root tag, and otherwise the payload's media type (``application/json`` for
  today's renderer), since no 130 table code describes canonical JSON. ``MACSKCB`` is the
  sending facility when every record of the file comes from one facility, else empty: the
  standard has one facility per envelope, and splitting a province's file per facility is a
  decision for the national center's profile, not made here.

Names: the idempotency key (sent as the key, and the file name of a ``file`` sink) is
``DEST-PERIOD-DIGEST``, e.g. ``national_center-2026-W47-1a2b3c4d5e6f``: the period is the ISO week
(``2026-W47``) or the date (``2026-11-19``) holding the middle of the period, so a week ending
Monday 02:00 is named for the week it covers; the digest is over destination, period and the
included row ids, so a redelivery of the same rows after a crash is the same file, and a flush
in mid-period does not overwrite the scheduled file of that period.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
from dataclasses import dataclass, field, replace
from datetime import datetime

from lxml import etree
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from gateway.config import DestinationConfig, setting
from gateway.core.dispatch import backoff_delay
from gateway.model.masking import mask_text
from gateway.core.metrics import Metrics
from gateway.model.outcome import ContentError
from gateway.core.outbox import BatchRow, mark_batch_delivered, patient_names, pending_for_batch, record_batch_failure
from gateway.core.schedule import Schedule, parse_schedule
from gateway.core.store import Store
from gateway.core.destination import DEAD, DELIVERED, RETRY, Delivery, DeliveryResult, Destination
from gateway.formats.xml_safety import parse_untrusted_xml

log = Logger(namespace="hssk.batch")

NDJSON = "application/x-ndjson"
XML = "application/xml"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"

#: Inner root tag → LOAIHOSO, from vn-standards §1.3 (QĐ 130 / 4750).
XML130_TABLES = {
    "TONG_HOP": "XML1",
    "CHITIEU_CHITIET_THUOC": "XML2",
    "CHITIEU_CHITIET_DVKT_VTYT": "XML3",
    "CHITIEU_CHITIET_DICHVUCANLAMSANG": "XML4",
    "CHITIEU_CHITIET_DIENBIENLAMSANG": "XML5",
    "CHI_TIEU_HO_SO_BENH_AN_CHAM_SOC_VA_DIEU_TRI_HIV_AIDS": "XML6",
    "CHI_TIEU_DU_LIEU_GIAY_RA_VIEN": "XML7",
    "CHI_TIEU_DU_LIEU_TOM_TAT_HO_SO_BENH_AN": "XML8",
    "CHI_TIEU_DU_LIEU_GIAY_CHUNG_SINH": "XML9",
    "CHI_TIEU_DU_LIEU_GIAY_NGHI_DUONG_THAI": "XML10",
    "CHI_TIEU_DU_LIEU_GIAY_CHUNG_NHAN_NGHI_VIEC_HUONG_BAO_HIEM_XA_HOI": "XML11",
    "CHI_TIEU_GIAYCHUYENTUYEN": "XML13",
    "CHI_TIEU_GIAYHEN_KHAMLAI": "XML14",
    "CHI_TIEU_DIEUTRI_BENHLAO": "XML15",
}

@dataclass(frozen=True)
class BatchSettings:
    """The keys every batched destination kind has (``DestinationKind(batched=True)``): when a
    period ends, and what its file is. The kind's own settings extend this with its sink's keys."""

    #: ``daily HH:MM`` or ``weekly DAY HH:MM`` (:func:`gateway.core.schedule.parse_schedule`).
    schedule: str = ""
    timezone: str = "Asia/Ho_Chi_Minh"
    batch_format: str = setting("ndjson", rule="must be 'ndjson' or 'xml130'", test=lambda v: v in ("ndjson", "xml130"))


class BatchNotDelivered(Exception):
    """A batch file the sink did not accept (or could not be made); its rows stay pending."""

    def __init__(self, destination: str, rows: int, reason: str) -> None:
        super().__init__(f"{destination}: batch of {rows} rows not delivered: {reason}")
        self.destination = destination
        self.rows = rows
        self.reason = reason


def period_label(schedule: Schedule, end: float) -> str:
    """The name of the period ending at ``end``: the ISO week or date of its middle instant."""
    start = schedule.previous_at_or_before(end - 1)
    middle = datetime.fromtimestamp((start + end) / 2, schedule.zone)
    if schedule.weekday is None:
        return middle.strftime("%Y-%m-%d")
    year, week, _ = middle.isocalendar()
    return f"{year}-W{week:02d}"


def batch_key(destination: str, period: str, row_ids: list[int]) -> str:
    """Readable and stable: destination and period for people, a digest of the rows for machines."""
    text = "\x1f".join((destination, period, ",".join(map(str, row_ids))))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', destination)}-{period}-{digest}"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def ndjson_line(row: BatchRow) -> bytes:
    payload = row.payload.strip()
    if _is_json(row.content_type):
        if b"\n" not in payload and b"\r" not in payload:
            return payload
        try:
            return json.dumps(json.loads(payload), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except ValueError:
            pass  # labelled JSON but is not: carried like any other payload below
    document = {"id": row.idempotency_key, "content_type": row.content_type,
                "payload_base64": base64.b64encode(row.payload).decode("ascii")}
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def build_ndjson(rows: list[BatchRow]) -> bytes:
    return b"".join(ndjson_line(row) + b"\n" for row in rows)


def loai_ho_so(row: BatchRow) -> str:
    """LOAIHOSO for one payload: its XML 130 table code, or its media type when it is not one."""
    media = row.content_type.split(";")[0].strip().lower()
    if media.endswith("xml"):
        try:
            root = parse_untrusted_xml(row.payload, max_bytes=len(row.payload), where="payload")
        except ContentError:
            return media
        return XML130_TABLES.get(etree.QName(root).localname, media)
    return media


def facility_of(sender: str) -> str:
    """``APP|FACILITY`` → ``FACILITY``."""
    return sender.partition("|")[2]


def build_xml130(rows: list[BatchRow], made_at: float, schedule: Schedule) -> bytes:
    """The GIAMDINHHS envelope (see the module docstring for what each element holds)."""
    root = etree.Element("GIAMDINHHS", nsmap={"xsi": XSI, "xsd": XSD})
    facilities = {facility_of(row.sender) for row in rows}
    etree.SubElement(etree.SubElement(root, "THONGTINDONVI"), "MACSKCB").text = (
        facilities.pop() if len(facilities) == 1 else "")
    files = etree.SubElement(root, "THONGTINHOSO")
    etree.SubElement(files, "NGAYLAP").text = datetime.fromtimestamp(made_at, schedule.zone).strftime("%Y%m%d")
    etree.SubElement(files, "SOLUONGHOSO").text = str(len(rows))
    listing = etree.SubElement(files, "DANHSACHHOSO")
    for row in rows:
        part = etree.SubElement(etree.SubElement(listing, "HOSO"), "FILEHOSO")
        etree.SubElement(part, "LOAIHOSO").text = loai_ho_so(row)
        etree.SubElement(part, "NOIDUNGFILE").text = base64.b64encode(row.payload).decode("ascii")
    etree.SubElement(root, "CHUKYDONVI").text = ""
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


@dataclass(frozen=True)
class BatchFile:
    """One period's file, ready for the sink; kept as is for every retry."""

    period: str
    key: str
    content_type: str
    body: bytes
    row_ids: tuple[int, ...]
    first_row: BatchRow
    oldest_created_at: float
    message_ids: tuple[int, ...]


def build_batch_file(name: str, batch_format: str, schedule: Schedule, period: str, cutoff: float,
                     rows: list[BatchRow]) -> BatchFile:
    """CPU work proportional to a week of records: run in the thread pool, not on the reactor."""
    if batch_format == "xml130":
        content_type, body = XML, build_xml130(rows, cutoff, schedule)
    else:
        content_type, body = NDJSON, build_ndjson(rows)
    row_ids = [row.row_id for row in rows]
    return BatchFile(period, batch_key(name, period, row_ids), content_type, body, tuple(row_ids), rows[0],
                     min(row.created_at for row in rows), tuple(dict.fromkeys(row.message_id for row in rows)))


@dataclass
class _Job:
    """One requested batch: rows received before ``cutoff``, named for ``period``."""

    cutoff: float
    period: str
    waiters: list[Deferred] = field(default_factory=list)
    file: BatchFile | None = None
    attempts: int = 0
    #: The names the file's records carry, read once the sink first refuses it (see ``_answered``).
    names: tuple[str, ...] | None = None


class BatchRunner:
    """Runs one batch destination: a timer per fire time, one batch at a time.

    A batch waiting out a backoff is superseded by a newer request (the next period, or a
    flush): its rows are still pending and received before the newer cutoff, so the newer file
    carries them. A request that arrives while a batch is being collected or sent waits for it.
    """

    def __init__(self, config: DestinationConfig, settings: BatchSettings, sink: Destination, writer, store: Store,
                 clock: IReactorTime, reactor, metrics: Metrics, rng: random.Random | None = None) -> None:
        self.config = config
        self.sink = sink
        self.schedule = parse_schedule(settings.schedule, settings.timezone)
        self._batch_format = settings.batch_format
        self._writer = writer
        self._store = store
        self._clock = clock
        self._reactor = reactor
        self._metrics = metrics
        self._rng = rng or random.Random()
        self.paused = False
        self._timer = None
        self._retry_call = None
        self._current: _Job | None = None
        self._working = False
        self._queued: _Job | None = None
        self._idle_waiters: list[Deferred] = []
        self._stopping = False

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def period_seconds(self) -> float:
        """How long rows normally wait here before anyone should worry."""
        return 86400.0 if self.schedule.weekday is None else 7 * 86400.0

    @property
    def next_fire_at(self) -> float | None:
        return self._timer.getTime() if self._timer is not None and self._timer.active() else None

    def start(self) -> None:
        """Arm the timer, and send now the last period if it was missed (the gateway was down at
        its fire time, or its file was refused): those rows are received before its end."""
        now = self._clock.seconds()
        last_end = self.schedule.previous_at_or_before(now)
        self._arm(now)
        if not self.paused:
            self._request(_Job(last_end, period_label(self.schedule, last_end)))

    def flush(self) -> Deferred:
        """Send everything pending up to now as one file (named for the current period). Fires
        with the number of rows the sink accepted (0 when nothing was pending), or fails with
        :class:`BatchNotDelivered` when the sink refused it (a RETRY keeps trying in the background)."""
        if self._stopping:
            return fail(BatchNotDelivered(self.name, 0, "the gateway is stopping"))
        if self.paused:
            return fail(BatchNotDelivered(self.name, 0, "the destination is paused; resume it first"))
        now = self._clock.seconds()
        # The cut is "received before"; the next float after now takes what arrived this instant too.
        job = _Job(math.nextafter(now, math.inf), period_label(self.schedule, self.schedule.next_after(now)))
        d: Deferred = Deferred()
        job.waiters.append(d)
        self._request(job)
        return d

    def when_idle(self) -> Deferred:
        """Fires when no batch is being collected, sent or recorded and none is queued (a batch
        waiting out its backoff counts as idle: only the clock moves it on)."""
        if not self._working and self._queued is None:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle_waiters.append(d)
        return d

    @inlineCallbacks
    def stop(self):
        """Stop the timers, let a batch in progress finish and be recorded, close the sink."""
        self._stopping = True
        for call in (self._timer, self._retry_call):
            if call is not None and call.active():
                call.cancel()
        queued, self._queued = self._queued, None
        if queued is not None:
            self._answer(queued, BatchNotDelivered(self.name, 0, "the gateway is stopping"))
        yield self.when_idle()
        yield self.sink.close()

    # -- scheduling -----------------------------------------------------------------------------

    def _arm(self, after: float) -> None:
        fire_at = self.schedule.next_after(after)
        self._timer = self._clock.callLater(max(0.0, fire_at - self._clock.seconds()), self._fire, fire_at)

    def _fire(self, fire_at: float) -> None:
        self._timer = None
        self._arm(fire_at)
        if self.paused:
            log.info("{destination} is paused: its batch due now waits for the next period or a flush",
                     destination=self.name)
            return
        self._request(_Job(fire_at, period_label(self.schedule, fire_at)))

    def _request(self, job: _Job) -> None:
        if self._working:
            if self._queued is not None:
                job.waiters[:0] = self._queued.waiters
            self._queued = job
            return
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
            log.info("{destination}: the batch {key} waiting to retry is superseded by a newer one that "
                     "carries its rows", destination=self.name, key=self._current.file.key)
        self._retry_call = None
        self._begin(job)

    def _begin(self, job: _Job) -> None:
        self._current = job
        self._working = True
        d = self._writer.run(lambda conn, now: pending_for_batch(conn, self.name, job.cutoff))
        d.addCallback(self._collected, job)
        d.addErrback(self._broken, job, "collecting the rows")

    @inlineCallbacks
    def _collected(self, rows: list[BatchRow], job: _Job):
        if not rows:
            self._answer(job, 0)
            self._finish()
            return
        job.file = yield deferToThreadPool(self._reactor, self._reactor.getThreadPool(), build_batch_file,
                                           self.config.name, self._batch_format, self.schedule, job.period, job.cutoff,
                                           rows)
        self._attempt(job)

    def _broken(self, failure, job: _Job, doing: str) -> None:
        """A failure of our own (journal or file building), not the sink's: the rows stay
        pending and the next period or flush tries again."""
        log.error("{destination}: {doing} for the batch of {period} failed: {error}", destination=self.name,
                  doing=doing, period=job.period, error=failure.getErrorMessage())
        self._answer(job, BatchNotDelivered(self.name, 0, f"{doing} failed: {failure.getErrorMessage()}"))
        self._finish()

    # -- one attempt ----------------------------------------------------------------------------

    def _attempt(self, job: _Job) -> None:
        self._retry_call = None
        self._working = True
        file = job.file
        delivery = Delivery(row_id=file.first_row.row_id, message_id=file.first_row.message_id,
                            destination=self.name, idempotency_key=file.key, ordering_key=file.key,
                            content_type=file.content_type, payload=file.body, attempts=job.attempts,
                            created_at=file.oldest_created_at)
        self.sink.deliver(delivery).addBoth(self._answered, job)

    def _answered(self, result, job: _Job) -> None:
        if not isinstance(result, DeliveryResult):
            error = mask_text(getattr(result, "getErrorMessage", lambda: str(result))())
            log.error("batch sink of {destination} raised instead of answering: {error}", destination=self.name,
                      error=error)
            result = DeliveryResult(RETRY, "error", f"internal error in the sink: {error}")
        job.attempts += 1
        if result.outcome == DELIVERED:
            self._mark_delivered(job, result)
            return
        d = succeed(job.names) if job.names is not None else deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), self._read_names, job.file.message_ids)
        d.addCallbacks(self._refused, self._broken, callbackArgs=(job, result),
                       errbackArgs=(job, "reading the names its refusal may quote"))

    def _read_names(self, message_ids: tuple[int, ...]) -> tuple[str, ...]:
        """Thread pool, on a connection of its own: a file's refusal may quote any of its
        patients, so its reason is masked against all their names before it is logged, recorded
        on every row or answered to an operator's flush. Read once per file, only when refused."""
        conn = self._store.connect()
        try:
            return tuple(name for names in patient_names(conn, message_ids).values() for name in names)
        finally:
            conn.close()

    def _refused(self, names: tuple[str, ...], job: _Job, result: DeliveryResult) -> None:
        job.names = names
        result = replace(result, reason=mask_text(result.reason, names))
        file = job.file
        rows = list(file.row_ids)
        self._metrics.delivery_attempts.labels(destination=self.name, outcome="pending", result=result.label).inc()
        retry_in = None
        if result.outcome == RETRY and job.attempts < self.config.max_attempts and not self._stopping:
            retry_in = backoff_delay(job.attempts - 1, self.config.backoff_base_seconds,
                                     self.config.backoff_cap_seconds, self._rng)
            if result.retry_after is not None:
                retry_in = max(retry_in, min(result.retry_after, self.config.backoff_cap_seconds))
            reason = result.reason
            log.warn("{destination}: batch {key} ({count} rows) not accepted ({label}: {reason}); "
                     "retrying in {delay:.1f} s", destination=self.name, key=file.key, count=len(rows),
                     label=result.label, reason=reason[:300], delay=retry_in)
        else:
            reason = result.reason if result.outcome == DEAD else (
                f"gave up after {job.attempts} attempts (max_attempts); last: {result.reason}")
            log.error("{destination}: batch {key} ({count} rows) refused ({label}: {reason}); the rows stay "
                      "pending for the next period or a flush", destination=self.name, key=file.key,
                      count=len(rows), label=result.label, reason=reason[:300])
        self._answer(job, BatchNotDelivered(self.name, len(rows), reason))
        d = self._writer.run(lambda conn, now: record_batch_failure(conn, self._clock.seconds(), rows,
                                                                     result.label, reason))
        d.addErrback(lambda f: log.error("{destination}: recording a refused batch failed: {error}",
                                         destination=self.name, error=f.getErrorMessage()))
        d.addCallback(self._after_refusal, job, retry_in)

    def _after_refusal(self, _, job: _Job, retry_in: float | None) -> None:
        if retry_in is not None and not self._stopping:
            self._retry_call = self._clock.callLater(retry_in, self._attempt, job)
        self._finish()

    def _mark_delivered(self, job: _Job, result: DeliveryResult) -> None:
        rows = list(job.file.row_ids)
        d = self._writer.run(lambda conn, now: mark_batch_delivered(conn, self._clock.seconds(), rows, result.label))
        d.addCallbacks(self._marked, self._mark_failed, (job, result), None, (job, result))

    def _marked(self, marked: int, job: _Job, result: DeliveryResult) -> None:
        file = job.file
        now = self._clock.seconds()
        self._metrics.batch_files.labels(destination=self.name).inc()
        self._metrics.delivery_attempts.labels(destination=self.name, outcome=DELIVERED, result=result.label).inc()
        self._metrics.delivery_latency.labels(destination=self.name).observe(max(0.0, now - file.oldest_created_at))
        log.info("{destination}: batch {key} of {period} accepted; {count} rows delivered", destination=self.name,
                 key=file.key, period=file.period, count=marked)
        self._answer(job, len(file.row_ids))
        self._finish()

    def _mark_failed(self, failure, job: _Job, result: DeliveryResult) -> None:
        """The sink has the file but the journal does not say so yet: keep trying to record it
        (a crash now would resend the same file, which the key makes harmless)."""
        log.error("{destination}: recording batch {key} as delivered failed: {error}; trying again",
                  destination=self.name, key=job.file.key, error=failure.getErrorMessage())
        self._clock.callLater(1.0, self._mark_delivered, job, result)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _answer(self, job: _Job, outcome: int | Exception) -> None:
        waiters, job.waiters = job.waiters, []
        for d in waiters:
            if isinstance(outcome, Exception):
                d.errback(outcome)
            else:
                d.callback(outcome)

    def _finish(self) -> None:
        self._working = False
        queued, self._queued = self._queued, None
        if queued is not None and not self._stopping:
            self._request(queued)
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)
