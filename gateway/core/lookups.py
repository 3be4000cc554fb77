"""Remote lookups a decision waits for (a card checked at the BHXH portal), run on the reactor.

A plugin that needs a remote answer before it can check a record set asks for it from
``hssk_lookups`` (:mod:`gateway.core.hookspecs`). The pipeline then stops short of its check
step and returns the lookups it still lacks; the worker is free at once. The intake hands them
to :class:`LookupRunner`, which performs them on the reactor through ``hssk_perform_lookup`` —
a Deferred each, never a blocked thread — each within its ``timeout_seconds`` and at most
``max_concurrent`` at a time per ``service``, and the message goes back to the workers with the
answers, where the pipeline decides it again from the start with them in hand
(``hssk_check_lookups``). Deciding again costs one more normalisation, and buys a decision that
needs no state kept between the two halves, so it works the same in a child process
(``pipeline.isolation = "processes"``). A lookup that fails or times out is answered all the
same, saying so, and the plugin decides what that means for the message.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.core.metrics import Metrics
from gateway.model.masking import mask_text

log = Logger(namespace="hssk.lookups")

ANSWERED, FAILED, TIMEOUT, NOT_PERFORMED = "answered", "failed", "timeout", "not_performed"
#: Lookups one message may ask for in all, and the rounds of asking (a lookup that depends on
#: another's answer is a second round): a plugin that keeps asking is a bug, not a message.
MAX_LOOKUPS = 16
MAX_ROUNDS = 3


@dataclass(frozen=True)
class Lookup:
    """One question to a remote service. ``service`` names it (and picks the plugin that performs
    it, the concurrency cap and the metric label: keep it a short fixed word, ``bhxh_card``),
    ``key`` is what is asked (a card number; never logged unmasked), and ``params`` anything else
    the performer needs, as plain data. Two lookups with the same fields are one question, asked
    once per message. ``timeout_seconds`` bounds the wait, queueing included; ``max_concurrent``
    caps the lookups of this service in flight across the gateway (the first lookup of a service
    sets it)."""

    service: str
    key: str
    params: tuple[tuple[str, str], ...] = ()
    timeout_seconds: float = 5.0
    max_concurrent: int = 8

    def __post_init__(self) -> None:
        if not self.timeout_seconds > 0 or self.max_concurrent < 1:
            raise ValueError(f"lookup {self.service!r}: timeout_seconds must be positive and max_concurrent at "
                             f"least 1")


@dataclass(frozen=True)
class LookupAnswer:
    """What became of a :class:`Lookup`: ``outcome`` is ``answered`` (``value`` is what the
    performer's Deferred fired with), ``failed`` (it raised or failed; ``error`` says how),
    ``timeout`` (no answer within ``timeout_seconds``) or ``not_performed`` (nothing could ask:
    a replay or a dry run in a process of its own, ``error`` says which)."""

    outcome: str
    value: object = None
    error: str = ""

    @property
    def answered(self) -> bool:
        return self.outcome == ANSWERED


class LookupRunner:
    """Performs lookups for the intake, on the reactor: ``hook`` is the gateway's plugin hook
    relay (the plugins of the gateway's own process), ``reactor`` what performers make requests
    with, ``clock`` what times them out."""

    def __init__(self, hook, reactor, clock: IReactorTime, metrics: Metrics) -> None:
        self._hook = hook
        self.reactor = reactor
        self._clock = clock
        self._metrics = metrics
        self._limits: dict[str, DeferredSemaphore] = {}

    def perform(self, lookups: Iterable[Lookup]) -> Deferred:
        """Fires with ``{lookup: LookupAnswer}`` once each has an answer; never fails.
        Cancelling it cancels the lookups still running (their answers say ``failed``)."""
        lookups = tuple(lookups)
        return gatherResults([self._one(lookup) for lookup in lookups]).addCallback(
            lambda answers: dict(zip(lookups, answers)))

    def _one(self, lookup: Lookup) -> Deferred:
        started = self._clock.seconds()
        limit = self._limits.get(lookup.service)
        if limit is None:
            limit = self._limits[lookup.service] = DeferredSemaphore(lookup.max_concurrent)
        waiting = self._metrics.lookups_waiting.labels(service=lookup.service)
        waiting.inc()
        placed = []

        def call(lookup: Lookup) -> Deferred:
            placed.append(True)
            waiting.dec()
            return self._call(lookup)

        d = limit.run(call, lookup)
        # Not Deferred.addTimeout: cancelling a request in flight fails it with the client's own
        # error (twisted.web's ResponseNeverReceived), which addTimeout cannot tell from a failure.
        timed_out = []
        timer = self._clock.callLater(lookup.timeout_seconds, lambda: (timed_out.append(True), d.cancel()))

        def answered(value: object) -> LookupAnswer:
            if timer.active():
                timer.cancel()
            return self._count(lookup, started, LookupAnswer(ANSWERED, value))

        def failed(failure: Failure) -> LookupAnswer:
            if timer.active():
                timer.cancel()
            if not placed:  # timed out or cancelled while waiting for a place
                waiting.dec()
            if timed_out:
                answer = LookupAnswer(TIMEOUT, error=f"no answer within {lookup.timeout_seconds:g} s")
            elif failure.check(CancelledError):
                answer = LookupAnswer(FAILED, error="cancelled: the message was answered without it")
            else:
                answer = LookupAnswer(FAILED, error=mask_text(f"{failure.type.__name__}: {failure.getErrorMessage()}"))
            log.warn("lookup {service} {outcome}: {error}", service=lookup.service, outcome=answer.outcome,
                     error=answer.error)
            return self._count(lookup, started, answer)

        return d.addCallbacks(answered, failed)

    def _call(self, lookup: Lookup) -> Deferred:
        performed = self._hook.hssk_perform_lookup(lookup=lookup, reactor=self.reactor)
        if performed is None:
            raise LookupError(f"no plugin performs lookups of service {lookup.service!r} (hssk_perform_lookup)")
        return performed

    def _count(self, lookup: Lookup, started: float, answer: LookupAnswer) -> LookupAnswer:
        self._metrics.lookups.labels(service=lookup.service, outcome=answer.outcome).inc()
        self._metrics.lookup_duration.labels(service=lookup.service).observe(self._clock.seconds() - started)
        return answer


def not_performed(lookups: Iterable[Lookup], why: str) -> dict[Lookup, LookupAnswer]:
    """Answers for lookups nobody can perform here (a replay in a process without the gateway's
    reactor), so that the plugin decides as it would for a remote service that is down."""
    return {lookup: LookupAnswer(NOT_PERFORMED, error=why) for lookup in lookups}
