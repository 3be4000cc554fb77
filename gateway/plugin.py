"""Everything a plugin uses, from one import: the public plugin surface (contract 1.2).

A plugin imports from here and nowhere else in ``gateway``: the modules behind these names may
move between gateway releases, these names stay for as long as the contract's major version does.
``hssk-gateway plugin new NAME`` writes a package that starts this way::

    from gateway.plugin import CONTRACT_VERSION, PluginDescription, RecordSet, hookimpl

    hssk_contract = "1.0"          # the contract this plugin was written against

    class LabAdapter:
        name = "my_lab"

        def normalize(self, message):
            return RecordSet(kind=message.message_type, person=person_from_pid(message))

    @hookimpl
    def hssk_identify(message, envelope):
        if message.sending_application == "MY_LIS":
            return LabAdapter()

The hooks themselves, when each is called and what it may return, are documented in
:mod:`gateway.core.hookspecs`; this module is the list of the names a plugin may rely on.
"""
from __future__ import annotations

from gateway.config import ConfigError, DestinationConfig, GatewayConfig, setting
from gateway.core.ack_profile import AckProfile
from gateway.core.batch import BatchSettings
from gateway.core.commands import Command, CommandContext, CommandError
from gateway.core.contract import CONTRACT_VERSION
from gateway.core.destination import DEAD, DELIVERED, RETRY, Delivery, DeliveryResult, Destination
from gateway.core.destination_kinds import DestinationContext, DestinationKind
from gateway.core.documents import DocumentRequest, DocumentSource
from gateway.core.events import Event, QueuedEvent
from gateway.core.feed import csv_records
from gateway.core.outbox import idempotency_key
from gateway.core.hookspecs import Adapter, DocumentAdapter, Payload
from gateway.core.http_routes import HttpAnswer, HttpCall, HttpRoute
from gateway.core.lookups import Lookup, LookupAnswer
from gateway.core.plugin_gauges import GaugeValue
from gateway.core.plugin_journal import MigrationSet, PluginJournal
from gateway.core.population import ImportedPersons, ListedPersons
from gateway.core.sources import XML_130, Reading, Source, Verdict
from gateway.formats.bhxh_portal import (BHXH_CODES, VIETNAM_TIME, decode_file_field, form_problem, portal_body, portal_code,
                                         portal_message, reception_time, wrong_parameter)
from gateway.formats.hl7_model import (
    encounter_from_pv1,
    immunizations_from_rxa,
    observations_from_obx,
    person_from_pid,
    records_from_hl7,
)
from gateway.formats.hl7v2 import Hl7Message, escape, unescape
from gateway.formats.profile import ProfileDefaults, VendorPlugin
from gateway.formats.xml130 import CHECK_IN_DOCUMENT, CLAIM_DOCUMENT, ClaimFile
from gateway.model.envelope import Envelope
from gateway.model.hooks import PluginDescription, hookimpl
from gateway.model.masking import mask_identifier, mask_name, mask_text
from gateway.model.outcome import ACCEPT, ERROR, REJECT, ContentError, Issue, NotRenderable, Outcome, Unavailable
from gateway.model.records import (
    Address,
    Appointment,
    CheckIn,
    ClaimTotals,
    ClinicalNote,
    Diagnosis,
    DischargeLetter,
    Encounter,
    Extra,
    Identifier,
    Immunization,
    MedicationLine,
    Observation,
    Person,
    RawTable,
    RecordSet,
    Referral,
    RelatedPerson,
    ServiceLine,
)
from gateway.rules.person_index import PersonLink, fold_name

__all__ = [
    "ACCEPT", "AckProfile", "Adapter", "Address", "Appointment", "BatchSettings", "CONTRACT_VERSION", "CheckIn",
    "ClaimFile", "ClaimTotals", "ClinicalNote", "Command", "CommandContext", "CommandError", "ConfigError",
    "ContentError", "DEAD", "DELIVERED", "Delivery", "DeliveryResult", "Destination", "DestinationConfig",
    "DestinationContext", "DestinationKind", "Diagnosis", "DocumentAdapter", "DocumentRequest", "DocumentSource",
    "ERROR", "Encounter", "Envelope", "Event", "Extra", "GatewayConfig", "Hl7Message", "Identifier",
    "Immunization", "Issue", "MedicationLine", "MigrationSet", "NotRenderable", "Observation", "Payload", "Person",
    "PluginDescription", "PluginJournal", "ProfileDefaults", "QueuedEvent", "REJECT", "RETRY", "RawTable",
    "RecordSet", "Referral", "RelatedPerson", "ServiceLine", "VendorPlugin", "encounter_from_pv1", "escape",
    "hookimpl", "immunizations_from_rxa", "mask_identifier", "mask_name", "mask_text", "observations_from_obx",
    "person_from_pid", "records_from_hl7", "setting", "unescape",
    # contract 1.0, issue 16: input kinds and remote lookups
    "Lookup", "LookupAnswer", "Reading", "Source", "Unavailable", "Verdict",
    # contract 1.1, issue 17: the person index's identity links (hssk_identity_linked), CSV records to feed
    "PersonLink", "csv_records", "fold_name",
    # contract 1.2: XML7, whose MA_ME / MA_CHA / MA_THE_TAM name a newborn on its own (issue 17);
    # Hl7Message.all_segments, the one split every reader shares (issue 20); DeliveryResult.detail,
    # what the remote answered, kept on the row: BHXH's maGiaoDich (issue 18)
    "DischargeLetter",
    # contract 1.2, issue 18: a national system's own API on the intake listener (hssk_http_routes), plugin
    # gauges (hssk_gauges), the BHXH portal's answers and form, the XML 130 source and its kinds of file, an
    # outbox row's idempotency key
    "BHXH_CODES", "CHECK_IN_DOCUMENT", "CLAIM_DOCUMENT", "GaugeValue", "HttpAnswer", "HttpCall", "HttpRoute",
    "Outcome", "VIETNAM_TIME", "XML_130", "decode_file_field", "form_problem", "idempotency_key", "portal_body",
    "portal_code", "portal_message", "reception_time", "wrong_parameter",
    # contract 1.2, issue 18: population lists imported in bulk (PluginJournal.import_persons)
    "ImportedPersons", "ListedPersons",
]
