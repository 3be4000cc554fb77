"""The delivery service: starts a dispatcher per destination (a batch runner per ``batch``
destination), recovers rows a crash left in flight, keeps the outbox gauges and pause flags
current, runs the batches operators ask for with ``outbox flush``, prunes delivered rows, and
tells intake when to refuse work (outbox too deep, disk too full)."""
from __future__ import annotations

import shutil
from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from gateway.config import GatewayConfig
from gateway.core.dispatch import Dispatcher
from gateway.core.metrics import Metrics
from gateway.core.outbox import (STATES, UNDELIVERED, destination_status, prune_bodies, purge_delivered,
                                 recover_in_flight, reset_circuits)
from gateway.core.store import JournalWriter, Store
from gateway.core.batch import BatchNotDelivered, BatchRunner
from gateway.core.destination_kinds import ConfiguredDestination, DestinationContext, batched_names

log = Logger(namespace="hssk.delivery")


class DeliveryService:
    def __init__(self, config: GatewayConfig, destinations: Sequence[ConfiguredDestination], store: Store,
                 writer: JournalWriter, reactor, clock, metrics: Metrics) -> None:
        """``destinations``: ``config.destinations`` with their kinds (``DestinationKinds.configure``)."""
        self.config = config
        self._store = store
        self._writer = writer
        self._reactor = reactor
        self._clock = clock
        self._metrics = metrics
        context = DestinationContext(reactor, clock, config.data_dir)
        self.batched = batched_names(destinations)
        self.dispatchers: dict[str, Dispatcher] = {
            d.name: Dispatcher(d.config, d.build(context), writer, clock, metrics)
            for d in destinations if d.config.enabled and not d.kind.batched}
        self.batches: dict[str, BatchRunner] = {
            d.name: BatchRunner(d.config, d.settings, d.build(context), writer, store, clock, reactor, metrics)
            for d in destinations if d.config.enabled and d.kind.batched}
        #: The last ``destination_state.flush_requested_at`` acted on, per batch destination.
        #: Seeded by the first refresh without acting: a request older than this process was
        #: made to the process that was running then.
        self._flush_seen: dict[str, float | None] = {}
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
        names = list(self.dispatchers)
        yield self._writer.run(lambda conn, now: reset_circuits(conn, self._clock.seconds(), names))
        yield self.refresh()
        for runner in self.batches.values():
            runner.start()
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

    def flush(self, name: str) -> Deferred:
        """Run the batch of destination ``name`` now, with everything pending up to now. Fires
        with the number of rows the sink accepted (0 when none were pending); fails with
        :class:`BatchNotDelivered` when ``name`` is not an enabled batch destination or the sink
        refused the file (its rows stay pending)."""
        runner = self.batches.get(name)
        if runner is None:
            known = ", ".join(sorted(self.batches)) or "none configured"
            return fail(BatchNotDelivered(name, 0, f"not an enabled batch destination (batch destinations: {known})"))
        return runner.flush()

    def stale_destinations(self) -> dict[str, float]:
        """Destinations whose oldest undelivered row is older than their alert threshold. A batch
        destination holds rows for a whole period by design, so its threshold starts then."""
        thresholds = {d.name: d.alert_pending_age_seconds
                      + (self.batches[d.name].period_seconds if d.name in self.batches else 0.0)
                      for d in self.config.destinations}
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
        self.pending_total = sum(entry[state] for entry in status.values() for state in UNDELIVERED)
        for name, entry in status.items():
            for state in STATES:
                self._metrics.outbox_rows.labels(destination=name, state=state).set(entry[state])
            self._metrics.outbox_oldest_pending_age.labels(destination=name).set(entry["oldest_pending_age_seconds"])
            self._metrics.destination_paused.labels(destination=name).set(int(entry["paused"]))
        for name, dispatcher in self.dispatchers.items():
            dispatcher.paused = bool(status.get(name, {}).get("paused"))
            dispatcher.wake()
        for name, runner in self.batches.items():
            entry = status.get(name, {})
            runner.paused = bool(entry.get("paused"))
            self._notice_flush_request(name, runner, entry.get("flush_requested_at"))

    def _notice_flush_request(self, name: str, runner: BatchRunner, requested_at: float | None) -> None:
        """``outbox flush DEST`` (CLI or admin API) wrote a newer request: run that batch now.
        Only a strictly newer request counts, so two overlapping refreshes run it once."""
        if name not in self._flush_seen:
            self._flush_seen[name] = requested_at
            return
        seen = self._flush_seen[name]
        if requested_at is None or (seen is not None and requested_at <= seen):
            return
        self._flush_seen[name] = requested_at
        log.info("flush of {destination} requested: sending its pending rows now", destination=name)
        runner.flush().addCallbacks(
            lambda rows: log.info("requested flush of {destination}: {rows} rows delivered", destination=name,
                                  rows=rows),
            lambda failure: log.warn("requested flush of {destination} not delivered: {error}", destination=name,
                                     error=failure.getErrorMessage()))

    @inlineCallbacks
    def prune(self):
        """Delete delivered rows past the retention, then blank the bodies of messages past theirs
        that have nothing to deliver (rejected ones after ``outbox.rejected_retention_days``), a
        small batch per commit until none are left, so intake never waits long for the writer."""
        now = self._clock.seconds()
        outbox = self.config.outbox
        limit = outbox.prune_batch
        before = now - outbox.retention_days * 86400
        while True:
            removed = yield self._writer.run(lambda conn, _: purge_delivered(conn, before, limit))
            self._metrics.pruned_rows.inc(removed)
            if removed < limit:
                break
        for statuses, days in ((("accepted", "ignored"), outbox.retention_days),
                               (("error", "rejected"), outbox.rejected_retention)):
            cutoff = now - days * 86400
            while True:
                counts = yield self._writer.run(lambda conn, _: prune_bodies(conn, cutoff, statuses, limit))
                for status, count in counts.items():
                    self._metrics.pruned_bodies.labels(status=status).inc(count)
                if sum(counts.values()) < limit:
                    break

    @inlineCallbacks
    def stop(self):
        for loop in (self._loop, self._prune_loop):
            if loop.running:
                loop.stop()
        for dispatcher in self.dispatchers.values():
            yield dispatcher.stop()
        for runner in self.batches.values():
            yield runner.stop()
