"""The BHXH plugin: the portal of Bảo hiểm xã hội Việt Nam (vn-standards §2).

Written against the public plugin surface only (``gateway.plugin``, contract 1.1). Each service
lives in modules of its own and this module only hands the hooks to them:

- the **card check** (§2.5): ``hssk-gateway bhxh card CARD`` (:mod:`plugins.bhxh.card_command`)
  and, for the facilities listed in ``[plugins.bhxh.card_check]``, a check of each record's BHYT
  card before it is acknowledged (:mod:`plugins.bhxh.card_enrichment`).
"""
from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.defer import Deferred

from gateway.plugin import (Command, GatewayConfig, Issue, Lookup, LookupAnswer, PluginDescription, PluginJournal,
                            RecordSet, hookimpl)
from plugins.bhxh.card_command import CARD
from plugins.bhxh.card_enrichment import CardEnrichment

hssk_contract = "1.1"
NAME = "bhxh"


class BhxhPlugin:
    """The plugin object registered under ``hssk_gateway.plugins`` as ``bhxh``. ``clock`` is the
    card check's time (the reactor when None; a test's ``Clock``)."""

    hssk_contract = hssk_contract

    def __init__(self, clock=None) -> None:
        self.cards = CardEnrichment(clock)

    @hookimpl
    def hssk_configure(self, config: GatewayConfig) -> None:
        self.cards.configure(config)

    @hookimpl
    def hssk_describe(self) -> PluginDescription:
        facilities = ", ".join(self.cards.settings.facilities) or "no facility"
        return PluginDescription(NAME, f"BHXH portal: BHYT card check before ACK for {facilities}; "
                                       f"hssk-gateway bhxh card CARD")

    @hookimpl
    def hssk_journal(self, journal: PluginJournal) -> None:
        self.cards.journal = journal

    @hookimpl
    def hssk_commands(self) -> list[Command]:
        return [CARD]

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
