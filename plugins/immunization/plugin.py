"""The immunization plugin: VXU^V04 from the national immunization system (NIIS) and its sites.

Written against the public plugin surface only (``gateway.plugin``, contract 1.1). It claims every
VXU^V04 no other plugin claims (``trylast``: a vendor plugin that knows its own VXU wins), or only
those of ``sending_applications`` when a site lists them, and reads the CDC IIS guide's order
groups into immunization records (:mod:`plugins.immunization.vxu`). A VXU that names the request
profile Z22 in MSH-21 is answered in the response profile Z23: MSH-21 ``Z23^CDCPHINVS``, ERR with
its severity, and warnings answered AE, as the guide wants (vn-standards §7.2).

Children under six months are registered in NIIS under their mother's name ("CON BÀ …"). A VXU
whose patient has such a placeholder name and whose mother is identified (NK1-33, PID-21) is a
provisional child in the person index (``Person.provisional``), filed under the mother until a
record names the child on its own; the plugin then sends an identity update to every destination
that received the provisional child (``hssk_identity_linked``, in :mod:`plugins.immunization.identity`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred

from gateway.plugin import (AckProfile, Command, ConfigError, DestinationConfig, GatewayConfig, Hl7Message, Issue,
                            MigrationSet, Payload, PersonLink, PluginDescription, PluginJournal, RecordSet, Source,
                            fold_name, hookimpl)
from plugins.immunization.identity import KIND, check_queued, identity_update, render_a40
from plugins.immunization.importer import IMPORT, MIGRATIONS
from plugins.immunization.lists import CSV_COLUMNS, KIND as LIST_KIND, list_source
from plugins.immunization.vxu import VxuSettings, is_placeholder, records_from_vxu, related_cccd_issues

hssk_contract = "1.1"
NAME = "immunization"
VXU = "VXU^V04"

#: Our reading of how NIIS and the communes' software write a newborn's placeholder name; folded
#: (lower case, no diacritics) and matched at the start of the full name, a whole word at a time.
PLACEHOLDERS = ("CON BÀ", "Con của", "CB", "Bé trai", "Bé gái", "SS")
#: CVX → the national vaccine list (Tiêm chủng mở rộng and common services). Our reading: no
#: national code table for vaccines is published in machine-readable form (vn-standards §6, NIIS),
#: so a site replaces or extends it with ``national_codes``.
NATIONAL_CODES = {
    "19": "BCG", "08": "VGB", "45": "VGB", "102": "DPT-VGB-Hib", "02": "OPV", "10": "IPV", "05": "SOI",
    "04": "MR", "03": "MMR", "39": "VNNB", "01": "DPT", "20": "DTaP", "09": "UV", "113": "UV", "116": "ROTA",
    "119": "ROTA", "208": "COVID-19",
}
#: The CDC IIS response profile for a VXU's ACK, and its rule: a warning is answered AE.
Z23 = AckProfile(msh_fields={21: "Z23^CDCPHINVS"}, severity_codes={"W": "AE"})


class VxuAdapter:
    """Owns one VXU: its records, as :func:`records_from_vxu` reads them."""

    name = NAME

    def __init__(self, settings: VxuSettings) -> None:
        self.settings = settings

    def normalize(self, message: Hl7Message) -> RecordSet:
        return records_from_vxu(message, self.settings)


class ImmunizationPlugin:
    """The plugin object registered under ``hssk_gateway.plugins`` as ``immunization``."""

    hssk_contract = hssk_contract

    def __init__(self) -> None:
        self.senders: frozenset[str] = frozenset()
        self.settings = VxuSettings(tuple(fold_name(p) for p in PLACEHOLDERS), dict(NATIONAL_CODES))
        self.csv_columns = dict(CSV_COLUMNS)
        #: The journal, once the gateway hands it over (``hssk_journal``).
        self.journal: PluginJournal | None = None

    @hookimpl
    def hssk_configure(self, config: GatewayConfig) -> None:
        table = config.plugin_settings(NAME)
        self.senders = frozenset(s.upper() for s in _strings(table, "sending_applications", []))
        placeholders = _strings(table, "placeholders", list(PLACEHOLDERS))
        if not all(fold_name(p) for p in placeholders):
            raise ConfigError(f"plugins.{NAME}.placeholders", "a placeholder is a word or words, not blank")
        codes = table.get("national_codes", {})
        if not isinstance(codes, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in codes.items()):
            raise ConfigError(f"plugins.{NAME}.national_codes", "a table of CVX code = national code (strings), e.g. "
                                                                '{ "08" = "VGB" }')
        self.settings = VxuSettings(tuple(fold_name(p) for p in placeholders), {**NATIONAL_CODES, **codes})
        columns = table.get("csv_columns", {})
        unknown = sorted(set(columns) - set(CSV_COLUMNS)) if isinstance(columns, Mapping) else []
        if not isinstance(columns, Mapping) or unknown or not all(isinstance(v, str) and v for v in columns.values()):
            raise ConfigError(f"plugins.{NAME}.csv_columns", f"a table of field = column header, fields among "
                                                             f"{', '.join(CSV_COLUMNS)}" + (
                                                                 f"; unknown: {', '.join(unknown)}" if unknown else ""))
        self.csv_columns = {**CSV_COLUMNS, **columns}

    @hookimpl
    def hssk_describe(self) -> PluginDescription:
        senders = f"from MSH-3 {', '.join(sorted(self.senders))}" if self.senders else "from any sender"
        return PluginDescription(NAME, f"HL7 2.5.1 {VXU} {senders} that no other plugin claims, CDC IIS Z23 ACKs; "
                                       f"immunization lists (CSV): hssk-gateway immunization import FILE",
                                 frozenset({VXU, LIST_KIND}))

    @hookimpl(trylast=True)
    def hssk_identify(self, message: Hl7Message) -> VxuAdapter | None:
        if message.message_type != VXU:
            return None
        if self.senders and message.sending_application.upper() not in self.senders:
            return None
        return VxuAdapter(self.settings)

    @hookimpl
    def hssk_check(self, message: Hl7Message | None, records: RecordSet) -> list[Issue] | None:
        """What the person index needs of a VXU's mother: a CCCD of the right shape, since she is
        who a newborn is filed under; and a word when a placeholder name comes without her
        identifiers (the child cannot be linked later). Other plugins' record sets are theirs."""
        if message is None or message.message_type != VXU or records.person is None:
            return None
        issues = related_cccd_issues(message)
        person = records.person
        if not person.provisional and is_placeholder(person.full_name, self.settings.placeholders):
            issues.append(Issue(101, "PID-5 is a newborn's placeholder name, but no mother is identified (NK1-33 or "
                                     "PID-21): the child cannot be linked to its own record later", "PID^1^5", "I"))
        return issues or None

    @hookimpl
    def hssk_ack_profile(self, message: Hl7Message) -> AckProfile | None:
        profile = message.msh(21).split(message.encoding_characters[0])[0]
        return Z23 if message.message_code == "VXU" and profile == "Z22" else None

    @hookimpl
    def hssk_journal(self, journal: PluginJournal) -> None:
        self.journal = journal

    @hookimpl
    def hssk_sources(self) -> list[Source]:
        return [list_source(self.csv_columns, lambda: self.settings)]

    @hookimpl
    def hssk_migrations(self) -> list[MigrationSet]:
        return [MIGRATIONS]

    @hookimpl
    def hssk_commands(self) -> list[Command]:
        return [IMPORT]

    @hookimpl
    def hssk_identity_linked(self, link: PersonLink) -> Deferred | None:
        """A provisional child this plugin filed is named now: tell every destination that
        received it (:mod:`plugins.immunization.identity`)."""
        event = identity_update(link, NAME)
        if event is None or self.journal is None:
            return None
        return self.journal.queue_event(event).addCallback(check_queued)

    @hookimpl
    def hssk_render(self, records: RecordSet, destination: DestinationConfig, message,
                    idempotency_key: str) -> Payload | None:
        """This plugin's identity updates as an HL7 ADT^A40 for a destination of format ``hl7v2``
        (which otherwise forwards received messages, and an event is none)."""
        if destination.format != "hl7v2" or records.kind != KIND or message.sender != f"EVENT|{NAME}":
            return None
        return render_a40(records, idempotency_key, "HSSK_GW")


def _strings(table: Mapping[str, Any], key: str, default: list[str]) -> list[str]:
    value = table.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"plugins.{NAME}.{key}", "a list of strings")
    return value


plugin = ImmunizationPlugin()
