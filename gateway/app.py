"""Wiring: builds the gateway from its configuration. Nothing else knows the whole."""
from __future__ import annotations

import codecs
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

import pluggy
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gateway import __version__
from gateway.config import ConfigError, GatewayConfig
from gateway.core.audit import AuditLog
from gateway.core.audit_syslog import SyslogSink
from gateway.core.auth_limits import AuthFailureLimiter
from gateway.core.clients import ClientRegistry
from gateway.core.datadir_lock import DataDirLock
from gateway.core.delivery import DeliveryService
from gateway.core.feed_health import FacilityClock, silence_thresholds
from gateway.core.identity_updates import IdentityUpdates
from gateway.core.intake import Intake
from gateway.core.journal_identity import check_journal, record_journal
from gateway.core.lookups import LookupRunner
from gateway.core.metrics import LabelValues, Metrics
from gateway.core.pipeline import Pipeline
from gateway.core.pipeline_process import ProcessPool
from gateway.core.plugin_gauges import PluginGauges
from gateway.core.plugin_journal import GatewayJournal, Ownership, apply_migration_sets
from gateway.core.plugins import build_plugin_manager, describe_plugins, destination_kinds, http_routes, migration_sets
from gateway.core.replay import Replayer
from gateway.core.store import JournalWriter, open_store
from gateway.formats.charsets import codec_for
from gateway.transports.admin import AdminResource
from gateway.transports.console.resource import with_console
from gateway.transports.http import build_site
from gateway.transports.mllp import MLLPFactory
from gateway.transports.tls import listening_endpoint, server_options

log = Logger(namespace="hssk.app")


class Gateway:
    """One running gateway: store, writer, pipeline workers, delivery and the two listeners.

    ``reactor`` must provide IReactorTCP/IReactorThreads; ``clock`` (IReactorTime, default the
    reactor) drives every timeout, so tests can pass a ``task.Clock``.
    """

    def __init__(self, config: GatewayConfig, reactor, clock=None, plugins: pluggy.PluginManager | None = None,
                 extra_plugins: Iterable[object] = (), fresh_journal: bool = False) -> None:
        self.config = config
        #: Start on a new, empty journal when the one created in the data dir is lost (see
        #: :mod:`gateway.core.journal_identity`); ``serve --fresh-journal``.
        self.fresh_journal = fresh_journal
        self.reactor = reactor
        self.clock = clock or reactor
        self.datadir_lock = DataDirLock(config.data_dir)
        self.plugins = plugins or build_plugin_manager(config, extra_plugins)
        self.pipeline = Pipeline(self.plugins.hook, config)
        #: The plugins' own schema steps, applied after the core's at start-up.
        self.migration_sets = migration_sets(self.plugins)
        self.metrics = Metrics(LabelValues.known(config.clients, self.plugins.hook.hssk_describe(),
                                                 self.pipeline.sources.message_types()))
        self.store = open_store(config)
        self.metrics.node_info.labels(self.store.node, self.store.dialect).set(1)
        self.writer = JournalWriter(self.store, reactor, self.metrics, config.store.max_batch, self.clock)
        self.intake = Intake(self.pipeline, self.writer, self.clock, self.metrics, workers=config.pipeline.workers,
                             timeout=config.pipeline.timeout_seconds, max_in_flight=config.pipeline.max_in_flight,
                             pool=self._process_pool(plugins, extra_plugins),
                             lookups=LookupRunner(self.plugins.hook, reactor, self.clock, self.metrics))
        destinations = destination_kinds(self.plugins).configure(config.destinations)
        self.delivery = DeliveryService(config, destinations, self.store, self.writer, reactor, self.clock,
                                        self.metrics)
        self.writer.on_queued = self.delivery.rows_committed
        self.identity_updates = IdentityUpdates(self.plugins.hook, self.store, self.writer, reactor, self.clock,
                                                self.metrics, config.outbox.poll_interval_seconds)
        self.writer.on_linked = self.identity_updates.links_committed
        self.plugin_gauges = PluginGauges(self.plugins.hook, self.metrics, reactor, self.clock,
                                          config.plugins.gauges_seconds)
        self.writer.unordered_destinations = self.delivery.batched
        self.intake.admission = self.delivery.refusal_reason
        self.clients = ClientRegistry.from_config(config.clients, config.auth)
        self.audit = AuditLog(self.writer, self.store, reactor, self.clock, self.metrics,
                              config.audit.success_window_seconds,
                              SyslogSink(config.audit.syslog, config.audit.syslog_app_name) if config.audit.syslog
                              else None)
        self.intake.audit = self.audit
        self.facility_clock = FacilityClock(self.store, reactor, self.metrics, *silence_thresholds(config.feeds))
        #: What the metrics learn from the journal rather than from this process's own work: the
        #: CLI's audit entries, each facility's newest message.
        self._journal_watch = LoopingCall(
            lambda: gatherResults([self.audit.count_cli_entries(), self.facility_clock.refresh()]))
        self._journal_watch.clock = self.clock
        auth_limiter = AuthFailureLimiter.from_config(config.auth, self.clock)
        self.mllp_factory = MLLPFactory(config.mllp, self.intake, self.metrics, self.clock, clients=self.clients)
        self.site = build_site(
            self.intake, self.writer, self.metrics, self.clock, data_dir=config.data_dir,
            http_config=config.http, min_free_disk_bytes=config.store.min_free_disk_bytes,
            plugin_names=lambda: [p.name for p in describe_plugins(self.plugins)],
            probe_timeout=min(5.0, config.pipeline.timeout_seconds),
            stale_destinations=self.delivery.stale_destinations,
            admin=with_console(AdminResource(self.delivery, self.writer, self.store, reactor, auth_limiter,
                                             self.metrics, Replayer(self.intake, self.pipeline, self.store,
                                                                    self.clients, config, reactor),
                                             self.intake, _admin_token(config)), self.clock, reactor),
            clients=self.clients, limiter=auth_limiter,
            routes=http_routes(self.plugins, config, self.pipeline.sources))
        self.ports: dict[str, object] = {}

    def _process_pool(self, plugins: pluggy.PluginManager | None,
                      extra_plugins: Iterable[object]) -> ProcessPool | None:
        """The child processes that decide when ``pipeline.isolation = "processes"``."""
        if self.config.pipeline.isolation != "processes":
            return None
        if plugins is not None or extra_plugins:
            raise ConfigError("pipeline.isolation", "'processes' loads plugins from the entry-point group in each "
                                                    "child; plugins registered in-process cannot follow")
        return ProcessPool(self.reactor, self.config, self.config.pipeline.workers, self.metrics, self.clock)

    @inlineCallbacks
    def start(self):
        """Lock the data directory, check the journal is the one created there, migrate it, start
        the threads, then listen — in that order, so nothing is accepted before it can be stored,
        and no second gateway on the same journal resets or delivers what this one holds
        (:mod:`gateway.core.datadir_lock`, :mod:`gateway.core.journal_identity`)."""
        self.datadir_lock.acquire()
        if self.store.dialect == "sqlite":
            check_journal(self.store.path, self.fresh_journal)
        self.store.make_private()
        applied = self.store.migrate()
        applied += apply_migration_sets(self.store, self.migration_sets)
        if self.store.dialect == "sqlite":
            record_journal(self.store.path)
        if applied:
            log.info("journal schema steps applied: {steps}", steps=", ".join(applied))
        self.writer.start()
        yield self.delivery.start()
        journal = GatewayJournal(self.store, Ownership(s.name for s in self.migration_sets), self.writer, self.intake,
                                 self.reactor, self.clock)
        self.plugins.hook.hssk_journal(journal=journal)
        self.intake.start()
        self.identity_updates.start()
        self._journal_watch.start(self.config.outbox.poll_interval_seconds)
        self.plugin_gauges.start(journal)
        for name, listener, factory in (("mllp", self.config.mllp, self.mllp_factory),
                                        ("http", self.config.http, self.site)):
            endpoint = listening_endpoint(self.reactor, listener.listen, listener.tls_certificate,
                                          listener.tls_private_key, listener.tls_client_ca)
            self.ports[name] = yield endpoint.listen(factory)
        for name, port in self.ports.items():
            address = port.getHost()
            log.info("{name} listening on {host}:{port}", name=name, host=address.host, port=address.port)
            if not self.config.auth.required and _beyond_loopback(getattr(address, "host", None)):
                log.warn("{name} listens on {host}:{port}, beyond loopback, while auth.required = false: any host "
                         "that reaches it may send as an anonymous sender. Bind interface=127.0.0.1, or set "
                         "auth.required = true with [clients.NAME] tables", name=name, host=address.host,
                         port=address.port)
        self._log_summary()
        return self

    def _log_summary(self) -> None:
        """One line that says what this gateway is, for whoever reads the log after a restart:
        which plugins (and versions) decide, where records go, where the journal is, who may
        send, and where it listens."""
        config = self.config
        destinations = ", ".join(
            f"{d.name} ({d.kind}, {d.format}, privacy {d.privacy}{'' if d.enabled else ', disabled'})"
            for d in config.destinations) or "none (messages are journaled, nothing is delivered)"
        clients = ", ".join(c.name for c in config.clients)
        auth = (f"senders that are no client {'refused' if config.auth.required else 'let in'}, "
                f"{f'clients {clients}' if clients else 'no clients'}, admin API "
                f"{f'with the token in {config.auth.admin_token_env}' if config.auth.admin_token_env else 'from loopback only'}")
        listeners = ", ".join(f"{name} {port.getHost().host}:{port.getHost().port}" for name, port in self.ports.items())
        log.info("started hssk-gateway {version}: data dir {data_dir} (journal {journal}, synchronous {synchronous}); "
                 "plugins {plugins}; destinations {destinations}; auth: {auth}; pipeline {workers} {isolation}; "
                 "listening on {listeners}", version=__version__, data_dir=config.data_dir,
                 journal=str(config.database_path), synchronous=config.store.synchronous,
                 plugins=", ".join(f"{p.name} {p.version}" for p in describe_plugins(self.plugins)) or "none",
                 destinations=destinations, auth=auth, workers=config.pipeline.workers,
                 isolation=config.pipeline.isolation, listeners=listeners)

    def address(self, name: str) -> tuple[str, int]:
        host = self.ports[name].getHost()
        return host.host, host.port

    @inlineCallbacks
    def stop(self):
        """Stop listening, let in-flight messages be answered, close connections, stop the writer."""
        for port in self.ports.values():
            yield port.stopListening()
        yield self.identity_updates.stop()
        yield self.plugin_gauges.stop()
        yield self.intake.stop()
        for protocol in list(self.mllp_factory.connections | self.mllp_factory.refusing):
            protocol.transport.loseConnection()
        yield self.delivery.stop()
        if self._journal_watch.running:
            self._journal_watch.stop()
        yield self.audit.flush()
        yield self.writer.stop()
        self.datadir_lock.release()


def _beyond_loopback(host: str | None) -> bool:
    """Whether a listener bound to ``host`` takes connections from other machines: every interface
    (``0.0.0.0``, ``::``) or a routable address. A UNIX socket (no host) does not."""
    if host is None:
        return False
    try:
        return not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return True


def _admin_token(config: GatewayConfig) -> str:
    """The admin API's token from the variable ``auth.admin_token_env`` names ("" when unset:
    loopback only). An unset variable is a config error at start-up (``validate_runtime``)."""
    return os.environ.get(config.auth.admin_token_env, "") if config.auth.admin_token_env else ""


def validate_runtime(config: GatewayConfig, reactor) -> None:
    """Checks that need the outside world: endpoint strings parse, charsets exist, data dir is usable.

    Kept apart from :func:`gateway.config.load_config` so that loading stays pure and testable
    without a reactor, and here rather than beside it because it asks the layers above the config:
    the transports' TLS options and the formats' character sets.
    """
    for key, description in (("mllp.listen", config.mllp.listen), ("http.listen", config.http.listen)):
        try:
            serverFromString(reactor, description)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(key, f"is not a Twisted endpoint string such as 'tcp:2575:interface=127.0.0.1': {e}") from None
    for section, listener in (("mllp", config.mllp), ("http", config.http)):
        if listener.tls_certificate:
            try:
                server_options(listener.tls_certificate, listener.tls_private_key, listener.tls_client_ca)
            except (OSError, ValueError, TypeError) as e:
                raise ConfigError(f"{section}.tls_certificate", f"TLS files (tls_certificate, tls_private_key, "
                                                                f"tls_client_ca) do not load: {e}") from None
    for key, name in (("mllp.charset", config.mllp.charset), ("mllp.default_charset", config.mllp.default_charset)):
        if name:
            if codec_for(name) is None:
                raise ConfigError(key, f"unknown character set {name!r}")
            codecs.lookup(codec_for(name))
    if config.auth.admin_token_env and not os.environ.get(config.auth.admin_token_env):
        raise ConfigError("auth.admin_token_env", f"names {config.auth.admin_token_env}, which is not set or empty; "
                                                  f"set it to the admin API's token, or remove the key")
    if config.store.backend == "postgresql" and not os.environ.get(config.store.dsn_env):
        raise ConfigError("store.dsn_env", f"names {config.store.dsn_env}, which is not set or empty; set it to the "
                                           f"PostgreSQL connection string (host=... dbname=... user=...)")
    data_dir = Path(config.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError("data_dir", f"{config.data_dir!r} exists and is not a directory")
