"""Delivery scheduling: one dispatcher per destination, with backoff, a circuit breaker and
per-person ordering on top of the outbox table (:mod:`gateway.core.outbox`)."""
from __future__ import annotations

import random
from collections.abc import Callable

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.config import DestinationConfig
from gateway.core.destination import DEAD, DELIVERED, RETRY, Delivery, DeliveryResult, Destination
from gateway.core.metrics import Metrics
from gateway.core.outbox import PENDING, Settled, claim_due, record_circuit, record_results
from gateway.model.masking import mask_text

log = Logger(namespace="hssk.dispatch")


def backoff_delay(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base · 2^attempts)]."""
    return rng.uniform(0, min(cap, base * (2 ** min(attempts, 62))))


class CircuitBreaker:
    """Closed → open after ``failures`` retry-class failures in a row; after ``open_seconds`` one
    probe is let through (half-open); its success closes the circuit, its failure reopens it."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, failures: int, open_seconds: float, clock: IReactorTime,
                 on_change: Callable[[str], None] | None = None) -> None:
        self._threshold = failures
        self._open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._state = self.CLOSED
        #: Told every new state, so operators outside this process can see it.
        self._on_change = on_change

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)

    def allowance(self, in_flight: int, capacity: int) -> int:
        """How many new deliveries may start now."""
        if self.state == self.OPEN:
            if self._clock.seconds() - self._opened_at < self._open_seconds:
                return 0
            self.state = self.HALF_OPEN
        if self.state == self.HALF_OPEN:
            return 1 if in_flight == 0 else 0
        return capacity

    @property
    def reopens_at(self) -> float:
        return self._opened_at + self._open_seconds

    def record(self, success: bool) -> None:
        if success:
            self._failures = 0
            self.state = self.CLOSED
            return
        self._failures += 1
        if self.state == self.HALF_OPEN or self._failures >= self._threshold:
            if self.state != self.OPEN:
                log.warn("circuit opened after {failures} failures", failures=self._failures)
            self.state = self.OPEN
            self._opened_at = self._clock.seconds()


_CIRCUIT_VALUES = {CircuitBreaker.CLOSED: 0, CircuitBreaker.HALF_OPEN: 1, CircuitBreaker.OPEN: 2}


class Dispatcher:
    """Delivers one destination's rows: keeps at most ``max_in_flight`` going, and in one writer
    task per cycle records the results that came in and claims as many due rows as there are
    free slots. Wakes on new work, on results, on a poll timer and when a backoff ends."""

    def __init__(self, config: DestinationConfig, destination: Destination, writer, clock: IReactorTime,
                 metrics: Metrics, rng: random.Random | None = None) -> None:
        self.config = config
        self.destination = destination
        self._writer = writer
        self._clock = clock
        self._metrics = metrics
        self._rng = rng or random.Random()
        self.circuit = CircuitBreaker(config.circuit_failures, config.circuit_open_seconds, clock,
                                      on_change=self._circuit_changed)
        self.paused = False
        self._in_flight: dict[int, Delivery] = {}
        self._cycling = False
        self._again = False
        self._settled: list[Settled] = []
        self._soon_call = None
        self._wake_call = None
        self._in_flight_gauge = metrics.outbox_in_flight.labels(destination=config.name)
        self._circuit_gauge = metrics.circuit_state.labels(destination=config.name)
        self._latency = metrics.delivery_latency.labels(destination=config.name)
        self._attempts: dict[tuple[str, str], object] = {}
        self._stopping = False
        self._drained: Deferred | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def wake(self) -> None:
        """Record what has settled and claim due work, in one writer task (one commit) per
        cycle. Runs when rows were committed, a delivery ended, or a timer fired."""
        if self._cycling:
            self._again = True
            return
        settled, self._settled = self._settled, []
        claim = 0
        if not (self._stopping or self.paused):
            running = len(self._in_flight) - len(settled)
            claim = self.circuit.allowance(running, self.config.max_in_flight - running)
            if claim <= 0 and self.circuit.state == CircuitBreaker.OPEN:
                self._wake_at(self.circuit.reopens_at)
        if not settled and claim <= 0:
            self._check_drained()
            return
        finished = {s.row_id for s in settled}
        busy = frozenset(d.ordering_key for row_id, d in self._in_flight.items() if row_id not in finished)

        def cycle(conn, now):
            now = self._clock.seconds()
            if settled:
                record_results(conn, now, settled)
            return claim_due(conn, now, self.name, claim, busy) if claim > 0 else []

        self._cycling = True
        d = self._writer.run(cycle)
        d.addCallbacks(self._cycled, self._cycle_failed, callbackArgs=(settled, claim), errbackArgs=(settled,))

    def _cycled(self, claimed: list[Delivery], settled: list[Settled], asked: int) -> None:
        self._cycling = False
        for s in settled:
            self._in_flight.pop(s.row_id, None)
            self._in_flight_gauge.dec()
            if s.next_attempt_at is not None and not self._stopping:
                self._wake_at(s.next_attempt_at)
        for delivery in claimed:
            self._in_flight[delivery.row_id] = delivery
            self._in_flight_gauge.inc()
            self.destination.deliver(delivery).addBoth(self._delivered, delivery)
        if self._again or self._settled or (asked and len(claimed) == asked):
            self._again = False
            self.wake()
        self._check_drained()

    def _cycle_failed(self, failure, settled: list[Settled]) -> None:
        self._cycling = False
        log.error("recording {count} results / claiming rows for {destination} failed: {error}",
                  count=len(settled), destination=self.name, error=failure.getErrorMessage())
        if self._stopping:
            # The rows stay in flight in the journal; the next start puts them back to pending.
            for s in settled:
                self._in_flight.pop(s.row_id, None)
            self._check_drained()
            return
        self._settled = settled + self._settled
        self._soon(1.0)

    def _circuit_changed(self, state: str) -> None:
        """Shown by the gauge, and written where ``outbox status`` reads it (the journal)."""
        self._circuit_gauge.set(_CIRCUIT_VALUES[state])
        d = self._writer.run(lambda conn, now: record_circuit(conn, self._clock.seconds(), self.name, state))
        d.addErrback(lambda f: log.error(
            "recording the circuit state of {destination} failed: {error}", destination=self.name,
            error=f.getErrorMessage()))

    def _delivered(self, result, delivery: Delivery) -> None:
        if not isinstance(result, DeliveryResult):
            error = mask_text(getattr(result, "getErrorMessage", lambda: str(result))())
            log.error("destination {destination} raised instead of answering: {error}", destination=self.name,
                      error=error)
            result = DeliveryResult(RETRY, "error", f"internal error in destination: {error}")
        now = self._clock.seconds()
        settled = self._settle(delivery, result, now)
        counter = self._attempts.get((settled.state, result.label))
        if counter is None:
            counter = self._attempts[(settled.state, result.label)] = self._metrics.delivery_attempts.labels(
                destination=self.name, outcome=settled.state, result=result.label)
        counter.inc()
        if settled.state == DELIVERED:
            self._latency.observe(max(0.0, now - delivery.created_at))
        elif settled.state == DEAD:
            # The reason often quotes the store's answer, which may name the patient: it stays on
            # the row (outbox show / the admin API), and the log says where to read it.
            log.warn("row {row_id} for {destination} dead-lettered ({result}); the reason is on the row: "
                     "hssk-gateway outbox show {row_id}", row_id=delivery.row_id, destination=self.name,
                     result=result.label)
        self.circuit.record(result.outcome != RETRY)
        self._settled.append(settled)
        if self._stopping:
            self.wake()
        else:
            self._soon(0)

    def _soon(self, delay: float) -> None:
        """One wake for every result that lands in the same reactor turn: they share a commit."""
        if self._soon_call is None or not self._soon_call.active():
            self._soon_call = self._clock.callLater(delay, self._soon_fired)

    def _soon_fired(self) -> None:
        self._soon_call = None
        self.wake()

    def _settle(self, delivery: Delivery, result: DeliveryResult, now: float) -> Settled:
        attempts = delivery.attempts + 1
        if result.outcome == DELIVERED:
            return Settled(delivery.row_id, DELIVERED, result.label, "", None, delivery.created_at, result.detail)
        if result.outcome == DEAD:
            return Settled(delivery.row_id, DEAD, result.label, result.reason, None, delivery.created_at,
                           result.detail)
        if attempts >= self.config.max_attempts:
            return Settled(delivery.row_id, DEAD, result.label,
                           f"gave up after {attempts} attempts (max_attempts); last: {result.reason}", None,
                           delivery.created_at, result.detail)
        delay = backoff_delay(attempts - 1, self.config.backoff_base_seconds, self.config.backoff_cap_seconds,
                              self._rng)
        if result.retry_after is not None:
            delay = max(delay, min(result.retry_after, self.config.backoff_cap_seconds))
        due = now + delay
        if due - delivery.created_at > self.config.max_age_seconds:
            return Settled(delivery.row_id, DEAD, result.label,
                           f"older than {self.config.max_age_seconds:g} s (max_age_seconds); last: {result.reason}",
                           None, delivery.created_at, result.detail)
        return Settled(delivery.row_id, PENDING, result.label, result.reason, due, delivery.created_at, result.detail)

    def _wake_at(self, when: float) -> None:
        delay = max(0.0, when - self._clock.seconds())
        if self._wake_call is not None and self._wake_call.active():
            if self._wake_call.getTime() <= self._clock.seconds() + delay:
                return
            self._wake_call.cancel()
        self._wake_call = self._clock.callLater(delay, self._timer_wake)

    def _timer_wake(self) -> None:
        self._wake_call = None
        self.wake()

    def _busy(self) -> bool:
        return bool(self._in_flight or self._cycling or self._settled)

    def _check_drained(self) -> None:
        if self._drained is not None and not self._busy():
            drained, self._drained = self._drained, None
            drained.callback(None)

    @inlineCallbacks
    def stop(self):
        """Stop claiming; let deliveries in flight finish (each is bounded by its destination's
        timeouts) and be recorded; close the destination. Waiting is event-driven, not on the
        clock, so a stopped test clock cannot hang shutdown."""
        self._stopping = True
        for call in (self._wake_call, self._soon_call):
            if call is not None and call.active():
                call.cancel()
        self.wake()
        if self._busy():
            self._drained = Deferred()
            yield self._drained
        yield self.destination.close()
