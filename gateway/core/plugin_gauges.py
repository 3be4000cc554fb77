"""Gauges whose values a plugin computes from the journal (``hssk_gauges``), refreshed by the
running gateway every ``plugins.gauges_seconds``.

The gauges themselves are defined with every other metric (:attr:`Metrics.plugin_gauges`), so the
dashboard and alert rules can rely on them; a plugin only reports values. Each round asks every
plugin on a thread of the reactor's pool (a plugin reads the journal, which may wait for disk),
then, back on the reactor, replaces the values of each gauge a plugin reported: a series no longer
reported goes away. A plugin that fails, or reports a gauge or labels the gateway does not have,
is logged and its round skipped; the gauges keep their last values.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from gateway.core.metrics import Metrics

log = Logger(namespace="hssk.metrics")


@dataclass(frozen=True)
class GaugeValue:
    """One series' value: the gauge's ``name`` (``hssk_bhxh_reconcile_episodes``) and its labels.
    A ``facility`` label the configuration does not know is reported as ``other``."""

    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


class PluginGauges:
    """The periodic refresh; ``journal`` is the plugins' :class:`~gateway.core.plugin_journal.PluginJournal`."""

    def __init__(self, hook, metrics: Metrics, reactor, clock, interval: float) -> None:
        self._hook = hook
        self._metrics = metrics
        self._reactor = reactor
        self._interval = interval
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = clock
        self._running = None
        self.journal = None

    def start(self, journal) -> None:
        self.journal = journal
        if self._hook.hssk_gauges.get_hookimpls():
            self._loop.start(self._interval, now=True)

    def stop(self):
        """No round starts from now on; fires when the one under way, if any, has ended."""
        if self._loop.running:
            self._loop.stop()
        return self._running

    def refresh(self):
        """One round, unless one is under way."""
        if self._running is None:
            self._running = self._round()
            self._running.addBoth(self._ended)
        return self._running

    def _ended(self, result):
        self._running = None

    @inlineCallbacks
    def _round(self):
        try:
            reported = yield deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._collect)
            self._set(reported)
        except Exception as e:  # a plugin or a journal that fails now is asked again at the next refresh
            log.warn("refreshing the plugins' gauges failed: {error}", error=f"{type(e).__name__}: {e}")

    def _collect(self) -> list[GaugeValue]:
        return [v for values in self._hook.hssk_gauges(journal=self.journal) if values for v in values]

    def _set(self, reported: list[GaugeValue]) -> None:
        gauges = self._metrics.plugin_gauges
        unknown = sorted({v.name for v in reported if v.name not in gauges})
        if unknown:
            raise ValueError(f"no plugin gauge is named {', '.join(unknown)} (known: {', '.join(sorted(gauges))})")
        for name in dict.fromkeys(v.name for v in reported):
            gauge = gauges[name]
            if gauge._labelnames:
                gauge.clear()
        for v in reported:
            gauge = gauges[v.name]
            if set(v.labels) != set(gauge._labelnames):
                raise ValueError(f"{v.name} has labels {', '.join(gauge._labelnames) or 'none'}, not "
                                 f"{', '.join(sorted(v.labels)) or 'none'}")
            labels = {k: self._metrics.labels.facility(x) if k == "facility" else x for k, x in v.labels.items()}
            (gauge.labels(**labels) if labels else gauge).set(v.value)
