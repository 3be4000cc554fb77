"""Deciding in child processes: ``pipeline.isolation = "processes"``.

Threads share one interpreter lock, so with threads the pipeline and the reactor take turns on
one core however many workers there are. With processes, ``pipeline.workers`` child processes
decide and build the ACKs on the other cores, and the gateway's reactor only hands them
envelopes and takes back decisions, with no thread waiting on either side. A plugin that hangs,
leaks or crashes the interpreter costs its child, which is killed and started again, never the
gateway.

The price: one pickled envelope out and one pickled decision back per message, a second or so
to start each child, and plugins must be installed through the entry-point group, because an
object registered in the parent cannot follow it into a new interpreter.

A child is ``python -m gateway.core.pipeline_process GATEWAY_PID``. It reads frames on its standard input
and writes frames to descriptor 3 (its standard output and error are the gateway's, for logs).
Each frame is a 4-byte length and a body. The first frame in is the config; the child loads the
plugins and answers ``R`` (ready). Then for each question (a pickled envelope, with the name of its
source and the remote lookups answered so far) it answers ``P``
with the name of the plugin that claimed it, at once, so that a timeout can name the plugin,
and ``D`` with the pickled decision and ACKs. End of input ends the child; on Linux it is also
killed when the gateway dies, even in the middle of a plugin call.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import signal
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from gateway.config import GatewayConfig
from gateway.core.ack import acknowledgements
from gateway.core.metrics import Metrics
from gateway.core.pipeline import Decision, Pipeline, undecided
from gateway.core.plugin_journal import ReadOnlyJournal
from gateway.core.store import open_store
from gateway.model.masking import mask_text
from gateway.model.outcome import ERROR, Issue

log = Logger(namespace="hssk.pipeline")

#: A child that ended before it was ready is started again after this many seconds (doubling up
#: to a minute), so a plugin that cannot load does not make the gateway spin.
RESTART_DELAY_SECONDS = 1.0
MAX_RESTART_DELAY_SECONDS = 60.0
#: How long a child may take to end after its input closed, at shutdown, before it is killed.
STOP_TIMEOUT_SECONDS = 5.0
_HEADER = struct.Struct("!I")
_READY, _CLAIMED, _DECIDED = b"R", b"P", b"D"
_CHILD_INPUT, _CHILD_OUTPUT = 0, 3
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def frame(body: bytes) -> bytes:
    return _HEADER.pack(len(body)) + body


def frames(buffer: bytearray) -> Iterator[bytes]:
    """Take every complete frame off the front of ``buffer``."""
    while len(buffer) >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buffer)
        end = _HEADER.size + size
        if len(buffer) < end:
            return
        body = bytes(buffer[_HEADER.size:end])
        del buffer[:end]
        yield body


class _Child(ProcessProtocol):
    """One child process as the reactor sees it: a frame buffer and the job it is deciding."""

    def __init__(self, pool: ProcessPool, config: bytes) -> None:
        self.pool = pool
        self.config = config
        self.buffer = bytearray()
        self.ready = False
        #: Decisions it made: a child that dies before its first one is restarted with a delay.
        self.decisions = 0
        self.job: Any = None
        self.given_at = 0.0
        #: The intake answered ``job`` AR (it timed out, partly while queued): whatever the child
        #: says about it is dropped, and it is killed if it holds it a full timeout.
        self.job_abandoned = False
        self.expiry: IDelayedCall | None = None
        #: Being killed (its job timed out, or it sent what is not a frame): not counted as
        #: ready, never given a job, and whatever it still sends is ignored.
        self.retired = False
        self.timed_out = False
        self.pid: int | None = None
        self.ended: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # Twisted forgets it before processExited
        self.transport.writeToChild(_CHILD_INPUT, frame(self.config))

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd != _CHILD_OUTPUT:
            return
        self.buffer += data
        for body in frames(self.buffer):
            self.pool.received(self, body)

    def processExited(self, reason) -> None:
        # Not processEnded, which waits for the pipes to close: a process the plugin started may
        # hold them open after the child died.
        self._drain_output()
        self.transport.closeChildFD(_CHILD_INPUT)
        self.transport.closeChildFD(_CHILD_OUTPUT)
        self.pool.ended(self, reason.value)
        self.ended.callback(None)

    def _drain_output(self) -> None:
        """Read what the child wrote before it exited, which Twisted would otherwise deliver a
        piece per reactor turn after this: a decision sent just before dying still counts."""
        reader = self.transport.pipes.get(_CHILD_OUTPUT)
        while reader is not None:
            try:
                data = os.read(reader.fileno(), 1 << 20)
            except OSError:  # EAGAIN: nothing more was written
                return
            if not data:
                return
            self.childDataReceived(_CHILD_OUTPUT, data)

    def cancel_expiry(self) -> None:
        if self.expiry is not None and self.expiry.active():
            self.expiry.cancel()
        self.expiry = None

    def kill(self) -> None:
        try:
            self.transport.signalProcess("KILL")
        except ProcessExitedAlready:  # processExited is on its way
            pass


class ProcessPool:
    """``size`` children deciding for the intake, driven by the reactor.

    The intake sets :attr:`take` (called just before a queued job goes to a child; False when
    the job timed out while it waited) and :attr:`decided` (called with the job, its decision
    and the ACKs the child built). ``clock`` times the ACKs, the restarts and the stop.
    """

    def __init__(self, reactor, config: GatewayConfig, size: int, metrics: Metrics,
                 clock: IReactorTime | None = None) -> None:
        self._reactor = reactor
        self._timeout = config.pipeline.timeout_seconds
        self._clock = clock or reactor
        self._metrics = metrics
        self._config = pickle.dumps(config, pickle.HIGHEST_PROTOCOL)
        self._size = size
        self._children: set[_Child] = set()
        self._idle: deque[_Child] = deque()
        self._queue: deque = deque()
        #: Jobs whose child died before any plugin claimed them: they go first, without ``take``.
        self._retry: deque = deque()
        self._stopping = False
        self._restart_delay = RESTART_DELAY_SECONDS
        self._restarts: set[IDelayedCall] = set()
        self.take: Callable[[Any], bool] = lambda job: True
        self.decided: Callable[[Any, Decision, tuple[str, ...] | None], None] = lambda job, decision, replies: None

    @property
    def size(self) -> int:
        return self._size

    @property
    def waiting(self) -> int:
        """Messages waiting for a free child."""
        return len(self._queue) + len(self._retry)

    @property
    def ready_children(self) -> int:
        return sum(1 for child in self._children if child.ready and not child.retired)

    def start(self) -> None:
        for _ in range(self._size):
            self._spawn()

    def _spawn(self) -> None:
        if self._stopping:
            return
        child = _Child(self, self._config)
        self._children.add(child)
        try:
            self._reactor.spawnProcess(
                # -P: with -m, Python would put the working directory first on the child's path,
                # and a gateway/ folder there would replace the installed code.
                child, sys.executable, [sys.executable, "-P", "-m", "gateway.core.pipeline_process", str(os.getpid())],
                env=os.environ,
                childFDs={_CHILD_INPUT: "w", 1: 1, 2: 2, _CHILD_OUTPUT: "r"})
        except OSError as e:
            self._children.discard(child)
            self._metrics.pipeline_process_restarts.labels(reason="start").inc()
            log.error("a pipeline process could not start: {error}; trying again in {delay:g} s", error=str(e),
                      delay=self._restart_delay)
            self._restart_later()

    def _restart_later(self) -> None:
        def restart() -> None:
            self._restarts.discard(call)
            self._spawn()

        call = self._clock.callLater(self._restart_delay, restart)
        self._restarts.add(call)
        self._restart_delay = min(self._restart_delay * 2, MAX_RESTART_DELAY_SECONDS)

    def submit(self, job) -> None:
        """Decide ``job`` (``envelope``, ``source``, ``request``, ``answers``) in the next idle child."""
        self._queue.append(job)
        self._dispatch()

    def forget(self, job) -> None:
        """``job`` timed out before a child took it: drop it now, not when a child is free, so
        the queue stays within the intake's bound even while no child is ready."""
        try:
            self._queue.remove(job)
        except ValueError:
            pass

    def _dispatch(self) -> None:
        while self._idle and (self._retry or self._queue) and not self._stopping:
            if self._retry:
                job = self._retry.popleft()
            else:
                job = self._queue.popleft()
                if not self.take(job):
                    continue
            child = self._idle.popleft()
            question = (job.source.name, job.envelope, job.request, self._clock.seconds(), job.answers)
            try:
                child.transport.writeToChild(_CHILD_INPUT, frame(pickle.dumps(question, pickle.HIGHEST_PROTOCOL)))
            except KeyError:  # its input is already gone: it is ending, and the job goes to the next one
                self._retry.appendleft(job)
                continue
            child.job = job
            child.given_at = self._clock.seconds()

    def abandon(self, job) -> None:
        """``job`` timed out and was answered AR. Its child is killed and replaced once it has
        held the job for the whole timeout; the time the job spent queued is not the child's
        fault, so until then it may still finish, and its decision is dropped."""
        if job in self._retry:
            self._retry.remove(job)
            return
        for child in self._children:
            if child.job is job:
                child.job_abandoned = True
                held = self._clock.seconds() - child.given_at
                if held >= self._timeout:
                    self._expire(child, job)
                else:
                    child.expiry = self._clock.callLater(self._timeout - held, self._expire, child, job)
                return

    def _expire(self, child: _Child, job) -> None:
        if child.job is job:
            child.job = None
            child.timed_out = True
            self._retire(child)

    def _retire(self, child: _Child) -> None:
        """Kill ``child`` and stop counting on it at once, not when its exit is noticed."""
        if not child.retired:
            child.retired = True
            if child in self._idle:
                self._idle.remove(child)
            if child.ready:
                self._metrics.pipeline_processes.dec()
        child.kill()

    def received(self, child: _Child, body: bytes) -> None:
        kind = body[:1]
        if child.retired or child not in self._children:
            return
        if kind == _READY and not child.ready:
            child.ready = True
            self._metrics.pipeline_processes.inc()
            self._idle.append(child)
            self._dispatch()
        elif kind == _CLAIMED and child.job is not None:
            child.job.plugin = body[1:].decode()
        elif kind == _DECIDED and child.job is not None:
            try:
                decision, replies = pickle.loads(body[1:])
            except Exception as e:  # a decision that does not unpickle (a plugin's odd object): the child is suspect
                log.error("pipeline process {pid} sent a decision that could not be read ({error}); stopping it",
                          pid=child.pid, error=f"{type(e).__name__}: {e}")
                self._retire(child)
                return
            job, child.job = child.job, None
            child.cancel_expiry()
            child.job_abandoned = False
            child.decisions += 1
            if child.decisions == 1:
                self._restart_delay = RESTART_DELAY_SECONDS
            decision.envelope = job.envelope
            self._idle.append(child)
            self.decided(job, decision, replies)
            self._dispatch()
        else:
            log.error("pipeline process {pid} sent an unexpected {kind!r} frame; stopping it", pid=child.pid,
                      kind=kind)
            self._retire(child)

    def ended(self, child: _Child, why: BaseException) -> None:
        self._children.discard(child)
        if child in self._idle:
            self._idle.remove(child)
        if child.ready and not child.retired:
            self._metrics.pipeline_processes.dec()
        job, child.job = child.job, None
        child.cancel_expiry()
        if job is not None and not child.job_abandoned:
            self._lost(job, child, why)
        if self._stopping:
            return
        self._dispatch()  # a job sent back by _lost may find another child idle now
        reason = "timeout" if child.timed_out else "crash" if job is not None else "idle" if child.ready else "start"
        self._metrics.pipeline_process_restarts.labels(reason=reason).inc()
        if child.decisions or child.timed_out:  # it loaded and worked: no reason to wait
            self._spawn()
        else:
            log.error("a pipeline process ended before its first decision ({why}); trying again in {delay:g} s",
                      why=str(why), delay=self._restart_delay)
            self._restart_later()

    def _lost(self, job, child: _Child, why: BaseException) -> None:
        """The child died holding ``job``. No plugin had claimed it yet (the child may have died
        idle, just as the job was sent): it goes to the next child, once. Otherwise it is AE 207,
        journaled for replay, as when a plugin raises."""
        if not job.plugin and not job.resent and not self._stopping:
            job.resent = True
            self._retry.append(job)
            return
        plugin = job.plugin or "unknown"
        log.error("pipeline process {pid} ended while plugin {plugin} decided: {why}", pid=child.pid, plugin=plugin,
                  why=str(why))
        text = (f"the pipeline process deciding this {job.source.noun} ended "
                f"(plugin {plugin}); it is journaled and can be replayed")
        self.decided(job, undecided(job.envelope, ERROR, Issue(207, text, job.source.location), job.plugin,
                                    job.source, job.request, fault=(plugin, "process")), None)

    def stop(self) -> Deferred:
        """Close every child's input, which ends it once idle; kill what is left after a while."""
        self._stopping = True
        for call in self._restarts:
            if call.active():
                call.cancel()
        self._restarts.clear()
        self._idle.clear()
        children = list(self._children)
        for child in children:
            child.cancel_expiry()
            child.transport.closeChildFD(_CHILD_INPUT)
        done = DeferredList([child.ended for child in children])

        def kill_stragglers() -> None:
            for child in children:
                if not child.ended.called:
                    child.kill()

        timer = self._clock.callLater(STOP_TIMEOUT_SECONDS, kill_stragglers)
        done.addCallback(lambda _: timer.cancel() if timer.active() else None)
        return done


def serve(read: Callable[[int], bytes], write: Callable[[bytes], Any]) -> None:
    """The child's life: config, plugins, ready, then one decision per question until EOF."""
    from gateway.core.plugins import build_plugin_manager
    from gateway.logs import start_logging

    buffer = bytearray()

    def questions() -> Iterator[bytes]:
        while True:
            chunk = read(1 << 20)
            if not chunk:
                return
            buffer.extend(chunk)
            yield from frames(buffer)

    incoming = questions()
    config: GatewayConfig = pickle.loads(next(incoming))
    start_logging(config.log_format, config.log_level)
    if config.pipeline.process_cpus:
        try:
            os.sched_setaffinity(0, config.pipeline.process_cpus)
        except OSError as e:  # a container's cpuset may forbid CPUs the machine has: run unpinned, say why
            log.error("pipeline.process_cpus {cpus} could not be applied ({error}); this pipeline process runs "
                      "on the gateway's CPUs", cpus=list(config.pipeline.process_cpus), error=str(e))
    plugins = build_plugin_manager(config)
    plugins.hook.hssk_journal(journal=ReadOnlyJournal(open_store(config)))
    pipeline = Pipeline(plugins.hook, config)
    write(frame(_READY))
    progress = _Progress(write)
    for question in incoming:
        name, envelope, request, now, answers = pickle.loads(question)
        source = pipeline.sources[name]
        decision = pipeline.decide(envelope, progress, request, source=name, answers=answers)
        try:
            answer = _answer(decision, source.hl7, now)
        except Exception as e:  # what a plugin put in the decision does not pickle: the sender's AE, not a dead child
            plugin = decision.plugin or "unknown"
            log.error("the decision of plugin {plugin} could not be sent to the gateway: {error}", plugin=plugin,
                      error=f"{type(e).__name__}: {e}")
            text = (f"plugin {plugin} returned data the gateway cannot carry ({type(e).__name__}); the "
                    f"{source.noun} is journaled and can be replayed once the plugin is fixed")
            decision = undecided(envelope, ERROR, Issue(207, text, source.location),
                                 decision.plugin, source, request, fault=(plugin, "serialize"))
            answer = _answer(decision, source.hl7, now)
        write(frame(answer))


def _answer(decision: Decision, hl7: bool, now: float) -> bytes:
    """The ``D`` frame's body: the decision without its envelope (the gateway has it) and its ACKs
    (for an HL7 source's input)."""
    replies = None
    if decision.ack_code is not None and hl7:
        try:
            replies = tuple(acknowledgements(decision.message, decision.ack_code, decision.issues, now,
                                             decision.ack_profile))
        except Exception as e:  # the gateway's writer tries again, and a failure there costs this message only
            log.error("building the ACK failed: {error}", error=mask_text(str(e)))
    envelope, decision.envelope = decision.envelope, None
    try:
        return _DECIDED + pickle.dumps((decision, replies), pickle.HIGHEST_PROTOCOL)
    finally:
        decision.envelope = envelope


class _Progress:
    """Stands in for the intake's job: the claiming plugin's name goes to the gateway at once."""

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write

    @property
    def plugin(self) -> str:
        return ""

    @plugin.setter
    def plugin(self, name: str) -> None:
        self._write(frame(_CLAIMED + name.encode()))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _die_with(parent: int) -> None:
    """Be killed when the gateway dies (Linux), even while a plugin holds this process: the end
    of input only ends a child between two messages."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the gateway died before that took effect
        os._exit(1)


def main(argv: list[str]) -> None:
    _die_with(int(argv[0]))
    # Ctrl-C, and systemd's SIGTERM to the whole unit, reach every process in the group: the
    # gateway lets the children finish the messages they hold, then closes their input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Talk through private copies of the two pipes (os.dup's are not inherited), so a process a
    # plugin starts cannot hold them open after this one ends.
    read_fd, write_fd = os.dup(_CHILD_INPUT), os.dup(_CHILD_OUTPUT)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, _CHILD_INPUT)
    os.close(null)
    os.close(_CHILD_OUTPUT)
    serve(lambda size: os.read(read_fd, size), lambda data: _write_all(write_fd, data))


if __name__ == "__main__":
    main(sys.argv[1:])
