"""An XML 130 file (QĐ 130 / 4750, or a legacy QĐ 4210 file) → canonical records.

The outer GIAMDINHHS document and every base64 FILEHOSO table are parsed by
``xml_safety.parse_untrusted_xml``, so no table can smuggle in a DTD or exceed the size bound.
Problems the sender must fix (bad base64, a number with a ``,``, a missing XML1) are collected and
raised together as one :class:`ContentError`, each naming the table, line and field. Rules about
the *values* (CCCD shape, totals…) are not checked here but in ``gateway.rules.validation``, so a
caller can read a file and still show it when it breaks a rule.

4210 files are recognised by their table forms (``DSACH_*`` roots, XML1 ``MA_THE`` / ``T_TONGCHI``
…) and mapped to the same model under the documented renames in ``xml130_tables``; where 4210
lacks a 4750 value, :class:`LegacyRules` says how it is derived.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from lxml import etree

from gateway.formats.xml130_tables import (
    CHECK_IN,
    CHECK_IN_DOCUMENT,
    LINE_TABLES,
    LIST,
    NUMBER,
    RAW_TABLES,
    XML1_ADDRESS,
    XML1_CLAIM,
    XML1_DIAGNOSIS,
    XML1_ENCOUNTER,
    XML1_IDENTIFIER_TAGS,
    XML1_LEGACY_MARKERS,
    XML1_LEGACY_RENAMES,
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
from gateway.formats.xml130_writer import xml1_values
from gateway.formats.xml_safety import DEFAULT_MAX_BYTES, parse_untrusted_xml
from gateway.model.outcome import ContentError, Issue
from gateway.model.records import (
    Address,
    CheckIn,
    ClaimTotals,
    Diagnosis,
    DischargeLetter,
    Encounter,
    Identifier,
    Person,
    RawTable,
    RecordSet,
    RelatedPerson,
)

CLAIM_KIND = "XML130"
CHECK_IN_KIND = "XML130^CHECKIN"

_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")
_BHYT_CARD = re.compile(r"[A-Z]{2}\d{13}")
_MAPPED_TABLES = frozenset({"XML1", "XML2", "XML3", "XML4", "XML5", "XML7", "XML13", "XML14"})
_XML1_MAPPED = frozenset(
    {fm.tag for fms in (XML1_ENCOUNTER, XML1_PERSON, XML1_ADDRESS, XML1_DIAGNOSIS, XML1_CLAIM) for fm in fms}
    | XML1_IDENTIFIER_TAGS)


@dataclass(frozen=True)
class LegacyRules:
    """How a 4210 file fills 4750 fields 4210 did not have. The reference does not state these
    mappings [U], so each is a parameter with the gateway's best reading as the default."""

    #: 4210 MA_LYDO_VVIEN (1 đúng tuyến, 2 cấp cứu, 3 trái tuyến, 4 thông tuyến) → MA_DOITUONG_KCB
    #: (1.x right route, 2 emergency, 3.x off-route). Unlisted values are copied as they are.
    reason_to_patient_class: Mapping[str, str] = field(
        default_factory=lambda: {"1": "1", "2": "2", "3": "3", "4": "3"})
    #: THANH_TIEN_BH and T_TONGCHI_BH, absent in 4210, = T_BHTT + T_BNCCT (the amount inside the
    #: BHYT scope, consistent with 4750's T_BHTT = T_TONGCHI_BH − T_BNCCT). False leaves them empty.
    derive_insurance_amounts: bool = True


def _local(element: etree._Element) -> str:
    """The tag without its namespace. Plain string work: ``etree.QName`` costs a C object per
    call, and a 50-line claim file has tens of thousands of fields."""
    tag = element.tag
    return tag.rpartition("}")[2] if tag[0] == "{" else tag


def _pairs(element: etree._Element) -> list[tuple[str, str]]:
    """The record's child fields as ``(tag, text)``, text stripped (CDATA reads as text).
    Comments and processing instructions have a non-string tag and are skipped."""
    pairs = []
    for child in element:
        tag = child.tag
        if tag.__class__ is str:
            pairs.append((tag.rpartition("}")[2] if tag[0] == "{" else tag, (child.text or "").strip()))
    return pairs


@functools.cache
def _required_fields(cls: type) -> tuple[str, ...]:
    """Fields without a default, which a table may leave out: they are filled with ''."""
    return tuple(f.name for f in dataclasses.fields(cls)
                 if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


class _Reader:
    """State of one file read: the issues found so far and whether 4210 forms were seen."""

    def __init__(self, max_bytes: int, legacy_rules: LegacyRules) -> None:
        self.max_bytes = max_bytes
        self.rules = legacy_rules
        self.issues: list[Issue] = []
        self.legacy = False

    def fail(self, code: int, location: str, text: str) -> None:
        self.issues.append(Issue(code, text, location))

    def typed(self, fm: FieldMap, text: str, where: str, location: str):
        if fm.kind == LIST:
            return tuple(text.split(";")) if text else ()
        if fm.kind != NUMBER:
            return text
        if not text:
            return None
        if not _NUMBER.fullmatch(text):
            shown = text if len(text) <= 20 else text[:20] + "…"
            self.fail(102, f"{location}^{fm.tag}", f"{where} {fm.tag}: {shown!r} is not a number "
                                                    "(digits, '.' as the decimal separator)")
            return None
        return Decimal(text)

    def build(self, cls: type, fields: tuple[FieldMap, ...], values: Mapping[str, str], where: str,
              location: str, **more):
        kwargs = {fm.attribute: self.typed(fm, values[fm.tag], where, location)
                  for fm in fields if fm.tag in values}
        for name in _required_fields(cls):
            kwargs.setdefault(name, "")
        return cls(**kwargs, **more)

    # -- XML1 and the fields other tables repeat from it ------------------------------------

    def xml1_parts(self, pairs: list[tuple[str, str]], location: str):
        """Person, encounter, diagnosis and totals from XML1-named fields (XML1 or check-in)."""
        if any(tag in XML1_LEGACY_MARKERS for tag, _ in pairs):
            self.legacy = True
            renames = dict(XML1_LEGACY_RENAMES)
            pairs = [(renames.get(tag, tag), text) for tag, text in pairs]
        values: dict[str, str] = {}
        extra = []
        for tag, text in pairs:
            if tag in _XML1_MAPPED and tag not in values:
                values[tag] = text
            else:
                extra.append((tag, text))
        if self.legacy:
            self._legacy_xml1(values, extra)
        where = location.split("^")[0]
        encounter = self.build(Encounter, XML1_ENCOUNTER, values, where, location, extra=tuple(extra))
        person = self._person(values, where, location)
        diagnosis = self.build(Diagnosis, XML1_DIAGNOSIS, values, where, location) \
            if any(fm.tag in values for fm in XML1_DIAGNOSIS) else None
        claim = self.build(ClaimTotals, XML1_CLAIM, values, where, location) \
            if any(fm.tag in values for fm in XML1_CLAIM) else None
        if claim is not None and self.legacy and self.rules.derive_insurance_amounts \
                and claim.total_insurance is None and (claim.fund_paid is not None or claim.patient_copay is not None):
            claim = dataclasses.replace(
                claim, total_insurance=(claim.fund_paid or Decimal(0)) + (claim.patient_copay or Decimal(0)))
        return person, encounter, diagnosis, claim

    def _legacy_xml1(self, values: dict[str, str], extra: list[tuple[str, str]]) -> None:
        reason = next((text for tag, text in extra if tag == "MA_LYDO_VVIEN"), "")
        if reason and "MA_DOITUONG_KCB" not in values:
            values["MA_DOITUONG_KCB"] = self.rules.reason_to_patient_class.get(reason, reason)
        encounter_class = values.get("MA_LOAI_KCB", "")
        if encounter_class.isdigit() and len(encounter_class) == 1:
            values["MA_LOAI_KCB"] = encounter_class.zfill(2)

    def _person(self, values: Mapping[str, str], where: str, location: str) -> Person:
        family, middle, given = _split_name(values.get("HO_TEN", ""))
        address = self.build(Address, XML1_ADDRESS, values, where, location) \
            if any(values.get(fm.tag) for fm in XML1_ADDRESS) else None
        return self.build(Person, XML1_PERSON, values, where, location, identifiers=_identifiers(values),
                          family=family, middle=middle, given=given, address=address)

    # -- tables ---------------------------------------------------------------------------

    def lines(self, spec: TableSpec, root: etree._Element) -> tuple:
        legacy = _local(root) == spec.legacy_root and spec.legacy_root != spec.root
        self.legacy |= legacy
        renames = dict(spec.legacy_renames) if legacy else {}
        by_tag = {fm.tag: fm for fm in spec.fields}
        lines = []
        for n, element in enumerate((e for e in root.iter(spec.record)), 1):
            location = f"{spec.kind}^{n}"
            values: dict[str, str] = {}
            extra = []
            for tag, text in _pairs(element):
                target = renames.get(tag, tag)
                if target in by_tag and target not in values:
                    values[target] = text
                else:
                    extra.append((tag, text))
            line = self.build(spec.record_class, spec.fields, values, f"{spec.kind} line {n}", location,
                              extra=tuple(extra))
            lines.append(self._legacy_line(spec, line) if legacy else line)
        return tuple(lines)

    def _legacy_line(self, spec: TableSpec, line):
        changes = {}
        if self.rules.derive_insurance_amounts and getattr(line, "amount_insurance", 0) is None \
                and (line.fund_paid is not None or line.patient_copay is not None):
            changes["amount_insurance"] = (line.fund_paid or Decimal(0)) + (line.patient_copay or Decimal(0))
        if spec.kind == "XML3" and line.unit_price_insurance is None:
            changes["unit_price_insurance"] = line.unit_price_hospital
        return dataclasses.replace(line, **changes) if changes else line

    def letter(self, spec: TableSpec, order: tuple[str, ...], pairs: list[tuple[str, str]],
               base: Mapping[str, str]):
        """XML7 / XML13 / XML14: own fields mapped; a repeated XML1 field kept only if it differs."""
        own = {fm.tag for fm in spec.fields}
        values: dict[str, str] = {}
        extra = []
        for tag, text in pairs:
            if tag in own and tag not in values:
                values[tag] = text
            elif tag in order and tag not in own and text == base.get(tag, ""):
                continue
            else:
                extra.append((tag, text))
        return self.build(spec.record_class, spec.fields, values, spec.kind, f"{spec.kind}^1", extra=tuple(extra))

    def discharge_letter(self, root: etree._Element,
                         base: Mapping[str, str]) -> tuple[DischargeLetter, tuple[RelatedPerson, ...]]:
        """XML7: the letter, and the patient's mother and father it names (MA_ME / HO_TEN_ME,
        MA_CHA / HO_TEN_CHA), which belong to the person, not the letter."""
        parent_tags = {tag for _, code, name in XML7_PARENTS for tag in (code, name)}
        parents: dict[str, str] = {}
        rest = []
        for tag, text in _pairs(root):
            if tag in parent_tags and tag not in parents:
                parents[tag] = text
            else:
                rest.append((tag, text))
        related = tuple(
            RelatedPerson(relationship, *_split_name(parents.get(name, "")),
                          identifiers=(Identifier(health_id_system(parents[code]), parents[code]),)
                          if parents.get(code) else ())
            for relationship, code, name in XML7_PARENTS if parents.get(code) or parents.get(name))
        return self.letter(XML7, XML7_ORDER, rest, base), related

    def check_in(self, record: etree._Element, n: int) -> RecordSet:
        pairs = _pairs(record)
        own = {fm.tag for fm in CHECK_IN.fields}
        values: dict[str, str] = {}
        rest = []
        for tag, text in pairs:
            if tag in own and tag not in values:
                values[tag] = text
            else:
                rest.append((tag, text))
        person, encounter, _, _ = self.xml1_parts(rest, f"CHECKIN^{n}")
        first_cost = self.build(CheckIn, CHECK_IN.fields, values, f"CHECKIN record {n}", f"CHECKIN^{n}")
        return RecordSet(kind=CHECK_IN_KIND, person=person, encounter=encounter, check_in=first_cost)

    def table_root(self, kind: str, content: str, location: str) -> bytes | None:
        try:
            return base64.b64decode("".join(content.split()), validate=True)
        except (binascii.Error, ValueError):
            self.fail(102, location, f"{kind} NOIDUNGFILE: not valid base64")
            return None

    def hoso(self, element: etree._Element, n: int) -> RecordSet | None:
        tables: dict[str, bytes] = {}
        for file in element.iter("FILEHOSO"):
            kind = (file.findtext("LOAIHOSO") or "").strip().upper()
            location = f"HOSO^{n}^FILEHOSO^{kind or '?'}"
            if kind in tables:
                self.fail(102, location, f"HOSO {n}: table {kind} appears twice")
                continue
            content = self.table_root(kind, file.findtext("NOIDUNGFILE") or "", location)
            if content is not None:
                tables[kind] = content
        if "XML1" not in tables:
            self.fail(101, f"HOSO^{n}^FILEHOSO^XML1", f"HOSO {n}: XML1 (TONG_HOP) is required")
            return None
        xml1 = parse_untrusted_xml(tables["XML1"], max_bytes=self.max_bytes, where="XML1")
        record = xml1 if _local(xml1) == "TONG_HOP" else xml1.find(".//TONG_HOP")
        if record is None:
            self.fail(102, "XML1", "XML1: root element TONG_HOP is missing")
            return None
        person, encounter, diagnosis, claim = self.xml1_parts(_pairs(record), "XML1^1")
        parts = {"person": person, "encounter": encounter, "diagnosis": diagnosis, "claim": claim}
        for spec, attribute in zip(LINE_TABLES, ("medications", "services", "observations", "notes")):
            if spec.kind in tables:
                parts[attribute] = self.lines(spec, parse_untrusted_xml(
                    tables[spec.kind], max_bytes=self.max_bytes, where=spec.kind))
        partial = RecordSet(kind=CLAIM_KIND, **parts)
        base = xml1_values(partial)
        for spec, order, attribute in ((XML13, XML13_ORDER, "referral"), (XML14, XML14_ORDER, "appointment")):
            if spec.kind in tables:
                parts[attribute] = self.letter(spec, order, _pairs(parse_untrusted_xml(
                    tables[spec.kind], max_bytes=self.max_bytes, where=spec.kind)), base)
        if "XML7" in tables:
            letter, related = self.discharge_letter(
                parse_untrusted_xml(tables["XML7"], max_bytes=self.max_bytes, where="XML7"), base)
            parts["discharge_letter"] = letter
            parts["person"] = dataclasses.replace(
                person, related=person.related + related,
                identifiers=_with_temporary_card(person.identifiers, letter.temporary_card))
        raw = []
        for kind in sorted(set(tables) - _MAPPED_TABLES, key=lambda k: (len(k), k)):
            if kind not in RAW_TABLES:
                self.fail(103, f"HOSO^{n}^FILEHOSO^{kind}", f"HOSO {n}: LOAIHOSO {kind!r} is not an XML 130 table")
                continue
            parse_untrusted_xml(tables[kind], max_bytes=self.max_bytes, where=kind)
            raw.append(RawTable(kind, tables[kind].decode("utf-8")))
        return RecordSet(kind=CLAIM_KIND, other_tables=tuple(raw), **parts)


def _identifiers(values: Mapping[str, str]) -> tuple[Identifier, ...]:
    """SO_CCCD, the BHYT card list with validity and MA_DKBD, the BHXH number inside each card,
    and MA_BN as the facility's medical-record number."""
    found = []
    personal = values.get("SO_CCCD", "")
    if personal:
        found.append(Identifier(personal_id_system(personal), personal))
    cards = values.get("MA_THE_BHYT", "")
    if cards:
        def column(tag: str, i: int) -> str:
            items = values.get(tag, "").split(";")
            return items[i] if i < len(items) else ""
        numbers = cards.split(";")
        found.extend(Identifier("BHYT", card, valid_from=column("GT_THE_TU", i), valid_to=column("GT_THE_DEN", i),
                                registered_facility=column("MA_DKBD", i)) for i, card in enumerate(numbers))
        bhxh = dict.fromkeys(card[5:] for card in numbers if _BHYT_CARD.fullmatch(card))
        found.extend(Identifier("BHXH", number) for number in bhxh)
    if values.get("MA_BN"):
        found.append(Identifier("MR", values["MA_BN"], values.get("MA_CSKCB", "")))
    return tuple(found)


def _split_name(text: str) -> tuple[str, str, str]:
    """HO_TEN as (family, middle, given): the first word, the words between, the last word."""
    words = text.split()
    return (words[0], " ".join(words[1:-1]), words[-1]) if len(words) > 1 else ("", "", words[0] if words else "")


def _with_temporary_card(identifiers: tuple[Identifier, ...], card: str) -> tuple[Identifier, ...]:
    """The person's identifiers with XML7 MA_THE_TAM, the child's temporary card, as a BHYT card
    (after XML1's cards, with no validity: XML1 did not list it) and the BHXH number it carries,
    unless XML1 named them already."""
    if not card:
        return identifiers
    known = {(i.system, i.value) for i in identifiers}
    carried = [Identifier("BHYT", card)] + ([Identifier("BHXH", card[5:])] if _BHYT_CARD.fullmatch(card) else [])
    added = tuple(i for i in carried if (i.system, i.value) not in known)
    order = {"BHYT": 1, "BHXH": 2, "MR": 3}
    return tuple(sorted(identifiers + added, key=lambda i: order.get(i.system, 0))) if added else identifiers


def health_id_system(value: str) -> str:
    """XML7 MA_ME and MA_CHA say "mã số định danh y tế (mã số BHXH)" (PL4750): in practice a
    10-digit BHXH number or, the health identifier since NĐ 102/2025, the 12-digit personal id;
    a sender may write the parent's BHYT card. Any other shape is read as SO_CCCD's would be."""
    if value.isdigit() and len(value) == 10:
        return "BHXH"
    if _BHYT_CARD.fullmatch(value):
        return "BHYT"
    return personal_id_system(value)


def personal_id_system(value: str) -> str:
    """SO_CCCD holds a CCCD, an old CMND, a passport or an e-ID account code (PL4750)."""
    if value.isdigit() and len(value) == 12:
        return "CCCD"
    if value.isdigit() and len(value) == 9:
        return "CMND"
    if re.fullmatch(r"[A-Z]{1,2}\d{6,8}", value):
        return "PASSPORT"
    return "OTHER_ID"


def read_xml130(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES,
                legacy_rules: LegacyRules | None = None) -> ClaimFile:
    """Read a GIAMDINHHS claim file (130/4750 or 4210) or a check-in file into canonical records.

    Raises :class:`ContentError` (``UnsafeXmlError`` / ``XmlTooLargeError`` for refused
    documents) with one issue per problem found.
    """
    reader = _Reader(max_bytes, legacy_rules or LegacyRules())
    root = parse_untrusted_xml(data, max_bytes=max_bytes, where="GIAMDINHHS")
    tag = _local(root)
    if tag == CHECK_IN.root:
        records = tuple(reader.check_in(r, n) for n, r in enumerate(root.iter(CHECK_IN.record), 1))
        if reader.issues:
            raise ContentError(reader.issues)
        facility = next((r.encounter.facility for r in records if r.encounter), "")
        return ClaimFile(records, facility, "", "4750", CHECK_IN_DOCUMENT)
    if tag != "GIAMDINHHS":
        raise ContentError([Issue(102, f"XML: root element is {tag}, expected GIAMDINHHS or {CHECK_IN.root}", "XML")])
    records = tuple(r for r in (reader.hoso(h, n) for n, h in enumerate(root.iter("HOSO"), 1)) if r is not None)
    if not records and not reader.issues:
        reader.fail(101, "DANHSACHHOSO", "GIAMDINHHS: DANHSACHHOSO holds no HOSO")
    if reader.issues:
        raise ContentError(reader.issues)
    return ClaimFile(
        records,
        facility=(root.findtext("THONGTINDONVI/MACSKCB") or "").strip(),
        created_on=(root.findtext("THONGTINHOSO/NGAYLAP") or "").strip(),
        standard="4210" if reader.legacy else "4750",
    )
