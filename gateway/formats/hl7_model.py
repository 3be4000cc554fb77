"""HL7 v2 segments → canonical records, for any plugin to reuse with its vendor profile.

A profile (:class:`Hl7Mapping`) says where a vendor puts things — which PID-3 identifier type or
assigning authority means CCCD, which PV1-2 class is which MA_LOAI_KCB, and which other fields
(IN1-36, PID-19, a Z-segment) carry XML 130 values. The functions here do the splitting,
unescaping and mapping once for everyone, and read only the segments they map, so a message's
other segments are never split.

Mapped: PID (3 identifiers, 5 name, 7 birth date, 8 sex, 11 address, 13 phone, 24/25 multiple
birth and birth order), NK1 (mother, father, guardian), MRG-1 (ADT^A40 prior identifiers), PV1/PV2
(class, MA_LK from PV1-19, times, visit reason), DG1 (main and secondary ICD-10), OBR/OBX
(results, XML4), and any field a profile places on an XML1 tag (cards with their validity from IN1
or a Z-segment, totals).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from gateway.formats.hl7_fields import FieldPath, component, hl7_time, read_path, segments_in_order, text
from gateway.formats.hl7v2 import Hl7Message
from gateway.formats.xml130_reader import personal_id_system
from gateway.formats.xml130_tables import (
    LIST,
    NUMBER,
    TIME_FIELDS,
    XML1_ADDRESS,
    XML1_CLAIM,
    XML1_DIAGNOSIS,
    XML1_ENCOUNTER,
    XML1_PERSON,
    FieldMap,
)
from gateway.model.outcome import ContentError, Issue
from gateway.model.records import (
    Address,
    ClaimTotals,
    Diagnosis,
    Encounter,
    Identifier,
    Immunization,
    Observation,
    Person,
    RecordSet,
    RelatedPerson,
)

#: PID-3.5 identifier type code (or PID-3.4 assigning authority) → canonical identifier system.
#: Vendors extend or override this in their profile.
DEFAULT_IDENTIFIER_TYPES: Mapping[str, str] = {
    "NI": "CCCD", "NNVNM": "CCCD", "CCCD": "CCCD",
    "HC": "BHYT", "BHYT": "BHYT",
    "SS": "BHXH", "BHXH": "BHXH",
    "MR": "MR", "PI": "MR",
    "PPN": "PASSPORT", "PASSPORT": "PASSPORT",
}

#: PV1-2 patient class (HL7 table 0004) → MA_LOAI_KCB (QĐ 824 annex 1). An emergency visit is a
#: khám bệnh (01) whose MA_DOITUONG_KCB is 2, see DEFAULT_PATIENT_CLASSES. Our reading.
DEFAULT_ENCOUNTER_CLASSES: Mapping[str, str] = {"O": "01", "E": "01", "P": "01", "R": "01", "I": "03", "B": "03"}
#: PV1-2 → MA_DOITUONG_KCB where the class alone decides it (emergency).
DEFAULT_PATIENT_CLASSES: Mapping[str, str] = {"E": "2"}

#: NK1-3 relationship (HL7 table 0063) → the model's related-person links.
RELATIONSHIPS: Mapping[str, str] = {"MTH": "mother", "FTH": "father", "GRD": "guardian"}

#: PID-8 (HL7 table 0001, the 1/2/3 of GIOI_TINH some HIS send, and the Vietnamese words) → GIOI_TINH.
_SEX = {"M": "1", "F": "2", "O": "3", "U": "3", "A": "3", "N": "3", "1": "1", "2": "2", "3": "3",
        "NAM": "1", "NỮ": "2", "NU": "2"}
_CODED_TYPES = frozenset({"CE", "CWE", "CNE", "CF"})
_BHYT_CARD = re.compile(r"[A-Z]{2}\d{13}")
#: An HL7 TS/DTM: 4 to 14 digits, fractions, a time zone.
_HL7_TIMESTAMP = re.compile(r"\d{4}(?:\d{2}){0,5}(?:\.\d{1,4})?(?:[+-]\d{4})?")

#: XML1 tags that become identifiers rather than plain attributes.
CARD_COLUMNS = {"GT_THE_TU": "valid_from", "GT_THE_DEN": "valid_to", "MA_DKBD": "registered_facility"}
IDENTIFIER_TAGS = frozenset({"SO_CCCD", "MA_BN", "MA_THE_BHYT", *CARD_COLUMNS})
_DATE8_TAGS = frozenset({"GT_THE_TU", "GT_THE_DEN", "NAM_NAM_LIEN_TUC"})
_SECTIONS: dict[str, tuple[str, FieldMap]] = {
    fm.tag: (section, fm)
    for section, maps in (("person", XML1_PERSON), ("address", XML1_ADDRESS), ("encounter", XML1_ENCOUNTER),
                          ("diagnosis", XML1_DIAGNOSIS), ("claim", XML1_CLAIM))
    for fm in maps}
#: Every XML1 tag a profile may place an HL7 field on (HO_TEN comes from PID-5 only).
PLACEABLE_TAGS = frozenset(_SECTIONS) | IDENTIFIER_TAGS


@dataclass(frozen=True)
class Hl7Mapping:
    """A vendor's HL7 placement choices; every field has the gateway default."""

    identifier_types: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_IDENTIFIER_TYPES))
    encounter_classes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ENCOUNTER_CLASSES))
    patient_classes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PATIENT_CLASSES))
    #: (HL7 field path, XML1 tag): the first path with a value fills the tag, overriding what the
    #: standard segments gave. Card columns (GT_THE_TU …) line up with the n-th card.
    placements: tuple[tuple[FieldPath, str], ...] = ()


DEFAULT_MAPPING = Hl7Mapping()


def _get(fields: list[str], n: int) -> str:
    return fields[n] if n < len(fields) else ""


def _identifier(message: Hl7Message, cx: str, identifier_types: Mapping[str, str]) -> Identifier | None:
    """One CX repetition: value, assigning authority, type → system; CX-7/8 are a card's validity."""
    parts = message.components(cx)
    value = text(message, parts[0])
    if not value:
        return None
    authority = text(message, _get(parts, 3).split(message.encoding_characters[3], 1)[0])
    type_code = text(message, _get(parts, 4)).upper()
    system = identifier_types.get(type_code) or identifier_types.get(authority.upper()) or type_code or "OTHER"
    if system == "BHYT":
        return Identifier(system, value, authority, hl7_time(_get(parts, 6), 8), hl7_time(_get(parts, 7), 8))
    return Identifier(system, value, authority)


def identifiers_from(message: Hl7Message, value: str, identifier_types: Mapping[str, str]) -> tuple[Identifier, ...]:
    """Every repetition of a CX field (PID-3, MRG-1, NK1-33) as identifiers."""
    found = (_identifier(message, cx, identifier_types) for cx in message.repetitions(value))
    return tuple(i for i in found if i is not None)


def _name(message: Hl7Message, xpn: str) -> tuple[str, str, str]:
    """XPN → (family, middle, given). Vietnamese senders write the whole given part in XPN-2
    (``Văn Thử``), or split it as XPN-2 given / XPN-3 middle; both end up the same."""
    first = message.repetitions(xpn)[0] if xpn else ""
    parts = message.components(first)
    family = text(message, parts[0]) if parts else ""
    middle, _, given = text(message, _get(parts, 1)).rpartition(" ")
    further = text(message, _get(parts, 2))
    return family, " ".join(p for p in (middle, further) if p), given


def names_in(message: Hl7Message) -> tuple[str, ...]:
    """Every person's name the message carries (PID-5, NK1-2), family name first: what a text
    about the message (a plugin's exception) may quote, read without the vendor mapping, which
    may be what failed."""
    xpns = [message.field("PID", 5)] + [_get(nk1, 2) for nk1 in message.segments("NK1")]
    return tuple(" ".join(part for part in _name(message, xpn) if part) for xpn in xpns if xpn)


def _phone(message: Hl7Message, xtn: str) -> str:
    """XTN → a Vietnamese national number: XTN-1 as sent, else area + local number, with the
    trunk ``0`` when the country code is 84."""
    first = message.repetitions(xtn)[0] if xtn else ""
    parts = message.components(first)
    written = text(message, parts[0])
    if written:
        return written
    number = text(message, _get(parts, 5)) + text(message, _get(parts, 6)) or text(message, _get(parts, 11))
    if number and text(message, _get(parts, 4)).lstrip("+") == "84" and not number.startswith("0"):
        number = "0" + number
    return number


def _address(message: Hl7Message, xad: str) -> Address | None:
    """XAD → DIA_CHI and the admin codes: XAD-4 province (2 digits), XAD-9 district (3 digits),
    XAD-8 commune (5 digits) when they hold codes; names in those components join the text."""
    first = message.repetitions(xad)[0] if xad else ""
    parts = [text(message, p) for p in message.components(first)] if first else []
    if not any(parts):
        return None

    def code(n: int, digits: int) -> str:
        value = _get(parts, n - 1)
        return value if value.isdigit() and len(value) == digits else ""

    province, district, commune = code(4, 2), code(9, 3), code(8, 5)
    words = [_get(parts, n - 1) for n in (1, 2, 8, 3, 9, 4)]
    kept = [w for w in words if w and w not in (province, district, commune)]
    return Address(", ".join(kept), province, district, commune)


def _related(message: Hl7Message, identifier_types: Mapping[str, str]) -> tuple[RelatedPerson, ...]:
    found = []
    for nk1 in message.segments("NK1"):
        relationship = RELATIONSHIPS.get(component(message, _get(nk1, 3), 1).upper())
        if relationship is None:
            continue
        family, middle, given = _name(message, _get(nk1, 2))
        found.append(RelatedPerson(relationship, family, middle, given,
                                   identifiers_from(message, _get(nk1, 33), identifier_types),
                                   _phone(message, _get(nk1, 5))))
    return tuple(found)


def person_from_pid(message: Hl7Message, identifier_types: Mapping[str, str] = DEFAULT_IDENTIFIER_TYPES) -> Person | None:
    """PID (+ NK1 links, + MRG-1 prior identifiers of an ADT^A40) → Person, or None without PID."""
    if not message.segments("PID"):
        return None
    identifiers = identifiers_from(message, message.field("PID", 3), identifier_types)
    family, middle, given = _name(message, message.field("PID", 5))
    sex = component(message, message.field("PID", 8), 1).upper()
    previous = tuple(i for mrg in message.segments("MRG")
                     for i in identifiers_from(message, _get(mrg, 1), identifier_types))
    return Person(
        identifiers=with_bhxh_from_cards(identifiers),
        family=family,
        middle=middle,
        given=given,
        birth_date=_birth_date(message, message.field("PID", 7)),
        sex=_SEX.get(sex, sex),  # any other value is kept, so the GIOI_TINH rule answers AE 103 at PID-8
        address=_address(message, message.field("PID", 11)),
        phone=_phone(message, message.field("PID", 13)),
        related=_related(message, identifier_types),
        previous_identifiers=previous,
        multiple_birth=component(message, message.field("PID", 24), 1).upper(),
        birth_order=component(message, message.field("PID", 25), 1),
    )


def _birth_date(message: Hl7Message, value: str) -> str:
    """PID-7 cut to NGAY_SINH, or kept as sent when it is no HL7 timestamp (``12/04/1985``,
    ``1985-04-12``), so the birth-date rule answers AE 102 at PID-7 instead of the date being
    dropped (or cut to its year) without a word."""
    sent = text(message, value)
    return hl7_time(sent) if not sent or _HL7_TIMESTAMP.fullmatch(sent) else sent


def with_bhxh_from_cards(identifiers: tuple[Identifier, ...]) -> tuple[Identifier, ...]:
    """Add the 10-digit BHXH number each 15-character card carries (characters 6–15), as the XML
    130 reader does, so a person reads the same from HL7 and from XML."""
    known = {i.value for i in identifiers if i.system == "BHXH"}
    derived = []
    for card in identifiers:
        if card.system == "BHYT" and _BHYT_CARD.fullmatch(card.value) and card.value[5:] not in known:
            known.add(card.value[5:])
            derived.append(Identifier("BHXH", card.value[5:]))
    return identifiers + tuple(derived)


def encounter_from_pv1(message: Hl7Message, mapping: Hl7Mapping = DEFAULT_MAPPING) -> Encounter | None:
    """PV1/PV2 → Encounter; None without PV1 or with class N (ADT^A28/A31 carry no visit)."""
    if not message.segments("PV1"):
        return None
    patient_class = component(message, message.field("PV1", 2), 1).upper()
    if patient_class == "N":
        return None
    visit = message.field("PV1", 19)
    reason = message.field("PV2", 3)
    return Encounter(
        ma_lk=component(message, visit, 1),
        facility=component(message, visit, 4) or component(message, message.field("PV1", 3), 4)
        or message.sending_facility,
        encounter_class=mapping.encounter_classes.get(patient_class, patient_class),
        patient_class=mapping.patient_classes.get(patient_class, ""),
        admitted_at=hl7_time(message.field("PV1", 44)),
        discharged_at=hl7_time(message.field("PV1", 45)),
        admission_reason=component(message, reason, 2) or component(message, reason, 1),
    )


def diagnosis_from_dg1(message: Hl7Message) -> Diagnosis | None:
    """DG1 → MA_BENH_CHINH (DG1-15 priority 1, else the first final DG1-6 F, else the first) and
    MA_BENH_KT (the others, in order); DG1-4 (or DG1-3.2) texts → CHAN_DOAN_VAO for admitting
    (DG1-6 A) diagnoses, CHAN_DOAN_RV for the main one."""
    entries = []
    for dg1 in message.segments("DG1"):
        code = component(message, _get(dg1, 3), 1)
        if code:
            entries.append((code, text(message, _get(dg1, 4)) or component(message, _get(dg1, 3), 2),
                            component(message, _get(dg1, 6), 1).upper(), component(message, _get(dg1, 15), 1)))
    if not entries:
        return None
    main = next((e for e in entries if e[3] == "1"), None) or next((e for e in entries if e[2] == "F"), entries[0])
    secondary = tuple(dict.fromkeys(e[0] for e in entries if e[0] != main[0]))
    return Diagnosis(
        main=main[0],
        secondary=secondary,
        admission_text="; ".join(e[1] for e in entries if e[2] == "A" and e[1]),
        discharge_text=main[1] if main[2] != "A" else "",
    )


def observations_from_obx(message: Hl7Message, ma_lk: str = "") -> tuple[Observation, ...]:
    """OBX (under their OBR) → Observation: OBX-3 code/name, OBX-5 value (a coded value's text),
    OBX-6 unit, OBX-7 range, OBX-8 flag, OBX-14 time (else OBR-7), OBR-4 service, OBR-32 reader.
    What an OBR gives its results is read once per OBR, each OBX-3 split once: a result message
    carries tens of OBX."""
    found = []
    reader = service_code = ordered_at = ""
    subcomponent = message.encoding_characters[3]
    for name, fields in segments_in_order(message, frozenset({"OBR", "OBX"})):
        if name == "OBR":
            reader = component(message, _get(fields, 32), 1).split(subcomponent, 1)[0]
            service_code = component(message, _get(fields, 4), 1)
            ordered_at = hl7_time(_get(fields, 7))
            continue
        value = _get(fields, 5)
        if component(message, _get(fields, 2), 1).upper() in _CODED_TYPES:
            shown = component(message, value, 2) or component(message, value, 1)
        else:
            shown = text(message, message.repetitions(value)[0] if value else "")
        identifier = message.components(_get(fields, 3).split(message.encoding_characters[1], 1)[0])
        found.append(Observation(
            code=text(message, identifier[0]),
            name=text(message, _get(identifier, 1)),
            value=shown,
            unit=component(message, _get(fields, 6), 1),
            reference_range=text(message, _get(fields, 7)),
            abnormal_flag=component(message, _get(fields, 8), 1),
            observed_at=hl7_time(_get(fields, 14)) or ordered_at,
            ma_lk=ma_lk,
            stt=component(message, _get(fields, 1), 1),
            service_code=service_code,
            reader=reader,
        ))
    return tuple(found)


def immunizations_from_rxa(message: Hl7Message) -> tuple[Immunization, ...]:
    """RXA (with the RXR that follows it) → Immunization, one per dose, in message order.
    RXA-5 code^text^system, RXA-3 time, RXA-6/7 amount, RXA-15/16 lot and expiry, RXA-17
    manufacturer, RXA-11.4 facility, RXA-20 completion status, RXR-1/2 route and site."""
    doses: list[Immunization] = []
    for name, fields in segments_in_order(message, frozenset({"RXA", "RXR"})):
        if name == "RXR":
            if doses:
                doses[-1] = dataclasses.replace(doses[-1], route=component(message, _get(fields, 1), 1),
                                                site=component(message, _get(fields, 2), 1))
            continue
        vaccine = _get(fields, 5)
        manufacturer = _get(fields, 17)
        doses.append(Immunization(
            vaccine_code=component(message, vaccine, 1),
            vaccine_system=component(message, vaccine, 3),
            vaccine_name=component(message, vaccine, 2),
            administered_at=hl7_time(_get(fields, 3)),
            amount=text(message, _get(fields, 6)),
            unit=component(message, _get(fields, 7), 1),
            lot_number=text(message, _get(fields, 15)),
            expires_on=hl7_time(_get(fields, 16), 8),
            manufacturer=component(message, manufacturer, 2) or component(message, manufacturer, 1),
            facility=component(message, _get(fields, 11), 4),
            completion=component(message, _get(fields, 20), 1).upper(),
        ))
    return tuple(doses)


def records_from_hl7(message: Hl7Message, mapping: Hl7Mapping = DEFAULT_MAPPING) -> RecordSet:
    """The whole record set of an ADT or ORU message under ``mapping``.

    Raises :class:`ContentError` when a placed field cannot be typed (a total that is not a
    number), naming the HL7 field and the XML 130 tag it was meant for.
    """
    person = person_from_pid(message, mapping.identifier_types)
    encounter = encounter_from_pv1(message, mapping)
    records = RecordSet(
        kind=message.message_type,
        person=person,
        encounter=encounter,
        observations=observations_from_obx(message, encounter.ma_lk if encounter else ""),
        diagnosis=diagnosis_from_dg1(message),
        immunizations=immunizations_from_rxa(message),
    )
    return apply_placements(message, records, mapping.placements)


def _typed(fm: FieldMap, value: str, path: FieldPath, occurrence: int):
    if fm.kind == LIST:
        return tuple(v for v in value.split(";") if v)
    if fm.kind == NUMBER:
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ContentError([Issue(102, f"{path}: {value[:20]!r} is not a number ({fm.tag}, '.' as the decimal "
                                           "separator)", location_in(path, occurrence))]) from None
    if fm.tag in TIME_FIELDS:
        return hl7_time(value)
    if fm.tag in _DATE8_TAGS:
        return hl7_time(value, 8)
    if fm.tag == "GIOI_TINH":
        return _SEX.get(value.upper(), "3")
    return value


def _placed_values(message: Hl7Message, placements) -> dict[str, tuple[FieldPath, list[str]]]:
    found: dict[str, tuple[FieldPath, list[str]]] = {}
    for path, tag in placements:
        if tag in found:
            continue
        values = read_path(message, path)
        if any(values):
            found[tag] = (path, values)
    return found


def location_in(path: FieldPath, occurrence: int) -> str:
    """ERR-2 of ``path`` in the n-th occurrence of its segment: ``ZBH^1^4``, or ``PID^1^11^1^9``
    for a component other than the first (of the first repetition, the one a path reads)."""
    where = f"{path.segment}^{occurrence}^{path.field}"
    return where if path.component == 1 else f"{where}^1^{path.component}"


def _list_values(path: FieldPath, values: list[str]) -> list[tuple[str, str]]:
    """Each value of a placed ``;`` list with the location it was read from, every occurrence of
    the segment in turn (an empty occurrence keeps its place, so the n-th values line up)."""
    return [(item, location_in(path, k)) for k, value in enumerate(values, 1) for item in value.split(";")]


def _with_cards(person: Person, placed: Mapping[str, tuple[FieldPath, list[str]]]
                ) -> tuple[Person, list[tuple[str, int, str]]]:
    """Cards placed outside PID-3 (IN1-36, a Z-segment) merged with the PID-3 cards: a number
    already in PID-3 is enriched, a new one added; validity and MA_DKBD columns line up with
    the n-th card (and with PID-3's cards when no number was placed). Also returns where each
    placed value was read, as ``(tag, n, location)`` for the person's n-th card."""
    identifiers = list(person.identifiers)
    if "MA_THE_BHYT" in placed:
        numbers = _list_values(*placed["MA_THE_BHYT"])
    else:
        numbers = [(i.value, "") for i in identifiers if i.system == "BHYT"]
    columns = {tag: _list_values(*placed[tag]) if tag in placed else [] for tag in CARD_COLUMNS}
    read_from = []
    for n, (number, number_location) in enumerate(numbers):
        if not number:
            continue
        at = next((k for k, i in enumerate(identifiers) if i.system == "BHYT" and i.value == number), None)
        card = identifiers[at] if at is not None else Identifier("BHYT", number)
        changes = {}
        for tag, values in columns.items():
            value, location = values[n] if n < len(values) else ("", "")
            if tag in _DATE8_TAGS:
                value = hl7_time(value, 8)
            if value:
                changes[CARD_COLUMNS[tag]] = value
                read_from.append((number, tag, location))
        if number_location:
            read_from.append((number, "MA_THE_BHYT", number_location))
        if changes:
            card = dataclasses.replace(card, **changes)
        if at is None:
            identifiers.append(card)
        else:
            identifiers[at] = card
    ordinal: dict[str, int] = {}
    for card in (i for i in identifiers if i.system == "BHYT"):
        ordinal.setdefault(card.value, len(ordinal) + 1)
    return (dataclasses.replace(person, identifiers=with_bhxh_from_cards(tuple(identifiers))),
            [(tag, ordinal[number], location) for number, tag, location in read_from])


def _with_identifier(person: Person, system: str, value: str, assigner: str = "") -> Person:
    if any(i.system == system and i.value == value for i in person.identifiers):
        return person
    kept = tuple(i for i in person.identifiers if i.system != system)
    return dataclasses.replace(person, identifiers=(Identifier(system, value, assigner),) + kept)


def _first_placed(placed: Mapping[str, tuple[FieldPath, list[str]]], tag: str) -> tuple[str, str]:
    """The first value placed on ``tag`` and where it was read."""
    path, values = placed[tag]
    occurrence, value = next((n, v) for n, v in enumerate(values, 1) if v)
    return value, location_in(path, occurrence)


def apply_placements(message: Hl7Message, records: RecordSet, placements) -> RecordSet:
    """Fill XML1 tags from the profile's field paths (see :class:`Hl7Mapping`), noting where
    each value was read in :attr:`RecordSet.field_locations`."""
    placed = _placed_values(message, placements)
    if not placed:
        return records
    person = records.person or Person()
    encounter = records.encounter
    read_from: list[tuple[str, int, str]] = []
    if IDENTIFIER_TAGS & placed.keys():
        if "SO_CCCD" in placed:
            value, location = _first_placed(placed, "SO_CCCD")
            person = _with_identifier(person, personal_id_system(value), value)
            read_from.append(("SO_CCCD", 1, location))
        if "MA_BN" in placed:
            facility = encounter.facility if encounter else message.sending_facility
            value, location = _first_placed(placed, "MA_BN")
            person = _with_identifier(person, "MR", value, facility)
            read_from.append(("MA_BN", 1, location))
        if placed.keys() & {"MA_THE_BHYT", *CARD_COLUMNS}:
            person, card_locations = _with_cards(person, placed)
            read_from += card_locations
    changes: dict[str, dict] = {"person": {}, "address": {}, "encounter": {}, "diagnosis": {}, "claim": {}}
    for tag, (path, values) in placed.items():
        if tag in IDENTIFIER_TAGS:
            continue
        section, fm = _SECTIONS[tag]
        occurrence, value = next((n, v) for n, v in enumerate(values, 1) if v)
        changes[section][fm.attribute] = _typed(fm, value, path, occurrence)
        read_from.append((tag, 1, location_in(path, occurrence)))
    if changes["address"]:
        changes["person"]["address"] = dataclasses.replace(person.address or Address(), **changes["address"])
    if changes["person"]:
        person = dataclasses.replace(person, **changes["person"])
    if changes["encounter"]:
        encounter = dataclasses.replace(encounter or Encounter(facility=message.sending_facility),
                                        **changes["encounter"])
    diagnosis = records.diagnosis
    if changes["diagnosis"]:
        diagnosis = dataclasses.replace(diagnosis or Diagnosis(), **changes["diagnosis"])
    claim = records.claim
    if changes["claim"]:
        claim = dataclasses.replace(claim or ClaimTotals(), **changes["claim"])
    return dataclasses.replace(records, person=person if records.person or person != Person() else None,
                               encounter=encounter, diagnosis=diagnosis, claim=claim,
                               field_locations=records.field_locations + tuple(read_from))
