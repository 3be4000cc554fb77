"""The BHXH plugin, written against the public plugin surface only (``gateway.plugin``, contract
1.2). This module only wires the hooks to the modules that do the work: the ``bhxh`` destination
kind (:mod:`plugins.bhxh.submit`), the portal-compatible intake (:mod:`plugins.bhxh.intake`), the cross-check of the record store against BHXH
(:mod:`plugins.bhxh.reconcile`, its gauges), the commands (:mod:`plugins.bhxh.commands`), and the
card check (vn-standards §2.5): ``hssk-gateway bhxh card CARD`` (:mod:`plugins.bhxh.card_command`)
and, for the facilities listed in ``[plugins.bhxh.card_check]``, a check of each record's BHYT card
before it is acknowledged (:mod:`plugins.bhxh.card_enrichment`); population and card lists,
``hssk-gateway bhxh import FILE`` (:mod:`plugins.bhxh.population`,
:mod:`plugins.bhxh.population_import`): residents into the person index in bulk, with their
residence, and each new or changed one to the destinations."""
from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.defer import Deferred

from gateway.plugin import (Command, ConfigError, DestinationConfig, DestinationKind, GatewayConfig, GaugeValue,
                            HttpRoute, Issue, Lookup, LookupAnswer, MigrationSet, Payload, PluginDescription,
                            PluginJournal, RecordSet, Source, hookimpl)
from plugins.bhxh import submit
from plugins.bhxh.card_command import CARD
from plugins.bhxh.card_enrichment import CardEnrichment
from plugins.bhxh.commands import COMMANDS
from plugins.bhxh.intake import PortalIntake, Tokens, accounts_from
from plugins.bhxh.population import KIND, PopulationSettings, batch_source, population_settings
from plugins.bhxh.population_import import MIGRATIONS as POPULATION_MIGRATIONS, import_command_of
from plugins.bhxh.reconcile import ReconcileSettings, gauge_values, reconcile, settings_from, window

hssk_contract = "1.2"
NAME = "bhxh"
#: How long a portal token lasts when ``token_seconds`` is not set; the portal's own is a day or
#: less, and a HIS logs in again on 401 either way.
TOKEN_SECONDS = 3600.0


class BhxhPlugin:
    """The plugin object registered under ``hssk_gateway.plugins`` as ``bhxh``. ``clock``
    (IReactorTime, the reactor by default) says when a token expires."""

    hssk_contract = hssk_contract

    def __init__(self, clock=None) -> None:
        self.clock = clock
        self.intake: PortalIntake | None = None
        self.reconcile: ReconcileSettings | None = None
        self.cards = CardEnrichment(clock)
        self.population = population_settings({}, f"plugins.{NAME}")

    @hookimpl
    def hssk_configure(self, config: GatewayConfig) -> None:
        table = config.plugin_settings(NAME)
        seconds = table.get("token_seconds", TOKEN_SECONDS)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise ConfigError(f"plugins.{NAME}.token_seconds", "a positive number of seconds")
        accounts = accounts_from(config, table, f"plugins.{NAME}.accounts")
        if self.clock is None:
            from twisted.internet import reactor
            self.clock = reactor
        self.intake = PortalIntake(accounts, Tokens(self.clock, float(seconds))) if accounts else None
        self.reconcile = settings_from(config, table.get("reconcile", {}), f"plugins.{NAME}.reconcile")
        self.cards.configure(config)
        self.population = population_settings(table, f"plugins.{NAME}")

    @hookimpl
    def hssk_describe(self) -> PluginDescription:
        intake = (f"the BHXH portal API for {len(self.intake.accounts)} account(s)" if self.intake
                  else "no BHXH portal accounts (plugins.bhxh.accounts)")
        roles = self.reconcile.roles if self.reconcile else None
        crosscheck = (f"reconciles record stores {', '.join(roles.record_stores) or 'none'} with BHXH "
                      f"{', '.join(roles.bhxh) or 'none'}" if roles else "")
        submission = "signed claim submission (destination kind bhxh)"
        cards = f"BHYT card check before ACK for {', '.join(self.cards.settings.facilities) or 'no facility'}"
        lists = "population and card lists (CSV, XML): hssk-gateway bhxh import FILE"
        return PluginDescription(NAME, "; ".join(filter(None, (submission, intake, crosscheck, cards, lists))),
                                 frozenset({KIND}))

    @hookimpl
    def hssk_destination_kinds(self) -> tuple[DestinationKind, ...]:
        return submit.KINDS

    @hookimpl
    def hssk_render(self, records: RecordSet, destination: DestinationConfig, message,
                    idempotency_key: str) -> Payload | None:
        """Keeps another facility's record set from a ``bhxh`` destination; the core's xml130
        renderer writes the file."""
        submit.other_facility(records, destination)
        return None

    @hookimpl
    def hssk_http_routes(self) -> list[HttpRoute]:
        return self.intake.routes() if self.intake is not None else []

    @hookimpl
    def hssk_gauges(self, journal: PluginJournal) -> list[GaugeValue] | None:
        """The reconciliation of the last ``window_days``, when a destination plays each role."""
        settings = self.reconcile
        if settings is None or not settings.roles.record_stores or not settings.roles.bhxh:
            return None
        now = self.clock.seconds()
        first, last = window(now, settings.window_days)
        report = journal.read(lambda conn: reconcile(conn, settings.roles, first, last))
        return gauge_values(report, settings, now)

    @hookimpl
    def hssk_commands(self) -> list[Command]:
        return [*COMMANDS, CARD, import_command_of(self.population_settings)]

    def population_settings(self) -> PopulationSettings:
        return self.population

    @hookimpl
    def hssk_sources(self) -> list[Source]:
        return [batch_source()]

    @hookimpl
    def hssk_migrations(self) -> list[MigrationSet]:
        return [POPULATION_MIGRATIONS]

    @hookimpl
    def hssk_journal(self, journal: PluginJournal) -> None:
        self.cards.journal = journal

    @hookimpl
    def hssk_lookups(self, records: RecordSet, envelope) -> list[Lookup] | None:
        return self.cards.lookups(records, envelope)

    @hookimpl
    def hssk_perform_lookup(self, lookup: Lookup, reactor) -> Deferred | None:
        return self.cards.perform(lookup, reactor)

    @hookimpl
    def hssk_check_lookups(self, records: RecordSet, answers: Mapping[Lookup, LookupAnswer]) -> list[Issue] | None:
        return self.cards.judge(records, answers)


plugin = BhxhPlugin()
