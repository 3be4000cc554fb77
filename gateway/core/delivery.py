"""The delivery service: starts a dispatcher per destination, recovers rows a crash left in
flight, keeps the outbox gauges and pause flags current, prunes delivered rows, and tells
intake when to refuse work (outbox too deep, disk too full)."""
from __future__ import annotations

import shutil

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from gateway.config import GatewayConfig
from gateway.core.dispatch import Dispatcher
from gateway.core.metrics import Metrics
from gateway.core.outbox import IN_FLIGHT, PENDING, STATES, destination_status, purge_delivered, recover_in_flight
from gateway.core.store import JournalWriter, Store
from gateway.destinations.factory import build_destination

log = Logger(namespace="hssk.delivery")


class DeliveryService:
    def __init__(self, config: GatewayConfig, store: Store, writer: JournalWriter, reactor, clock,
                 metrics: Metrics) -> None:
        self.config = config
        self._store = store
        self._writer = writer
        self._reactor = reactor
        self._clock = clock
        self._metrics = metrics
        self.dispatchers: dict[str, Dispatcher] = {
            d.name: Dispatcher(d, build_destination(d, reactor, config.data_dir), writer, clock, metrics)
            for d in config.destinations if d.enabled and d.kind != "batch"}
        self.status: dict[str, dict] = {}
        self.pending_total = 0
        self.free_disk_bytes: int | None = None
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = clock
        self._prune_loop = LoopingCall(self.prune)
        self._prune_loop.clock = clock

    @inlineCallbacks
    def start(self):
        recovered = yield self._writer.run(recover_in_flight)
        if recovered:
            log.info("{count} outbox rows left in flight by the last run are pending again", count=recovered)
        yield self.refresh()
        self._loop.start(self.config.outbox.poll_interval_seconds, now=False)
        self._prune_loop.start(max(60.0, self.config.outbox.poll_interval_seconds), now=False)

    def rows_committed(self, destinations: set[str]) -> None:
        """New rows were committed for these destinations: start delivering them now."""
        for name in destinations:
            dispatcher = self.dispatchers.get(name)
            if dispatcher is not None:
                dispatcher.wake()

    def refusal_reason(self) -> str | None:
        """Why intake must refuse new work right now, or None (invariant 6: never accept what
        cannot be stored)."""
        if self.pending_total >= self.config.outbox.max_pending:
            return (f"the outbox holds {self.pending_total} undelivered rows, its limit (outbox.max_pending); "
                    f"send again later")
        if self.free_disk_bytes is not None and self.free_disk_bytes < self.config.store.min_free_disk_bytes:
            return (f"free disk {self.free_disk_bytes} bytes is below the floor (store.min_free_disk_bytes); "
                    f"send again later")
        return None

    def stale_destinations(self) -> dict[str, float]:
        """Destinations whose oldest undelivered row is older than their alert threshold."""
        thresholds = {d.name: d.alert_pending_age_seconds for d in self.config.destinations}
        return {name: entry["oldest_pending_age_seconds"] for name, entry in self.status.items()
                if name in thresholds and entry["oldest_pending_age_seconds"] > thresholds[name]}

    def _read_status(self, now: float) -> tuple[dict, int]:
        """Runs in the thread pool on its own connection, so a refresh still running at shutdown
        shares nothing with the reactor."""
        free = shutil.disk_usage(self.config.data_dir).free
        conn = self._store.connect()
        try:
            return destination_status(conn, now), free
        finally:
            conn.close()

    @inlineCallbacks
    def refresh(self):
        """Re-read per-destination counts and pause flags (an operator may have changed them
        from the CLI, another process) and wake every dispatcher for rows whose backoff ended."""
        status, free = yield deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._read_status,
                                                 self._clock.seconds())
        self.status, self.free_disk_bytes = status, free
        self.pending_total = sum(entry[PENDING] + entry[IN_FLIGHT] for entry in status.values())
        for name, entry in status.items():
            for state in STATES:
                self._metrics.outbox_rows.labels(destination=name, state=state).set(entry[state])
            self._metrics.outbox_oldest_pending_age.labels(destination=name).set(entry["oldest_pending_age_seconds"])
            self._metrics.destination_paused.labels(destination=name).set(int(entry["paused"]))
        for name, dispatcher in self.dispatchers.items():
            dispatcher.paused = bool(status.get(name, {}).get("paused"))
            dispatcher.wake()

    @inlineCallbacks
    def prune(self):
        """Delete delivered rows past the retention, a small batch per commit until none are left."""
        before = self._clock.seconds() - self.config.outbox.retention_days * 86400
        limit = self.config.outbox.prune_batch
        while True:
            removed = yield self._writer.run(lambda conn, now: purge_delivered(conn, before, limit))
            self._metrics.pruned_rows.inc(removed)
            if removed < limit:
                return

    @inlineCallbacks
    def stop(self):
        for loop in (self._loop, self._prune_loop):
            if loop.running:
                loop.stop()
        for dispatcher in self.dispatchers.values():
            yield dispatcher.stop()

    def wait_idle(self) -> Deferred:
        """For tests and `outbox flush`: fires when no dispatcher has a delivery in flight."""
        from twisted.internet.task import deferLater

        def check():
            if any(d.in_flight for d in self.dispatchers.values()):
                return deferLater(self._clock, 0.01, check)
            return None

        return deferLater(self._clock, 0, check)
