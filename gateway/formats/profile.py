"""Vendor profiles as data: one plugin class, many HIS products.

Vietnamese HIS vendors publish no interface specifications (vn-standards §6), so what differs
between them — which MSH-3 names they send, which facilities' XML 130 files they produce, where
they put the CCCD and the BHYT card, which Z-segment carries what — is a table of settings, not
a code fork. A bundled plugin is ``VendorPlugin(name, ProfileDefaults(...), contract="1.0")``; the operator's
``[plugins.<name>]`` table overrides any default at start-up::

    [plugins.vnpt_his]
    sending_applications = ["VNPT_HIS", "VNPTHIS"]
    xml_facilities = ["79025"]
    xml_standards = ["4750"]           # refuse 4210 files from this vendor
    charset = "WINDOWS-1258"           # used when MSH-18 is empty
    identifier_types = { CMT = "CCCD" }  # PID-3.5 type or PID-3.4 authority → system
    encounter_classes = { K = "01" }     # PV1-2 → MA_LOAI_KCB
    field_map = { "PID-19" = "SO_CCCD", "ZBH-3" = "MA_DKBD", "IN1-36" = "" }  # "" drops a default

``identifier_types``, ``encounter_classes`` and ``field_map`` are merged over the defaults;
the lists replace them. ``field_map`` places an HL7 field (``SEG-n`` or ``SEG-n.c``) on an XML1
tag; when two paths fill one tag, the first with a value wins (defaults come first).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config import ConfigError, GatewayConfig
from gateway.formats.charsets import codec_for
from gateway.formats.hl7_fields import parse_path
from gateway.formats.hl7_model import (
    DEFAULT_ENCOUNTER_CLASSES,
    DEFAULT_IDENTIFIER_TYPES,
    DEFAULT_PATIENT_CLASSES,
    PLACEABLE_TAGS,
    Hl7Mapping,
    records_from_hl7,
)
from gateway.formats.hl7v2 import CharsetError, Hl7Message
from gateway.formats.xml130 import ClaimFile
from gateway.model.envelope import Envelope
from gateway.model.hooks import PluginDescription, hookimpl
from gateway.model.outcome import ContentError, Issue
from gateway.model.records import RecordSet

#: The HL7 events the shared mappers understand. A plugin claims only these (and only from its
#: senders), so any other event from a known sender is answered AR 200 by the pipeline.
SUPPORTED_MESSAGE_TYPES = (
    "ADT^A01", "ADT^A02", "ADT^A03", "ADT^A04", "ADT^A05", "ADT^A08", "ADT^A11", "ADT^A13", "ADT^A28",
    "ADT^A31", "ADT^A40", "ORU^R01",
)
XML_STANDARDS = ("4750", "4210")
IDENTIFIER_SYSTEMS = frozenset({"CCCD", "CMND", "BHYT", "BHXH", "MR", "PASSPORT", "OTHER_ID"})

#: The settings a ``[plugins.<name>]`` table may hold.
SETTING_KEYS = frozenset({"sending_applications", "xml_facilities", "xml_standards", "message_types", "charset",
                          "identifier_types", "encounter_classes", "field_map"})


@dataclass(frozen=True)
class ProfileDefaults:
    """What a plugin ships before configuration. Every value is the gateway's best reading of a
    vendor's behaviour, not a published specification."""

    sending_applications: tuple[str, ...]
    xml_facilities: tuple[str, ...] = ()
    xml_standards: tuple[str, ...] = XML_STANDARDS
    message_types: tuple[str, ...] = SUPPORTED_MESSAGE_TYPES
    charset: str = ""
    identifier_types: Mapping[str, str] = field(default_factory=dict)
    encounter_classes: Mapping[str, str] = field(default_factory=dict)
    field_map: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VendorProfile:
    """A vendor's configured profile: who it claims and how its messages map."""

    name: str
    sending_applications: frozenset[str]
    xml_facilities: frozenset[str]
    xml_standards: frozenset[str]
    message_types: frozenset[str]
    charset: str
    hl7: Hl7Mapping


def _strings(name: str, key: str, value: Any, upper: bool = True) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"plugins.{name}.{key}", f"must be a list of non-empty strings, got {value!r}")
    return tuple(v.strip().upper() if upper else v.strip() for v in value)


def _table(name: str, key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"plugins.{name}.{key}", f"must be a table of strings, got {value!r}")
    return {k.strip().upper(): v.strip() for k, v in value.items()}


def profile_from_settings(name: str, defaults: ProfileDefaults, settings: Mapping[str, Any]) -> VendorProfile:
    """The profile for ``[plugins.<name>]`` over ``defaults``; raises :class:`ConfigError` naming
    the dotted key of the first bad setting."""
    unknown = set(settings) - SETTING_KEYS
    if unknown:
        raise ConfigError(f"plugins.{name}.{sorted(unknown)[0]}",
                          f"unknown key (known keys: {', '.join(sorted(SETTING_KEYS))})")

    def listed(key: str, upper: bool = True) -> tuple[str, ...]:
        return _strings(name, key, settings[key], upper) if key in settings else getattr(defaults, key)

    standards = listed("xml_standards")
    if not set(standards) <= set(XML_STANDARDS):
        raise ConfigError(f"plugins.{name}.xml_standards", f"must list only {' and '.join(XML_STANDARDS)}")
    unsupported = set(listed("message_types")) - set(SUPPORTED_MESSAGE_TYPES)
    if unsupported:
        raise ConfigError(f"plugins.{name}.message_types",
                          f"{sorted(unsupported)[0]!r} is not mapped (supported: {', '.join(SUPPORTED_MESSAGE_TYPES)})")
    facilities = listed("xml_facilities")
    bad = next((f for f in facilities if len(f) != 5), None)
    if bad is not None:
        raise ConfigError(f"plugins.{name}.xml_facilities", f"{bad!r} is not a 5-character facility code (MA_CSKCB)")
    charset = settings.get("charset", defaults.charset)
    if not isinstance(charset, str) or (charset and codec_for(charset) is None):
        raise ConfigError(f"plugins.{name}.charset", f"{charset!r} is not a character set the gateway knows")

    identifier_types = {**DEFAULT_IDENTIFIER_TYPES, **defaults.identifier_types,
                        **_table(name, "identifier_types", settings.get("identifier_types", {}))}
    bad = next((s for s in identifier_types.values() if s not in IDENTIFIER_SYSTEMS), None)
    if bad is not None:
        raise ConfigError(f"plugins.{name}.identifier_types",
                          f"{bad!r} is not an identifier system ({', '.join(sorted(IDENTIFIER_SYSTEMS))})")
    encounter_classes = {**DEFAULT_ENCOUNTER_CLASSES, **defaults.encounter_classes,
                         **_table(name, "encounter_classes", settings.get("encounter_classes", {}))}
    field_map = {**{k.upper(): v for k, v in defaults.field_map.items()},
                 **_table(name, "field_map", settings.get("field_map", {}))}
    placements = []
    for path_text, tag in field_map.items():
        if not tag:
            continue
        try:
            path = parse_path(path_text)
        except ValueError as e:
            raise ConfigError(f"plugins.{name}.field_map", str(e)) from None
        if tag.upper() not in PLACEABLE_TAGS:
            raise ConfigError(f"plugins.{name}.field_map",
                              f"{path_text} → {tag!r}: not an XML1 tag the HL7 mapping can fill")
        placements.append((path, tag.upper()))
    return VendorProfile(
        name=name,
        sending_applications=frozenset(listed("sending_applications")),
        xml_facilities=frozenset(facilities),
        xml_standards=frozenset(standards),
        message_types=frozenset(listed("message_types")),
        charset=charset,
        hl7=Hl7Mapping(identifier_types, encounter_classes, dict(DEFAULT_PATIENT_CLASSES), tuple(placements)),
    )


class Hl7ProfileAdapter:
    """Normalises one vendor's HL7 messages with its profile."""

    def __init__(self, profile: VendorProfile) -> None:
        self.name = profile.name
        self.profile = profile

    def normalize(self, message: Hl7Message) -> RecordSet:
        return records_from_hl7(message, self.profile.hl7)


class RedecodedAdapter(Hl7ProfileAdapter):
    """For a message without MSH-18 from a vendor whose profile names a charset: the envelope's
    bytes are decoded again in that charset before mapping (the listener decoded them with its
    default, which they happened to pass)."""

    def __init__(self, profile: VendorProfile, raw: bytes) -> None:
        super().__init__(profile)
        self.raw = raw

    def normalize(self, message: Hl7Message) -> RecordSet:
        try:
            redecoded = Hl7Message.from_bytes(self.raw, forced_charset=self.profile.charset)
        except CharsetError as e:
            raise ContentError([Issue(102, f"MSH-18 is empty and the bytes are not valid {self.profile.charset} "
                                           f"(plugins.{self.name}.charset): {e}", "MSH^1^18")]) from None
        return records_from_hl7(redecoded, self.profile.hl7)


class DocumentProfileAdapter:
    """Applies a vendor's profile to an XML 130 file the core has already read."""

    def __init__(self, profile: VendorProfile) -> None:
        self.name = profile.name
        self.profile = profile

    def normalize(self, document: ClaimFile) -> tuple[RecordSet, ...]:
        """The file's record sets, each episode's MA_CSKCB filled from THONGTINDONVI/MACSKCB when
        the vendor left it empty; a file in a standard the profile does not accept is refused."""
        if document.standard not in self.profile.xml_standards:
            raise ContentError([Issue(203, f"XML 130: the file follows QĐ {document.standard}, which "
                                           f"plugins.{self.name}.xml_standards does not accept "
                                           f"({', '.join(sorted(self.profile.xml_standards))})", "GIAMDINHHS")])
        return tuple(self._with_facility(records, document.facility) for records in document.records)

    @staticmethod
    def _with_facility(records: RecordSet, facility: str) -> RecordSet:
        if records.encounter is None or records.encounter.facility or not facility:
            return records
        return dataclasses.replace(records, encounter=dataclasses.replace(records.encounter, facility=facility))


class VendorPlugin:
    """The hooks every profile-driven plugin implements; configured by ``[plugins.<name>]``."""

    def __init__(self, name: str, defaults: ProfileDefaults, *, contract: str) -> None:
        """``contract`` is the plugin contract version the vendor plugin was written against
        (``gateway.plugin.CONTRACT_VERSION`` of its day), checked when the gateway loads it."""
        self.hssk_contract = contract
        self.defaults = defaults
        self._use(profile_from_settings(name, defaults, {}))

    def _use(self, profile: VendorProfile) -> None:
        """Adapters hold only the profile, so one pair serves every message until reconfigured."""
        self.profile = profile
        self.adapter = Hl7ProfileAdapter(profile)
        self.document_adapter = DocumentProfileAdapter(profile)

    @property
    def name(self) -> str:
        return self.profile.name

    @hookimpl
    def hssk_configure(self, config: GatewayConfig) -> None:
        self._use(profile_from_settings(self.name, self.defaults, config.plugin_settings(self.name)))

    @hookimpl
    def hssk_describe(self) -> PluginDescription:
        profile = self.profile
        claims = (f"HL7 v2 ({', '.join(sorted(profile.message_types))}) with MSH-3 in "
                  f"{', '.join(sorted(profile.sending_applications))}")
        if profile.xml_facilities:
            claims += (f"; XML 130 ({', '.join(sorted(profile.xml_standards))}) with MACSKCB in "
                       f"{', '.join(sorted(profile.xml_facilities))}")
        return PluginDescription(self.name, claims, message_types=profile.message_types,
                                 facilities=profile.xml_facilities)

    @hookimpl
    def hssk_identify(self, message: Hl7Message, envelope: Envelope) -> Hl7ProfileAdapter | None:
        profile = self.profile
        if message.sending_application.upper() not in profile.sending_applications:
            return None
        if message.message_type.upper() not in profile.message_types:
            return None
        if profile.charset and not message.msh(18) and not envelope.forced_charset and not envelope.content_charset \
                and codec_for(profile.charset) != codec_for(message.charset):
            return RedecodedAdapter(profile, envelope.raw)
        return self.adapter

    @hookimpl
    def hssk_identify_document(self, document: ClaimFile, envelope: Envelope) -> DocumentProfileAdapter | None:
        facility = document.facility or (envelope.facility or "")
        if facility.upper() in self.profile.xml_facilities:
            return self.document_adapter
        return None
