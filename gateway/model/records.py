"""The canonical record model every adapter normalises into.

Plain frozen dataclasses; each field names the XML 130 / HL7 v2 field it maps to, so a reader can
go from a Vietnamese claim file to this model without a mapping table. Person, encounter and
observation live here; the claim tables (XML2, XML3, XML5, XML7, XML13, XML14, check-in, XML1 totals)
live in ``gateway.model.claim`` and are re-exported below. Every field added after the first
version has a default, so older adapters keep constructing records positionally.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from decimal import Decimal

from gateway.model.claim import (
    Appointment,
    CheckIn,
    ClaimTotals,
    ClinicalNote,
    Diagnosis,
    DischargeLetter,
    Extra,
    MedicationLine,
    Referral,
    RawTable,
    ServiceLine,
    extra_value,
)

__all__ = [
    "Address", "Appointment", "CheckIn", "ClaimTotals", "ClinicalNote", "Diagnosis", "DischargeLetter", "Encounter",
    "Extra", "Identifier", "MedicationLine", "Observation", "Person", "RawTable", "RecordSet",
    "Referral", "RelatedPerson", "ServiceLine", "as_plain", "extra_value",
]


@dataclass(frozen=True)
class Identifier:
    """A person identifier. ``system`` is one of ``CCCD`` (12-digit personal id, SO_CCCD / PID-3
    type NI; the health identifier since NĐ 102/2025), ``CMND`` (old 9-digit id card), ``BHYT``
    (health-insurance card, MA_THE_BHYT / IN1-36), ``BHXH`` (10-digit social insurance number,
    the health identifier of QĐ 2153/2020), ``MR`` (facility medical record number, MA_BN),
    ``PASSPORT``, or ``OTHER_ID`` (a SO_CCCD value of no recognised shape, e.g. an e-ID account).

    A BHYT card also carries its validity and registered facility, because a patient may hold
    several cards in one stay (MA_THE_BHYT, GT_THE_TU, GT_THE_DEN and MA_DKBD are `;` lists).
    """

    system: str
    value: str
    assigner: str = ""
    valid_from: str = ""  # GT_THE_TU, yyyymmdd (BHYT cards)
    valid_to: str = ""  # GT_THE_DEN, yyyymmdd (BHYT cards)
    registered_facility: str = ""  # MA_DKBD, 5 characters (BHYT cards)


@dataclass(frozen=True)
class Address:
    """Residence: DIA_CHI plus the administrative codes (QĐ 124/2004; see vn-standards §3.4)."""

    text: str = ""  # DIA_CHI
    province: str = ""  # MATINH_CU_TRU: last 2 digits of the province admin code
    district: str = ""  # MAHUYEN_CU_TRU, 3 characters (no district level after 07/2025)
    commune: str = ""  # MAXA_CU_TRU, 5 characters


@dataclass(frozen=True)
class RelatedPerson:
    """A mother, father or guardian, e.g. the name a newborn is registered under (XML7 MA_ME,
    MA_CHA; HL7 NK1)."""

    relationship: str  # "mother", "father" or "guardian"
    family: str = ""
    middle: str = ""
    given: str = ""
    identifiers: tuple[Identifier, ...] = ()
    phone: str = ""


_BIRTH_LENGTH_PRECISION = {4: "year", 6: "month", 8: "day", 12: "minute"}


@dataclass(frozen=True)
class Person:
    """HO_TEN split as family / middle / given (PID-5.1 / 5.3 / 5.2), diacritics kept as sent."""

    identifiers: tuple[Identifier, ...] = ()
    family: str = ""
    middle: str = ""
    given: str = ""
    birth_date: str = ""  # NGAY_SINH, yyyymmdd[HHMM]; precision is the length that was sent
    sex: str = ""  # GIOI_TINH: 1 male, 2 female, 3 unknown
    address: Address | None = None  # DIA_CHI, MATINH_CU_TRU, MAHUYEN_CU_TRU, MAXA_CU_TRU
    phone: str = ""  # DIEN_THOAI
    nationality: str = ""  # MA_QUOCTICH, 3 characters (000 = Việt Nam in vendor defaults)
    ethnicity: str = ""  # MA_DANTOC, 2 characters
    occupation: str = ""  # MA_NGHE_NGHIEP, 5 characters
    blood_group: str = ""  # NHOM_MAU (new in 4750)
    related: tuple[RelatedPerson, ...] = ()  # mother / father / guardian links
    #: Identifiers this person was known by before a merge (HL7 ADT^A40 MRG-1) or a re-issue:
    #: a receiver links or retires them. XML 130 has no place for them.
    previous_identifiers: tuple[Identifier, ...] = ()
    multiple_birth: str = ""  # PID-24: Y one of twins (or more), N a single birth
    birth_order: str = ""  # PID-25: 1, 2 … among the children of one birth
    #: Why this person is known only provisionally (``newborn``: a child registered under the
    #: mother's name, "CON BÀ …"): the person index keeps it apart, under the mother, until a
    #: record names the child on its own (:mod:`gateway.rules.person_index`). Empty for a person
    #: named by the record itself.
    provisional: str = ""

    def identifier(self, system: str) -> str:
        return next((i.value for i in self.identifiers if i.system == system), "")

    @property
    def full_name(self) -> str:
        """HO_TEN as one string: family, middle and given joined by single spaces."""
        return " ".join(part for part in (self.family, self.middle, self.given) if part)

    @property
    def birth_date_precision(self) -> str:
        """``year``, ``month``, ``day`` or ``minute``: how much of NGAY_SINH is known.

        XML 130 writes an unknown day and month as ``0000`` and an unknown time as ``0000``, so
        ``198500000000`` is year precision and ``19850515`` / ``198505150000`` day precision.
        """
        value = self.birth_date
        if not value:
            return ""
        if len(value) >= 8 and value[4:8] == "0000":
            return "year"
        if len(value) >= 8 and value[6:8] == "00":
            return "month"
        if len(value) == 12 and value[8:] == "0000":
            return "day"
        return _BIRTH_LENGTH_PRECISION.get(len(value), "")


@dataclass(frozen=True)
class Encounter:
    """One episode of care. ``ma_lk`` (MA_LK) links every XML 130 table of the episode."""

    ma_lk: str = ""
    facility: str = ""  # MA_CSKCB, 5 characters
    encounter_class: str = ""  # MA_LOAI_KCB / PV1-2
    admitted_at: str = ""  # NGAY_VAO, yyyymmddHHMM
    discharged_at: str = ""  # NGAY_RA
    patient_class: str = ""  # MA_DOITUONG_KCB, e.g. 1.1 right route, 2 emergency, 3.x off-route
    inpatient_admitted_at: str = ""  # NGAY_VAO_NOI_TRU
    outcome: str = ""  # KET_QUA_DTRI: 1 khỏi … 5 tử vong … 8 tử vong ngoại viện
    discharge_type: str = ""  # MA_LOAI_RV: 1 ra viện, 2 chuyển tuyến, 3 trốn viện, 4 xin ra viện, 5 …
    stt: str = ""  # STT of the XML1 record
    record_number: str = ""  # MA_HSBA
    departments: tuple[str, ...] = ()  # MA_KHOA, `;` list
    referred_from: str = ""  # MA_NOI_DI (4210 MA_NOI_CHUYEN)
    referred_to: str = ""  # MA_NOI_DEN
    admission_reason: str = ""  # LY_DO_VV
    inpatient_reason: str = ""  # LY_DO_VNT
    inpatient_reason_code: str = ""  # MA_LY_DO_VNT
    accident: str = ""  # MA_TAI_NAN
    referral_letter: str = ""  # GIAY_CHUYEN_TUYEN
    treatment_days: str = ""  # SO_NGAY_DTRI
    treatment_method: str = ""  # PP_DIEU_TRI
    note: str = ""  # GHI_CHU
    region: str = ""  # MA_KHUVUC: K1, K2 or K3
    weight: str = ""  # CAN_NANG, kg with 2 decimals
    newborn_weights: str = ""  # CAN_NANG_CON
    continuous_five_years: str = ""  # NAM_NAM_LIEN_TUC, yyyymmdd
    follow_up_dates: tuple[str, ...] = ()  # NGAY_TAI_KHAM, `;` list
    head_of_facility: str = ""  # MA_TTDV: health id (BHXH number) of the facility head
    reserve: str = ""  # DU_PHONG
    extra: Extra = ()  # XML1 fields the model does not map


@dataclass(frozen=True)
class Immunization:
    """One vaccine dose given or refused (VXU RXA/RXR; the national immunization system). XML 130
    has no immunization table, so doses travel in the json and fhir formats only."""

    vaccine_code: str  # RXA-5.1
    vaccine_system: str = ""  # RXA-5.3, e.g. CVX or the national vaccine list
    vaccine_name: str = ""  # RXA-5.2
    administered_at: str = ""  # RXA-3, yyyymmddHHMM
    amount: str = ""  # RXA-6
    unit: str = ""  # RXA-7.1
    lot_number: str = ""  # RXA-15
    expires_on: str = ""  # RXA-16, yyyymmdd
    manufacturer: str = ""  # RXA-17.2 (RXA-17.1 when no text)
    facility: str = ""  # RXA-11.4
    completion: str = ""  # RXA-20: CP complete, PA partial, RE refused, NA not given
    route: str = ""  # RXR-1.1
    site: str = ""  # RXR-2.1
    dose_number: str = ""  # OBX 30973-2 under the RXA (the dose in its series)
    action: str = ""  # RXA-21: A add, U update, D delete the dose ``record_id`` names
    record_id: str = ""  # ORC-3 filler order number: the dose's id at the sender, kept across U and D
    source: str = ""  # RXA-9.1: 00 given here (new record), 01 historical (given elsewhere, reported)
    refusal_reason: str = ""  # RXA-18.1 (HL7 table NIP002, e.g. 03 parental decision)
    national_code: str = ""  # the national vaccine list's code for RXA-5 (a plugin's code table)
    manufacturer_code: str = ""  # RXA-17.1, MVX
    eligibility: str = ""  # OBX 64994-7: programme eligibility (HL7 table 0064)
    funding_source: str = ""  # OBX 30963-3: vaccine funding source


@dataclass(frozen=True)
class Observation:
    """A lab or clinical result (XML4 / ORU OBX)."""

    code: str  # MA_CHI_SO / OBX-3.1
    name: str = ""  # TEN_CHI_SO / OBX-3.2
    value: str = ""  # GIA_TRI / OBX-5
    unit: str = ""  # DON_VI_DO / OBX-6
    reference_range: str = ""  # OBX-7 (no XML4 field)
    abnormal_flag: str = ""  # OBX-8 (no XML4 field)
    observed_at: str = ""  # NGAY_KQ / OBX-14
    ma_lk: str = ""  # MA_LK
    stt: str = ""  # STT
    service_code: str = ""  # MA_DICH_VU: the paraclinical service the result belongs to
    description: str = ""  # MO_TA
    conclusion: str = ""  # KET_LUAN
    reader: str = ""  # MA_BS_DOC_KQ
    reserve: str = ""  # DU_PHONG
    extra: Extra = ()


@dataclass(frozen=True)
class RecordSet:
    """What one inbound message says, in canonical form. For XML 130, one HOSO (one MA_LK)."""

    kind: str
    person: Person | None = None
    encounter: Encounter | None = None
    observations: tuple[Observation, ...] = ()  # XML4 / OBX
    immunizations: tuple[Immunization, ...] = ()  # VXU RXA (no XML 130 table)
    diagnosis: Diagnosis | None = None  # XML1 MA_BENH_CHINH, MA_BENH_KT …
    claim: ClaimTotals | None = None  # XML1 T_* totals
    medications: tuple[MedicationLine, ...] = ()  # XML2
    services: tuple[ServiceLine, ...] = ()  # XML3
    notes: tuple[ClinicalNote, ...] = ()  # XML5
    referral: Referral | None = None  # XML13
    appointment: Appointment | None = None  # XML14
    check_in: CheckIn | None = None  # check-in (TRANG_THAI_KCB)
    other_tables: tuple[RawTable, ...] = ()  # XML6, XML8–12, XML15, kept verbatim
    #: Where the message held the values a vendor profile placed (``field_map``), as ``(XML1 tag,
    #: n, ERR-2 location)`` for the n-th value of the tag's ``;`` list: ``("GT_THE_TU", 1,
    #: "ZBH^1^4")``. The identity rules name that field in their ERR, not the tag's standard HL7
    #: place, which the message may not even have. How the message was read, not what it says, so
    #: it is left out of equality and of the JSON (``compare=False``).
    field_locations: tuple[tuple[str, int, str], ...] = field(default=(), compare=False)
    discharge_letter: DischargeLetter | None = None  # XML7 (last: records are built positionally)

    def location_of(self, tag: str, n: int = 1) -> str:
        """ERR-2 of the n-th value of XML1 ``tag`` when a profile placed it, else ``""``."""
        return next((where for placed, k, where in self.field_locations if placed == tag and k == n), "")

    def to_dict(self) -> dict:
        return as_plain(self)

    @functools.cached_property
    def json_text(self) -> str:
        """Compact JSON of :meth:`to_dict`, built once per record set: the journal and the json
        renderer both carry it, and serialising twice was a tenth of a message's CPU."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def as_plain(value):
    """``dataclasses.asdict`` without its deep copies: several times faster on the hot path,
    and the model holds only str, Decimal, tuples and nested records, so nothing needs copying.
    Decimals become their exact text (``"123.50"``) so JSON keeps every digit. Empty fields are
    left out: most of the XML 130 model is empty for an HL7 feed, and every message's records are
    journaled and rendered, so the JSON stays as small as what was actually said. Fields declared
    ``compare=False`` say how a message was read, not what it said, and are left out too."""
    cls = type(value)
    if cls is str or value is None:
        return value
    if cls is tuple:
        return [as_plain(v) for v in value]
    if cls is Decimal:
        return str(value)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        if not dataclasses.is_dataclass(cls):
            return value
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.compare)
    plain = {}
    for name in names:
        item = getattr(value, name)
        if type(item) is str:  # most leaves: no call for them
            if item:
                plain[name] = item
        elif item is not None and item != ():
            plain[name] = as_plain(item)
    return plain
