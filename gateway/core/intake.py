"""Intake: where transports hand over envelopes and get back a Deferred that fires only after the
journal commit (invariant 1: no AA before the message is stored).

The reactor thread does as little as possible per message: it queues a job for the pipeline
workers and arms one timer. Workers decide (plugins run there), the journal writer commits in
groups, and the answers come back to the reactor in one call per commit. A timer that fires
first answers AR/207, so a hung plugin or a stalled disk costs one message an answer — never the
connection or the reactor.

Workers decide in parallel and finish in any order, but the messages of one connection reach the
writer in the order they arrived (:class:`ArrivalOrder`), so the journal ids, the outbox rows
and therefore each person's deliveries follow the sender's order (invariant 4). A slow decision
holds back only the later messages of its own connection, and no longer than its timer: a
timed-out message goes to the journal as its AR and lets the ones behind it go.

Every kind of input takes this one path (``submit`` with its registered source's name) — same
workers, timer, bounds and group commit. An HL7 source's Outcome carries the ACKs; any other's
carries the decision without replies, and its transport turns it into JSON.

A decision that waits for remote answers (``hssk_lookups``, :mod:`gateway.core.lookups`) leaves
its worker at once: the lookups run on the reactor, each bounded, and the input goes back to the
workers with the answers, all within its one timer.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.core.audit import AuditLog
from gateway.core.ack import acknowledgements
from gateway.core.documents import DocumentRequest
from gateway.core.lookups import MAX_ROUNDS, LookupRunner, not_performed
from gateway.core.metrics import Metrics, reason_label
from gateway.core.outbox import NotRouted
from gateway.core.pipeline import Decision, Pipeline, best_header, undecided
from gateway.core.pipeline_process import ProcessPool
from gateway.core.sources import HL7_V2, Source, SourceRegistry
from gateway.core.store import Committed, JournalWriter
from gateway.model.envelope import Envelope
from gateway.model.masking import mask_text
from gateway.model.outcome import ERROR, REJECT, Issue, Outcome

log = Logger(namespace="hssk.intake")

QUEUED, PROCESSING, DECIDED, COMMITTING, TIMED_OUT, ABANDONED, ANSWERED, LOOKING_UP = range(8)
_STOP = object()
#: Worker threads in all, stuck ones included, as a multiple of ``pipeline.workers``: a thread
#: stuck in a plugin cannot be killed, so it is replaced, but not without bound.
MAX_THREADS_PER_WORKER = 4

#: Stage timestamps per message for performance work (``HSSK_TRACE_STAGES=path``): a summary
#: goes to ``path`` when the intake stops. Off by default; costs one attribute test when off.
_TRACE_PATH = os.environ.get("HSSK_TRACE_STAGES") or None
#: Raw (message type, facility) values are unbounded; their labels are not. Cache a bounded few.
_MAX_CACHED_CHILDREN = 4096
_STAGES = ("received", "worker_start", "worker_end", "commit_start", "commit_end", "answer_start", "written")


class ArrivalOrder:
    """The messages of one connection that are admitted but not yet with the journal writer,
    oldest first. A transport whose connection can carry several messages at once (MLLP
    pipelining) passes one to :meth:`Intake.submit`, so that the connection's arrival order is
    the journal order; a decision that is ready early waits here for the ones ahead of it.
    Touched only under the intake lock."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: deque[_Job] = deque()


class _Job:
    """One message on its way through workers and writer; ``state`` moves under the intake lock."""

    __slots__ = ("intake", "envelope", "deferred", "timer", "state", "decision", "outcome", "plugin", "trace",
                 "replies", "source", "request", "resent", "arrivals", "journal_ready", "answers", "waiting",
                 "rounds")

    def __init__(self, intake: Intake, envelope: Envelope, source: Source,
                 request: DocumentRequest | None = None, arrivals: ArrivalOrder | None = None) -> None:
        self.intake = intake
        self.envelope = envelope
        #: The connection's order this job keeps its place in, and whether its decision (or its
        #: timeout's AR) is ready for the journal while an earlier one of that connection is not.
        self.arrivals = arrivals
        self.journal_ready = False
        #: The registered source of the input, and what its transport was told about it.
        self.source = source
        self.request = request
        #: Remote lookups answered so far, the ones running (cancelled if the timer fires first),
        #: and how many times the pipeline asked for more.
        self.answers: dict = {}
        self.waiting: Deferred | None = None
        self.rounds = 0
        self.deferred: Deferred = Deferred()
        self.timer = None
        self.state = QUEUED
        self.decision: Decision | None = None
        self.outcome: Outcome | None = None
        self.plugin = ""
        #: Sent to a second child process because the first died before any plugin claimed it.
        self.resent = False
        #: The ACKs for ``decision`` as decided, built on the worker so that the writer thread,
        #: which every commit waits on, only has to check that the journal agreed.
        self.replies: tuple[str, ...] | None = None
        self.trace: list[float] | None = [time.perf_counter()] if _TRACE_PATH else None

    def begin_commit(self) -> None:
        self.intake._begin_commit(self)

    def record_commit(self, result: Committed | Exception) -> None:
        if self.trace is not None:
            self.trace.append(time.perf_counter())
        self.outcome = self.intake._outcome_for(self.decision, result, self.replies)

    def answer(self) -> None:
        self.intake._answer(self)


class Intake:
    def __init__(self, pipeline: Pipeline, writer: JournalWriter, clock: IReactorTime, metrics: Metrics,
                 workers: int = 2, timeout: float = 10.0, max_in_flight: int = 10000,
                 pool: ProcessPool | None = None, lookups: LookupRunner | None = None) -> None:
        self._pipeline = pipeline
        #: Performs the remote lookups decisions wait for; without it (a replay's own process)
        #: they are answered ``not_performed``.
        self._lookups = lookups
        #: With ``pipeline.isolation = "processes"``: child processes decide instead of threads.
        self._pool = pool
        if pool is not None:
            pool.take, pool.decided = self._take, self._decided
        self._writer = writer
        self._clock = clock
        self._metrics = metrics
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._started = 0
        #: Threads still inside a plugin call whose message timed out (they hold no job we wait for).
        self._stuck = 0
        self._in_flight = 0
        self._drained: Deferred | None = None
        self._stopping = False
        self._traces: list[list[float]] = []
        # Labelled metric children, looked up once per label set instead of once per message.
        self._received_children: dict[tuple[str, str, str], Any] = {}
        self._ack_children: dict[tuple[str, str, str], Any] = {}
        #: Returns why new work must be refused right now (outbox too deep, disk too full), or None.
        self.admission: Callable[[], str | None] = lambda: None
        #: The gateway's audit log: the transports and the admin API record who got in (or was
        #: refused) and what operators did there; None in a process that audits nothing (a feed
        #: or replay run by the CLI records its own entry).
        self.audit: AuditLog | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def clock(self) -> IReactorTime:
        """What times its messages, and the received times of inputs the gateway makes itself (a feed)."""
        return self._clock

    @property
    def sources(self) -> SourceRegistry:
        """The registered sources, which transports mount and ``submit`` takes by name."""
        return self._pipeline.sources

    def pipeline_status(self) -> dict:
        """For ``/readyz``: with child processes, ready while at least one of them is."""
        if self._pool is None:
            return {"ok": True, "isolation": "threads", "workers": self._workers}
        ready = self._pool.ready_children
        return {"ok": ready > 0, "isolation": "processes", "ready_processes": ready, "processes": self._pool.size,
                "waiting": self._pool.waiting}

    def start(self) -> None:
        if self._pool is not None:
            self._pool.start()
            return
        with self._lock:
            threads = [self._new_thread() for _ in range(self._workers)]
        for thread in threads:
            thread.start()

    def _new_thread(self) -> threading.Thread:
        """A worker thread, counted in ``_threads``; call with the lock held, start it after."""
        thread = threading.Thread(target=self._work_loop, name=f"hssk-pipeline-{self._started}", daemon=True)
        self._started += 1
        self._threads.append(thread)
        return thread

    def stop(self) -> Deferred:
        """Let the messages already taken finish (each has its timer), then stop the workers;
        what arrives meanwhile is answered AR at once."""
        self._stopping = True
        with self._lock:
            count = len(self._threads)
        for _ in range(count):
            self._work.put(_STOP)
        if _TRACE_PATH and self._traces:
            _write_trace_summary(_TRACE_PATH, self._traces)
        if self._in_flight == 0:
            drained = succeed(None)
        else:
            drained = self._drained = Deferred()
        if self._pool is not None:
            pool = self._pool
            drained.addCallback(lambda _: pool.stop())
        return drained

    def submit(self, envelope: Envelope, arrivals: ArrivalOrder | None = None, *, source: str = HL7_V2,
               request: DocumentRequest | None = None) -> Deferred:
        """Fires with the :class:`Outcome` once the decision is journaled (or refused at a bound).
        ``arrivals`` is the sender's connection: its messages are journaled in submission order.
        ``source`` names the registered source of ``envelope.raw`` (an HL7 v2 message by default),
        ``request`` what the transport was told about it (see :class:`DocumentRequest`)."""
        return self._admit(_Job(self, envelope, self._pipeline.sources[source], request, arrivals))

    def _admit(self, job: _Job) -> Deferred:
        envelope = job.envelope
        if self._stopping:
            self._metrics.connections_refused.labels(transport=envelope.transport, reason="stopping").inc()
            return succeed(self._refusal_for(job, "the gateway is stopping; send again later"))
        if self._in_flight >= self._max_in_flight:
            self._metrics.connections_refused.labels(transport=envelope.transport, reason="max_in_flight").inc()
            return succeed(self._refusal_for(job, f"the gateway has {self._in_flight} messages in flight, its limit "
                                                  f"(pipeline.max_in_flight); send again later"))
        reason = self.admission()
        if reason is not None:
            self._metrics.connections_refused.labels(transport=envelope.transport, reason="backpressure").inc()
            return succeed(self._refusal_for(job, reason))
        self._in_flight += 1
        self._metrics.in_flight.inc()
        if job.arrivals is not None:
            with self._lock:
                job.arrivals._waiting.append(job)
        job.timer = self._clock.callLater(self._timeout, self._timed_out, job)
        if self._pool is not None:
            self._pool.submit(job)
        else:
            self._work.put(job)
        return job.deferred

    def _refusal_for(self, job: _Job, reason: str) -> Outcome:
        """The not-stored AR for ``job``: an HL7 ACK for a message, the bare decision for any
        other input (not hashed or parsed: a refusal must stay cheap on the reactor)."""
        if job.source.hl7:
            return self.refusal(job.envelope, reason)
        request = job.request or DocumentRequest()
        return Outcome(REJECT, (Issue(207, reason, ""),), None, committed=False, facility=request.facility)

    def refusal(self, envelope: Envelope, reason: str) -> Outcome:
        """An AR for a message we will not store (a bound was reached); the sender should retry."""
        message = best_header(envelope)
        issues = (Issue(207, reason, ""),)
        return Outcome(REJECT, issues, None, tuple(acknowledgements(message, REJECT, issues, self._clock.seconds())),
                       charset=message.charset if message else "utf-8", committed=False,
                       message_type=message.message_type if message else "",
                       facility=message.sending_facility if message else "")

    def _work_loop(self) -> None:
        """A worker's life. ``Pipeline.decide`` never raises; should anything escape anyway (a
        plugin raising ``KeyboardInterrupt``, a bug here), the message it held is answered, and
        the worker is counted and replaced, so no sender can wear the pool down to nothing."""
        job = None
        try:
            while True:
                job = self._work.get()
                if job is _STOP:
                    return
                if not self._take(job):
                    continue
                decision, replies = self._decide(job)
                if not self._decided(job, decision, replies):
                    with self._lock:
                        if self._leave_after_timeout():
                            return
        except BaseException as e:
            self._worker_died(job, e)

    def _decide(self, job: _Job) -> tuple[Decision, tuple[str, ...] | None]:
        decision = self._pipeline.decide(job.envelope, job, job.request, source=job.source.name, answers=job.answers)
        replies = None
        if decision.ack_code is not None and job.source.hl7:
            try:
                replies = tuple(acknowledgements(decision.message, decision.ack_code, decision.issues,
                                                 self._clock.seconds(), decision.ack_profile))
            except Exception as e:  # the writer tries again, and a failure there costs this message only
                log.error("building the ACK failed: {error}", error=mask_text(str(e)))
        return decision, replies

    def _worker_died(self, job: _Job | None, error: BaseException) -> None:
        """Runs on the dying worker: answer the job it held (AE 207, journaled for a replay),
        then put a new thread in its place."""
        self._metrics.pipeline_worker_deaths.inc()
        log.error("pipeline worker {name} ended by {error_type}", name=threading.current_thread().name,
                  error_type=type(error).__name__)
        if job is not None and job is not _STOP and job.state == PROCESSING:
            issue = Issue(207, f"the pipeline worker deciding this {job.source.noun} ended "
                               f"({type(error).__name__}); it is journaled and can be replayed",
                          job.source.location)
            self._decided(job, undecided(job.envelope, ERROR, issue, job.plugin, job.source, job.request,
                                         fault=(job.plugin or "unknown", "worker")), None)
        with self._lock:
            self._threads.remove(threading.current_thread())
            if isinstance(job, _Job) and job.state == TIMED_OUT:  # it was counted as stuck in that plugin
                self._stuck -= 1
                self._metrics.stuck_workers.set(self._stuck)
            replace = not self._stopping and len(self._threads) - self._stuck < self._workers
            replacement = self._new_thread() if replace else None
        if replacement is not None:
            self._start_replacement(replacement, f"a pipeline worker ended by {type(error).__name__}")

    def _take(self, job: _Job) -> bool:
        """A worker (or a child process) starts on ``job``, unless it timed out while queued."""
        with self._lock:
            if job.state != QUEUED:
                return False
            job.state = PROCESSING
        if job.trace is not None:
            job.trace.append(time.perf_counter())
        return True

    def _decided(self, job: _Job, decision: Decision, replies: tuple[str, ...] | None) -> bool:
        """Hand the decision to the journal writer, or the lookups it waits for to the reactor;
        False when the job timed out meanwhile."""
        if decision.lookups and job.rounds >= MAX_ROUNDS:
            decision, replies = undecided(job.envelope, ERROR, Issue(
                207, f"the plugins asked for remote lookups {job.rounds + 1} times for this {job.source.noun} "
                     f"(hssk_lookups), more than {MAX_ROUNDS}; it is journaled and can be replayed once the plugin "
                     f"is fixed", job.source.location), decision.plugin, job.source, job.request,
                fault=(decision.plugin or "unknown", "lookup")), None
        self._count_faults(decision)
        with self._lock:
            if job.state != PROCESSING:
                return False
            if decision.lookups:
                job.state = LOOKING_UP
                job.rounds += 1
            else:
                job.state = DECIDED
                job.decision = decision
                job.replies = replies
                if job.trace is not None:
                    job.trace.append(time.perf_counter())
                self._to_journal(job)
        if decision.lookups:
            if self._lookups is None:
                self._looked_up(not_performed(decision.lookups, "no gateway reactor performs lookups here"), job)
            else:
                self._lookups.reactor.callFromThread(self._look_up, job, decision.lookups)
        return True

    def _look_up(self, job: _Job, lookups) -> None:
        """On the reactor: perform the lookups ``job``'s decision waits for, unless its timer
        answered it meanwhile. No thread waits for them."""
        if job.state != LOOKING_UP:
            return
        job.waiting = self._lookups.perform(lookups)
        job.waiting.addCallback(self._looked_up, job)

    def _looked_up(self, answers: dict, job: _Job) -> None:
        """Every lookup has its answer: back to the workers, which decide again with them."""
        with self._lock:
            if job.state != LOOKING_UP:
                return
            job.state = QUEUED
            job.waiting = None
            job.answers = {**job.answers, **answers}
        if self._pool is not None:
            self._pool.submit(job)
        else:
            self._work.put(job)

    def _to_journal(self, job: _Job) -> None:
        """(Lock held.) ``job`` is ready for the writer: hand it over, unless a message that
        arrived before it on its connection is not ready yet; then hand over every ready one at
        the front of the connection's order. Submitting under the lock keeps two threads that
        release jobs of one connection from passing each other."""
        arrivals = job.arrivals
        if arrivals is None:
            self._writer.submit(job)
            return
        job.journal_ready = True
        waiting = arrivals._waiting
        while waiting and waiting[0].journal_ready:
            self._writer.submit(waiting.popleft())

    def _begin_commit(self, job: _Job) -> None:
        """Writer thread, just before the commit. A job whose timer already answered AR while it
        waited for the writer is journaled as that AR, so journal and answer agree (AR is not
        kept as an original: a resend is decided afresh). Any other job is committed as decided."""
        with self._lock:
            if job.state == DECIDED:
                job.state = COMMITTING
                return
            abandoned = job.state == ABANDONED
        if abandoned:
            job.decision = undecided(job.envelope, REJECT, Issue(207, self._late_commit_text(), ""), job.plugin,
                                     job.source, job.request)
            job.replies = None

    def _late_commit_text(self) -> str:
        return f"the journal did not commit within {self._timeout:g} s; send again later"

    def _count_faults(self, decision: Decision) -> None:
        if decision.fault is not None:
            self._metrics.plugin_exceptions.labels(plugin=decision.fault[0], stage=decision.fault[1]).inc()
        if not decision.decoded:
            self._metrics.charset_errors.labels(transport=decision.envelope.transport).inc()

    def _count_privacy(self, decision: Decision, message_id: int) -> None:
        """Once the filtered rows are committed: counted, and logged by part and number only,
        never by what was removed."""
        for destination, removal in decision.privacy:
            self._metrics.privacy_removed.labels(destination=destination, category=removal.category,
                                                 part=removal.part).inc(removal.count)
        log.info("privacy policy removed {removed} before queueing message {message_id} ({control_id})",
                 removed=", ".join(f"{r.count} {r.category} {r.part} for {d}" for d, r in decision.privacy),
                 message_id=message_id, control_id=decision.control_id)

    def _leave_after_timeout(self) -> bool:
        """A worker came back from a plugin call that had timed out (lock held): it is no longer
        stuck, and it leaves if its replacement keeps the pool at ``pipeline.workers``."""
        self._stuck -= 1
        self._metrics.stuck_workers.set(self._stuck)
        if len(self._threads) - self._stuck > self._workers:
            self._threads.remove(threading.current_thread())
            return True
        return False

    def _replace_stuck_worker(self) -> threading.Thread | None:
        """The job's worker is stuck in a plugin (lock held): count it, and return a new thread
        to start when the healthy ones fell below ``pipeline.workers`` and the cap allows."""
        self._stuck += 1
        self._metrics.stuck_workers.set(self._stuck)
        if len(self._threads) - self._stuck >= self._workers:
            return None
        if len(self._threads) >= self._workers * MAX_THREADS_PER_WORKER:
            log.error("{stuck} pipeline workers are stuck in plugin calls and the limit of {limit} threads is "
                      "reached; messages wait for a worker to come back", stuck=self._stuck,
                      limit=self._workers * MAX_THREADS_PER_WORKER)
            return None
        return self._new_thread()

    def _timed_out(self, job: _Job) -> None:
        replacement = None
        with self._lock:
            state = job.state
            if state in (QUEUED, PROCESSING, LOOKING_UP):
                job.state = TIMED_OUT
                if state == PROCESSING and self._pool is None:
                    replacement = self._replace_stuck_worker()
            elif state == DECIDED:
                job.state = ABANDONED
            elif state == COMMITTING:
                # The commit is under way and normally ends within milliseconds: its result is the
                # answer, so that the journal and the sender agree. Only a stalled disk gets AR.
                job.timer = self._clock.callLater(self._timeout, self._commit_stalled, job)
                return
            else:
                return
        if self._pool is not None and state == PROCESSING:
            self._pool.abandon(job)
        elif self._pool is not None and state == QUEUED:
            self._pool.forget(job)
        if state == LOOKING_UP and job.waiting is not None:
            job.waiting.cancel()
        plugin = job.plugin or "unknown"
        self._metrics.plugin_timeouts.labels(plugin=plugin).inc()
        if state == DECIDED:
            log.warn("journal commit took longer than {timeout}s; answering AR", timeout=self._timeout)
            self._finish(job, self._refusal_for(job, self._late_commit_text()))
            return
        if state == QUEUED:
            log.warn("no pipeline worker was free within {timeout}s", timeout=self._timeout)
            text = (f"no pipeline worker was free within {self._timeout:g} s (pipeline.timeout_seconds): all "
                    f"pipeline.workers were busy or not started; send again later")
        elif state == LOOKING_UP:
            log.warn("plugin {plugin} waited for remote lookups longer than {timeout}s", plugin=plugin,
                     timeout=self._timeout)
            text = (f"plugin {plugin} waited for remote lookups longer than {self._timeout:g} s "
                    f"(pipeline.timeout_seconds); send again later")
        else:
            log.warn("plugin {plugin} did not decide within {timeout}s", plugin=plugin, timeout=self._timeout)
            text = (f"plugin {plugin} did not answer within {self._timeout:g} s (pipeline.timeout_seconds); "
                    f"send again later")
        job.decision = undecided(job.envelope, REJECT, Issue(207, text, job.source.location), job.plugin,
                                 job.source, job.request)
        with self._lock:
            self._to_journal(job)
        if replacement is not None:
            self._start_replacement(replacement, f"a pipeline worker is stuck in plugin {plugin}")

    def _commit_stalled(self, job: _Job) -> None:
        """The commit holding ``job`` has run for a whole timeout: the disk is stalled. Answer AR
        so the connection is not held; if the commit still lands, a resend gets its answer."""
        with self._lock:
            if job.state != COMMITTING:
                return
            job.state = ABANDONED
        log.warn("a journal commit has run for {timeout}s; answering AR", timeout=self._timeout)
        self._metrics.connections_refused.labels(transport=job.envelope.transport, reason="store").inc()
        self._finish(job, self._refusal_for(job, f"the journal did not commit within {2 * self._timeout:g} s; "
                                                f"send again later"))

    def _start_replacement(self, thread: threading.Thread, why: str) -> None:
        """Started after the message of the lost worker is on its way, so that a thread the
        system refuses (a process or memory limit) costs no answer; such a thread is forgotten
        again. ``why`` says what happened to the worker it replaces."""
        try:
            thread.start()
        except RuntimeError as e:
            with self._lock:
                self._threads.remove(thread)
            log.error("{why} and no thread could replace it: {error}", why=why, error=str(e))
            return
        log.warn("{why}; started {name} in its place", why=why, name=thread.name)

    def _outcome_for(self, decision: Decision, result: Committed | Exception,
                     prebuilt: tuple[str, ...] | None = None) -> Outcome:
        """Runs on the writer thread: turn the commit result into the wire answer. ``prebuilt``
        are the ACKs the worker built for the decision; they stand when the journal kept it."""
        message = decision.message
        if isinstance(result, Exception):
            self._metrics.connections_refused.labels(transport=decision.envelope.transport, reason="store").inc()
            code, issues, message_id, duplicate = REJECT, (Issue(
                207, "the journal could not store the message (see the gateway log); send again later", ""),), None, False
        else:
            code, issues, message_id, duplicate = result.ack_code, result.issues, result.message_id, result.duplicate
        transport = decision.envelope.transport
        if decision.envelope.replay_of is not None:  # answered to nobody: counted as a replay, not as an answer
            self._metrics.replays.labels(code=code or "none").inc()
            return Outcome(code, issues, message_id, committed=not isinstance(result, Exception),
                           plugin=decision.plugin, message_type=decision.message_type)
        if code is None or decision.document is not None:
            replies = ()
        elif (prebuilt is not None and not duplicate and not isinstance(result, Exception)
              and code == decision.ack_code and (issues is decision.issues or issues == decision.issues)):
            replies = prebuilt
        else:
            replies = tuple(acknowledgements(message, code, issues, self._clock.seconds(), decision.ack_profile))
        if duplicate:
            self._metrics.duplicates_suppressed.labels(transport=transport).inc()
        elif code == decision.ack_code and message_id is not None:
            if decision.privacy:
                self._count_privacy(decision, message_id)
            for not_routed in decision.not_routed:
                self._metrics.records_not_routed.labels(destination=not_routed.destination,
                                                        reason=reason_label(not_routed.reason)).inc()
        message_type = decision.message_type
        source = decision.source
        facility = source.sending_facility if source else ""
        key = (transport, decision.plugin or "none", message_type)
        child = self._received_children.get(key)
        if child is None:
            child = self._metrics.messages_received.labels(transport=transport, plugin=key[1],
                                                           message_type=self._metrics.labels.message_type(message_type))
            if len(self._received_children) < _MAX_CACHED_CHILDREN:
                self._received_children[key] = child
        child.inc()
        if code is not None:
            key = (transport, code, facility)
            child = self._ack_children.get(key)
            if child is None:
                child = self._metrics.acks.labels(transport=transport, code=code,
                                                  facility=self._metrics.labels.facility(facility))
                if len(self._ack_children) < _MAX_CACHED_CHILDREN:
                    self._ack_children[key] = child
            child.inc()
        extra = {"records": decision.document.records} if decision.document is not None else {}
        return Outcome(code, issues, message_id, replies, charset=message.charset if message else "utf-8",
                       duplicate=duplicate, plugin=decision.plugin, message_type=message_type, facility=facility,
                       committed=not isinstance(result, Exception), extra=extra)

    def _answer(self, job: _Job) -> None:
        with self._lock:
            if job.state in (ABANDONED, ANSWERED):
                return
            job.state = ANSWERED
        trace = job.trace
        if trace is None:
            self._finish(job, job.outcome)
            self._log_decided(job)
            return
        trace.append(time.perf_counter())
        self._finish(job, job.outcome)
        trace.append(time.perf_counter())
        if len(trace) == len(_STAGES) and len(self._traces) < 1_000_000:
            self._traces.append(trace)
        self._log_decided(job)

    @staticmethod
    def _log_decided(job: _Job) -> None:
        """The one log line of a decided message, emitted once its answer is on its way. Only
        plain values are gathered here; masking and formatting wait for an observer that writes
        the event (see :class:`_DecidedLine`)."""
        decision, outcome = job.decision, job.outcome
        not_routed = decision.not_routed if outcome.ack_code == decision.ack_code and not outcome.duplicate else ()
        log.info("{decided}", decided=_DecidedLine(
            outcome.message_id, decision.envelope.transport, decision.sender, decision.control_id,
            outcome.message_type, outcome.plugin, outcome.ack_code, outcome.duplicate, not_routed))

    def _finish(self, job: _Job, outcome: Outcome) -> None:
        if job.timer is not None and job.timer.active():
            job.timer.cancel()
        self._in_flight -= 1
        self._metrics.in_flight.dec()
        job.deferred.callback(outcome)
        if self._drained is not None and self._in_flight == 0:
            drained, self._drained = self._drained, None
            drained.callback(None)


class _DecidedLine:
    """What ``hssk.intake`` logs of each decided message, written out (sender and control id
    masked, as every identifier in a log) only when an observer renders the event: a level
    filter above ``info`` drops it unformatted, so the reactor pays for one event per message."""

    __slots__ = ("message_id", "transport", "sender", "control_id", "message_type", "plugin", "code", "repeat",
                 "not_routed")

    def __init__(self, message_id: int | None, transport: str, sender: str, control_id: str, message_type: str,
                 plugin: str, code: str | None, repeat: bool, not_routed: tuple[NotRouted, ...] = ()) -> None:
        self.message_id = message_id
        self.transport = transport
        self.sender = sender
        self.control_id = control_id
        self.message_type = message_type
        self.plugin = plugin
        self.code = code
        self.repeat = repeat
        self.not_routed = not_routed

    def __str__(self) -> str:
        journaled = "-" if self.message_id is None else self.message_id
        not_routed = "".join(f", not routed to {n.destination} ({mask_text(n.reason)})" for n in self.not_routed)
        return (f"decided message {journaled}: {self.transport} from {mask_text(self.sender) or '-'}, control id "
                f"{mask_text(self.control_id) or '-'}, {self.message_type or '-'}, plugin {self.plugin or '-'}: "
                f"{self.code or 'ignored'}{' (repeat)' if self.repeat else ''}{not_routed}")


def _write_trace_summary(path: str, traces: list[list[float]]) -> None:
    """Per stage: mean, p50, p99 and max of the time since the previous stage, in ms."""
    lines = [f"{len(traces)} messages; ms from the previous stage: mean p50 p90 p99 max"]
    for n in range(1, len(_STAGES)):
        spans = sorted((t[n] - t[n - 1]) * 1000 for t in traces)
        lines.append(f"{_STAGES[n - 1]:>12} -> {_STAGES[n]:<12} {sum(spans) / len(spans):8.3f} "
                     + " ".join(f"{spans[min(len(spans) - 1, int(q * len(spans)))]:8.3f}" for q in (0.5, 0.9, 0.99))
                     + f" {spans[-1]:8.3f}")
    total = sorted((t[-1] - t[0]) * 1000 for t in traces)
    lines.append(f"{'total':>28} {sum(total) / len(total):8.3f} "
                 + " ".join(f"{total[min(len(total) - 1, int(q * len(total)))]:8.3f}" for q in (0.5, 0.9, 0.99))
                 + f" {total[-1]:8.3f}")
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
    traces.clear()

