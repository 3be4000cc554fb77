"""Delivery scheduling: one dispatcher per destination, with backoff, a circuit breaker and
per-person ordering on top of the outbox table (:mod:`gateway.core.outbox`)."""
from __future__ import annotations

import random

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.config import DestinationConfig
from gateway.core.metrics import Metrics
from gateway.core.outbox import PENDING, Settled, claim_due, record_results
from gateway.destinations import DEAD, DELIVERED, RETRY, Delivery, DeliveryResult, Destination

log = Logger(namespace="hssk.dispatch")


def backoff_delay(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base · 2^attempts)]."""
    return rng.uniform(0, min(cap, base * (2 ** min(attempts, 62))))


class CircuitBreaker:
    """Closed → open after ``failures`` retry-class failures in a row; after ``open_seconds`` one
    probe is let through (half-open); its success closes the circuit, its failure reopens it."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, failures: int, open_seconds: float, clock: IReactorTime) -> None:
        self._threshold = failures
        self._open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self.state = self.CLOSED

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


class Dispatcher:
    """Delivers one destination's rows: claims due rows, keeps at most ``max_in_flight`` going,
    records results in groups, and wakes on new work, on a poll timer and when a backoff ends."""

    def __init__(self, config: DestinationConfig, destination: Destination, writer, clock: IReactorTime,
                 metrics: Metrics, rng: random.Random | None = None) -> None:
        self.config = config
        self.destination = destination
        self._writer = writer
        self._clock = clock
        self._metrics = metrics
        self._rng = rng or random.Random()
        self.circuit = CircuitBreaker(config.circuit_failures, config.circuit_open_seconds, clock)
        self.paused = False
        self._in_flight: dict[int, Delivery] = {}
        self._claiming = False
        self._again = False
        self._settled: list[Settled] = []
        self._flush_call = None
        self._wake_call = None
        self._stopping = False
        self._drained: Deferred | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def wake(self) -> None:
        """Look for due work now (new rows were committed, or a timer fired)."""
        if self._stopping or self.paused:
            return
        if self._claiming:
            self._again = True
            return
        allowance = self.circuit.allowance(len(self._in_flight), self.config.max_in_flight - len(self._in_flight))
        self._metrics.circuit_state.labels(destination=self.name).set(
            {"closed": 0, "half_open": 1, "open": 2}[self.circuit.state])
        if allowance <= 0:
            if self.circuit.state == CircuitBreaker.OPEN:
                self._wake_at(self.circuit.reopens_at)
            return
        self._claiming = True
        busy = frozenset(d.ordering_key for d in self._in_flight.values())
        d = self._writer.run(lambda conn, now: claim_due(conn, self._clock.seconds(), self.name, allowance, busy))
        d.addCallbacks(self._claimed, self._claim_failed)

    def _claimed(self, deliveries: list[Delivery]) -> None:
        self._claiming = False
        self._check_drained()
        for delivery in deliveries:
            self._in_flight[delivery.row_id] = delivery
            self._metrics.outbox_in_flight.labels(destination=self.name).inc()
            self.destination.deliver(delivery).addBoth(self._delivered, delivery)
        if self._again or (deliveries and len(self._in_flight) < self.config.max_in_flight):
            self._again = False
            self.wake()

    def _claim_failed(self, failure) -> None:
        self._claiming = False
        self._check_drained()
        log.error("claiming rows for {destination} failed: {error}", destination=self.name,
                  error=failure.getErrorMessage())

    def _delivered(self, result, delivery: Delivery) -> None:
        if not isinstance(result, DeliveryResult):
            log.error("destination {destination} raised instead of answering: {error}", destination=self.name,
                      error=getattr(result, "getErrorMessage", lambda: str(result))())
            result = DeliveryResult(RETRY, "error", f"internal error in destination: {result}")
        now = self._clock.seconds()
        settled = self._settle(delivery, result, now)
        self._metrics.delivery_attempts.labels(destination=self.name, outcome=settled.state,
                                               result=result.label).inc()
        if settled.state == DELIVERED:
            self._metrics.delivery_latency.labels(destination=self.name).observe(max(0.0, now - delivery.created_at))
        elif settled.state == DEAD:
            log.warn("row {row_id} for {destination} dead-lettered: {reason}", row_id=delivery.row_id,
                     destination=self.name, reason=settled.reason[:300])
        self.circuit.record(result.outcome != RETRY)
        self._settled.append(settled)
        if self._stopping:
            self._flush_settled()
        elif self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush_settled)

    def _settle(self, delivery: Delivery, result: DeliveryResult, now: float) -> Settled:
        attempts = delivery.attempts + 1
        if result.outcome == DELIVERED:
            return Settled(delivery.row_id, DELIVERED, result.label, "", None, delivery.created_at)
        if result.outcome == DEAD:
            return Settled(delivery.row_id, DEAD, result.label, result.reason, None, delivery.created_at)
        if attempts >= self.config.max_attempts:
            return Settled(delivery.row_id, DEAD, result.label,
                           f"gave up after {attempts} attempts (max_attempts); last: {result.reason}", None,
                           delivery.created_at)
        delay = backoff_delay(attempts - 1, self.config.backoff_base_seconds, self.config.backoff_cap_seconds,
                              self._rng)
        if result.retry_after is not None:
            delay = max(delay, min(result.retry_after, self.config.backoff_cap_seconds))
        due = now + delay
        if due - delivery.created_at > self.config.max_age_seconds:
            return Settled(delivery.row_id, DEAD, result.label,
                           f"older than {self.config.max_age_seconds:g} s (max_age_seconds); last: {result.reason}",
                           None, delivery.created_at)
        return Settled(delivery.row_id, PENDING, result.label, result.reason, due, delivery.created_at)

    def _flush_settled(self) -> None:
        self._flush_call = None
        settled, self._settled = self._settled, []
        if not settled:
            return
        d = self._writer.run(lambda conn, now: record_results(conn, self._clock.seconds(), settled))
        d.addCallbacks(self._recorded, self._record_failed, callbackArgs=(settled,), errbackArgs=(settled,))

    def _recorded(self, _, settled: list[Settled]) -> None:
        for s in settled:
            self._in_flight.pop(s.row_id, None)
            self._metrics.outbox_in_flight.labels(destination=self.name).dec()
            if s.next_attempt_at is not None and not self._stopping:
                self._wake_at(s.next_attempt_at)
        self.wake()
        self._check_drained()

    def _record_failed(self, failure, settled: list[Settled]) -> None:
        log.error("recording {count} delivery results for {destination} failed: {error}; they will be retried "
                  "from the journal", count=len(settled), destination=self.name, error=failure.getErrorMessage())
        if self._stopping:
            # The rows stay in flight in the journal; the next start puts them back to pending.
            for s in settled:
                self._in_flight.pop(s.row_id, None)
            self._check_drained()
            return
        self._settled = settled + self._settled
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(1.0, self._flush_settled)

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
        return bool(self._in_flight or self._claiming or self._settled)

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
        for call in (self._wake_call, self._flush_call):
            if call is not None and call.active():
                call.cancel()
        self._flush_settled()
        if self._busy():
            self._drained = Deferred()
            yield self._drained
        yield self.destination.close()
