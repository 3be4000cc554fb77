"""Canonical records → an XML 130 file in its QĐ 4750 form.

What the writer guarantees (vn-standards §1.2–1.4): UTF-8; the GIAMDINHHS envelope with one HOSO
per record set and one base64 FILEHOSO per table that has content; every annex field of a written
table present, in annex order, empty when unknown; times as 12-character ``yyyymmddHHMM``;
``;`` lists; ``.`` decimals with the annex's places (``DEFAULT_DECIMALS``). Unmapped fields kept
in ``extra`` follow the annex fields; 4210-only fields are not written. ``CHUKYDONVI`` is left
empty for the facility's signer: the signature profile is not published (open question 4).
"""
from __future__ import annotations

import base64
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal

from lxml import etree

from gateway.formats.xml130_tables import (
    CHECK_IN,
    CHECK_IN_DOCUMENT,
    CHECK_IN_ORDER,
    DEFAULT_DECIMALS,
    LINE_TABLES,
    LIST,
    NUMBER,
    TIME_FIELDS,
    XML1_ADDRESS,
    XML1_CLAIM,
    XML1_DIAGNOSIS,
    XML1_ENCOUNTER,
    XML1_LEGACY_ONLY,
    XML1_ORDER,
    XML1_PERSON,
    XML7,
    XML7_ORDER,
    XML7_PARENTS,
    XML13,
    XML13_ORDER,
    XML14,
    XML14_ORDER,
    ClaimFile,
    FieldMap,
    TableSpec,
)
from gateway.model.records import Identifier, Person, RecordSet

_NSMAP = {"xsd": "http://www.w3.org/2001/XMLSchema", "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
#: Which SO_CCCD value to write when a person holds several kinds: strongest first.
_SO_CCCD_SYSTEMS = ("CCCD", "CMND", "PASSPORT", "OTHER_ID")
#: Which identifier of a parent to write in XML7 MA_ME / MA_CHA: the field's own (the BHXH
#: number), then the personal id that replaces it (NĐ 102/2025), then what a sender may put there.
_HEALTH_ID_SYSTEMS = ("BHXH", "CCCD", "BHYT", "CMND", "PASSPORT", "OTHER_ID")


def time12(value: str) -> str:
    """A date or year as the 12-character form: ``19850515`` → ``198505150000``,
    ``1985`` → ``198500000000`` (unknown day and month are ``0000`` in NGAY_SINH)."""
    if len(value) == 8:
        return value + "0000"
    if len(value) == 4:
        return value + "00000000"
    return value


def _number(value: Decimal | None, places: int | None) -> str:
    if value is None:
        return ""
    if places is not None:
        value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return format(value, "f")


def _text(record: object, field: FieldMap, decimals: Mapping[str, int]) -> str:
    value = getattr(record, field.attribute)
    if field.kind == NUMBER:
        return _number(value, decimals.get(field.tag))
    if field.kind == LIST:
        return ";".join(value)
    return time12(value) if field.tag in TIME_FIELDS else value


def _values(record: object | None, fields: tuple[FieldMap, ...], decimals: Mapping[str, int]) -> dict[str, str]:
    if record is None:
        return {}
    return {f.tag: _text(record, f, decimals) for f in fields}


def _join_cards(cards: list[Identifier], attribute: str) -> str:
    return ";".join(getattr(card, attribute) for card in cards).rstrip(";")


def _person_values(person: Person | None, temporary_card: str = "") -> dict[str, str]:
    """XML1's person fields. ``temporary_card`` (XML7 MA_THE_TAM) is left out of MA_THE_BHYT when
    the person holds it without validity: XML1 did not list it (a card XML1 lists has GT_THE_TU
    and GT_THE_DEN), only XML7 did."""
    if person is None:
        return {}
    values = {f.tag: time12(getattr(person, f.attribute)) if f.tag in TIME_FIELDS else getattr(person, f.attribute)
              for f in XML1_PERSON}
    if person.address is not None:
        values.update({f.tag: getattr(person.address, f.attribute) for f in XML1_ADDRESS})
    cards = [i for i in person.identifiers if i.system == "BHYT" and not (
        i.value == temporary_card and not (i.valid_from or i.valid_to or i.registered_facility))]
    values["HO_TEN"] = person.full_name
    values["SO_CCCD"] = next((v for v in map(person.identifier, _SO_CCCD_SYSTEMS) if v), "")
    values["MA_BN"] = person.identifier("MR")
    values["MA_THE_BHYT"] = _join_cards(cards, "value")
    values["MA_DKBD"] = _join_cards(cards, "registered_facility")
    values["GT_THE_TU"] = _join_cards(cards, "valid_from")
    values["GT_THE_DEN"] = _join_cards(cards, "valid_to")
    return values


def xml1_values(records: RecordSet, decimals: Mapping[str, int] = DEFAULT_DECIMALS) -> dict[str, str]:
    """The XML1 (TONG_HOP) field texts of a record set, by tag. XML13, XML14 and check-in repeat
    some of them, so the reader compares their copies against these."""
    encounter = records.encounter
    values = _values(encounter, XML1_ENCOUNTER, decimals)
    letter = records.discharge_letter
    values.update(_person_values(records.person, letter.temporary_card if letter else ""))
    values.update(_values(records.diagnosis, XML1_DIAGNOSIS, decimals))
    values.update(_values(records.claim, XML1_CLAIM, decimals))
    return values


def _parent_values(person: Person | None) -> dict[str, str]:
    """XML7 MA_ME / HO_TEN_ME and MA_CHA / HO_TEN_CHA from the person's mother and father."""
    values: dict[str, str] = {}
    for relationship, code, name in XML7_PARENTS:
        parent = next((r for r in person.related if r.relationship == relationship), None) if person else None
        if parent is not None:
            by_system: dict[str, str] = {}
            for identifier in parent.identifiers:
                by_system.setdefault(identifier.system, identifier.value)
            values[code] = next((by_system[s] for s in _HEALTH_ID_SYSTEMS if s in by_system), "")
            values[name] = " ".join(p for p in (parent.family, parent.middle, parent.given) if p)
    return values


def _add_fields(parent: etree._Element, tag: str, order: tuple[str, ...], values: Mapping[str, str],
                extra: tuple[tuple[str, str], ...], skip: frozenset[str] = frozenset(),
                copies: frozenset[str] = frozenset()) -> etree._Element:
    """A record element with every ``order`` field, then the extras the annex does not list.

    ``copies`` are fields a letter repeats from XML1: a copy the sender wrote differently was
    kept in ``extra`` and replaces the XML1 value. 4210-only fields in ``skip`` are dropped.
    """
    record = etree.SubElement(parent, tag) if parent is not None else etree.Element(tag)
    overrides = {name: text for name, text in extra if name in copies}
    for name in order:
        etree.SubElement(record, name).text = overrides.get(name, values.get(name, ""))
    for name, text in extra:
        if name not in overrides and name not in skip:
            etree.SubElement(record, name).text = text
    return record


def _line_table(spec: TableSpec, lines: tuple, ma_lk: str, decimals: Mapping[str, int]) -> etree._Element:
    root = etree.Element(spec.root)
    listing = etree.SubElement(root, spec.list_tag)
    order = tuple(f.tag for f in spec.fields)
    for n, line in enumerate(lines, 1):
        values = _values(line, spec.fields, decimals)
        values["MA_LK"] = values["MA_LK"] or ma_lk
        values["STT"] = values["STT"] or str(n)
        _add_fields(listing, spec.record, order, values, line.extra, spec.legacy_only)
    return root


def _letter(spec: TableSpec, order: tuple[str, ...], letter: object, base: dict[str, str],
            decimals: Mapping[str, int]) -> etree._Element:
    values = dict(base)
    values.update(_values(letter, spec.fields, decimals))
    values["MA_LK"] = values["MA_LK"] or base.get("MA_LK", "")
    copies = frozenset(order) - {f.tag for f in spec.fields}
    return _add_fields(None, spec.root, order, values, letter.extra, copies=copies)


def _serialise(root: etree._Element, pretty: bool = False) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=pretty)


def _serialise_document(root: etree._Element, document_id: str) -> bytes:
    if not document_id:
        return _serialise(root, pretty=True)
    root.addprevious(etree.ProcessingInstruction("hssk-id", document_id.replace("?>", "")))
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="utf-8", pretty_print=True)


def record_tables(records: RecordSet, decimals: Mapping[str, int] = DEFAULT_DECIMALS) -> list[tuple[str, bytes]]:
    """The FILEHOSO tables of one record set as ``(LOAIHOSO, UTF-8 XML)``, in table order."""
    base = xml1_values(records, decimals)
    encounter = records.encounter
    ma_lk = base.get("MA_LK", "")
    tables = [("XML1", _serialise(_add_fields(None, "TONG_HOP", XML1_ORDER, base,
                                              encounter.extra if encounter else (), XML1_LEGACY_ONLY)))]
    for spec, lines in zip(LINE_TABLES, (records.medications, records.services, records.observations, records.notes)):
        if lines:
            tables.append((spec.kind, _serialise(_line_table(spec, lines, ma_lk, decimals))))
    if records.discharge_letter is not None:
        tables.append(("XML7", _serialise(_letter(XML7, XML7_ORDER, records.discharge_letter,
                                                  {**base, **_parent_values(records.person)}, decimals))))
    if records.referral is not None:
        tables.append(("XML13", _serialise(_letter(XML13, XML13_ORDER, records.referral, base, decimals))))
    if records.appointment is not None:
        tables.append(("XML14", _serialise(_letter(XML14, XML14_ORDER, records.appointment, base, decimals))))
    tables.extend((raw.kind, raw.content.encode("utf-8")) for raw in records.other_tables)
    return sorted(tables, key=lambda table: int(table[0][3:]))


def _claim_document(claim: ClaimFile, decimals: Mapping[str, int], document_id: str = "") -> bytes:
    facility = claim.facility or next((r.encounter.facility for r in claim.records if r.encounter), "")
    root = etree.Element("GIAMDINHHS", nsmap=_NSMAP)
    etree.SubElement(etree.SubElement(root, "THONGTINDONVI"), "MACSKCB").text = facility
    info = etree.SubElement(root, "THONGTINHOSO")
    etree.SubElement(info, "NGAYLAP").text = claim.created_on
    etree.SubElement(info, "SOLUONGHOSO").text = str(len(claim.records))
    listing = etree.SubElement(info, "DANHSACHHOSO")
    for records in claim.records:
        hoso = etree.SubElement(listing, "HOSO")
        for kind, content in record_tables(records, decimals):
            file = etree.SubElement(hoso, "FILEHOSO")
            etree.SubElement(file, "LOAIHOSO").text = kind
            etree.SubElement(file, "NOIDUNGFILE").text = base64.b64encode(content).decode("ascii")
    etree.SubElement(root, "CHUKYDONVI").text = ""
    return _serialise_document(root, document_id)


def _check_in_document(claim: ClaimFile, decimals: Mapping[str, int], document_id: str = "") -> bytes:
    root = etree.Element(CHECK_IN.root)
    listing = etree.SubElement(root, CHECK_IN.list_tag)
    for n, records in enumerate(claim.records, 1):
        values = xml1_values(records, decimals)
        values.update(_values(records.check_in, CHECK_IN.fields, decimals))
        values["STT"] = values.get("STT") or str(n)
        extra = (records.encounter.extra if records.encounter else ()) + (
            records.check_in.extra if records.check_in else ())
        _add_fields(listing, CHECK_IN.record, CHECK_IN_ORDER, values, extra, XML1_LEGACY_ONLY)
    etree.SubElement(root, "CHUKYDONVI").text = ""
    return _serialise_document(root, document_id)


def write_xml130(claim: ClaimFile, *, decimals: Mapping[str, int] = DEFAULT_DECIMALS, document_id: str = "") -> bytes:
    """Render ``claim`` as a QĐ 4750 file: the GIAMDINHHS envelope, or a check-in file when
    ``claim.document`` is ``CHECKIN``. A claim read from a 4210 file comes out as 4750.

    ``document_id`` (the gateway's idempotency key) goes into an ``<?hssk-id …?>`` processing
    instruction before the root: the annex has no id field, and a processing instruction is
    invisible to BHXH-style validators that only read elements."""
    if claim.document == CHECK_IN_DOCUMENT:
        return _check_in_document(claim, decimals, document_id)
    return _claim_document(claim, decimals, document_id)
