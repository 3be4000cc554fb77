"""Value rules for canonical records bound for XML 130/4750, with errors a sender can act on.

Every check returns :class:`Issue` objects (HL7 table 0357 codes: 101 required field missing,
102 data type / format or inconsistent value, 103 value not in its table) whose location is
``TABLE^record^FIELD`` (``XML2^3^SO_LUONG``) and whose text names the field and the rule, with
identifiers masked. The built-in rule plugins of :mod:`gateway.rules` apply them to every record
set through ``hssk_check`` (:func:`identity_issues`, :func:`claim_issues`, :func:`check_totals`),
and the pipeline answers their errors with HL7 AE + ERR or HTTP 422 with the JSON list
(``Issue.to_dict``); :func:`require_valid` raises them as a :class:`ContentError`.

Configurable, because the reference leaves them open (:class:`ValidationRules`):
``totals_tolerance`` (BHXH's rounding tolerance is not published; default 1 đồng, since line
amounts are rounded to 2 decimals before they are summed), ``max_secondary_diagnoses`` (12, [P]),
``required_xml1`` (the fields we refuse without), and the identifier rules of
``gateway.rules.identifiers.IdentityRules``.
"""
from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from gateway.formats.hl7v2 import Hl7Message
from gateway.model.masking import mask_identifier
from gateway.model.outcome import ContentError, Issue
from gateway.model.records import RecordSet
from gateway.rules.identifiers import (
    DEFAULT_IDENTITY_RULES,
    PROVINCE_CODES_2024,
    PROVINCE_CODES_2025,
    IdentityRules,
    check_bhxh_number,
    check_bhyt_card,
    check_cccd,
    check_facility_code,
    check_province_code,
)

_ICD10 = re.compile(r"[A-Z][0-9]{2}(\.?[0-9A-Z]{1,2})?[†*]?")
_LINK_TABLES = (("XML2", "medications"), ("XML3", "services"), ("XML4", "observations"), ("XML5", "notes"))


@dataclass(frozen=True)
class ValidationRules:
    """The parameters of :func:`validate_record_set`; the defaults follow vn-standards §1 and §3."""

    identity: IdentityRules = DEFAULT_IDENTITY_RULES
    totals_tolerance: Decimal = Decimal("1")
    max_secondary_diagnoses: int = 12
    required_xml1: tuple[str, ...] = ("MA_LK", "MA_CSKCB", "HO_TEN", "NGAY_SINH", "GIOI_TINH", "NGAY_VAO",
                                      "MA_LOAI_KCB")
    sex_codes: frozenset[str] = field(default_factory=lambda: frozenset({"1", "2", "3"}))


DEFAULT_RULES = ValidationRules()


def check_icd10(code: str, *, field: str = "MA_BENH_CHINH", location: str = "") -> list[Issue]:
    """An ICD-10 code's shape: a letter, two digits, then optionally ``.`` and one or two
    characters (``J18.9``, ``E119``, ``U07.1``), with a dagger or asterisk allowed at the end.
    The shape only: whether the code exists is a table question for the receiving store."""
    if code and not _ICD10.fullmatch(code):
        return [Issue(102, f"{field}: {code!r} is not an ICD-10 code (letter, two digits, optional '.' "
                           "and one or two characters)", location)]
    return []


def check_diagnosis_codes(main: str, secondary: Iterable[str], *, location: str = "XML1^1",
                          max_secondary: int = 12) -> list[Issue]:
    """MA_BENH_CHINH holds exactly one ICD-10 code; MA_BENH_KT at most ``max_secondary``."""
    issues = []
    main_codes = main.split(";") if main else []
    if len(main_codes) > 1:
        issues.append(Issue(102, f"MA_BENH_CHINH: holds {len(main_codes)} codes, exactly one ICD-10 code is allowed",
                            f"{location}^MA_BENH_CHINH"))
    for code in main_codes:
        issues += check_icd10(code, field="MA_BENH_CHINH", location=f"{location}^MA_BENH_CHINH")
    secondary = tuple(secondary)
    if len(secondary) > max_secondary:
        issues.append(Issue(102, f"MA_BENH_KT: holds {len(secondary)} codes, at most {max_secondary} are allowed",
                            f"{location}^MA_BENH_KT"))
    for code in secondary:
        issues += check_icd10(code, field="MA_BENH_KT", location=f"{location}^MA_BENH_KT")
    return issues


def check_datetime(value: str, *, field: str, location: str = "", lengths: tuple[int, ...] = (12,),
                   allow_unknown_day_month: bool = False, sensitive: bool = False) -> list[Issue]:
    """``yyyymmddHHMM`` (12) or ``yyyymmdd`` (8): digits, a real calendar date, a 24-hour time.

    NGAY_SINH may write an unknown day and month as ``0000`` (``allow_unknown_day_month``), or
    give the year alone (HL7 ``1985``, written ``198500000000``), and is personal data, so its
    value is not shown (``sensitive``).
    """
    if not value:
        return []
    if allow_unknown_day_month and len(value) == 4 and value.isdigit():
        value += "0000"
    shown = "(value masked)" if sensitive else repr(value)
    if len(value) not in lengths or not value.isdigit():
        formats = " or ".join({12: "12 (yyyymmddHHMM)", 8: "8 (yyyymmdd)"}.get(n, str(n)) for n in lengths)
        return [Issue(102, f"{field}: {shown} has {len(value)} characters, expected {formats} digits", location)]
    year, month, day = int(value[:4]), int(value[4:6]), int(value[6:8])
    unknown = allow_unknown_day_month and month == 0 and day == 0
    if not unknown and not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return [Issue(102, f"{field}: {shown} is not a calendar date", location)]
    if len(value) == 12 and not (int(value[8:10]) <= 23 and int(value[10:12]) <= 59):
        return [Issue(102, f"{field}: {shown} has no valid 24-hour time (HHMM)", location)]
    return []


def _sum(values: Iterable[Decimal | None]) -> Decimal:
    return sum((v for v in values if v is not None), Decimal(0))


def check_totals(records: RecordSet, *, tolerance: Decimal = Decimal("1")) -> list[Issue]:
    """XML1 totals against the lines (vn-standards §1.5): T_TONGCHI_BV = Σ THANH_TIEN_BV and
    T_TONGCHI_BH = Σ THANH_TIEN_BH over XML2 + XML3; T_BHTT = T_TONGCHI_BH − T_BNCCT."""
    claim = records.claim
    if claim is None:
        return []
    lines = records.medications + records.services
    issues = []
    for tag, total, line_tag, summed in (
            ("T_TONGCHI_BH", claim.total_insurance, "THANH_TIEN_BH", _sum(line.amount_insurance for line in lines)),
            ("T_TONGCHI_BV", claim.total_hospital, "THANH_TIEN_BV", _sum(line.amount_hospital for line in lines))):
        if total is not None and abs(total - summed) > tolerance:
            issues.append(Issue(102, f"{tag}: {total} is not Σ {line_tag} over XML2 + XML3 = {summed} "
                                     f"(tolerance {tolerance})", f"XML1^1^{tag}"))
    if None not in (claim.fund_paid, claim.total_insurance, claim.patient_copay):
        expected = claim.total_insurance - claim.patient_copay
        if abs(claim.fund_paid - expected) > tolerance:
            issues.append(Issue(102, f"T_BHTT: {claim.fund_paid} is not T_TONGCHI_BH − T_BNCCT = {expected} "
                                     f"(tolerance {tolerance})", "XML1^1^T_BHTT"))
    return issues


def check_linkage(records: RecordSet) -> list[Issue]:
    """MA_LK links every table of the episode: each line and letter must carry XML1's MA_LK."""
    ma_lk = records.encounter.ma_lk if records.encounter else ""
    issues = []
    linked = [(table, n, line.ma_lk) for table, attribute in _LINK_TABLES
              for n, line in enumerate(getattr(records, attribute), 1)]
    linked += [(table, 1, letter.ma_lk) for table, letter in (
        ("XML7", records.discharge_letter), ("XML13", records.referral), ("XML14", records.appointment))
        if letter is not None]
    for table, n, value in linked:
        where = f"{table} line {n}" if table in ("XML2", "XML3", "XML4", "XML5") else table
        if not value:
            issues.append(Issue(101, f"{where} MA_LK: is required (links the record to XML1)", f"{table}^{n}^MA_LK"))
        elif value != ma_lk:
            issues.append(Issue(103, f"{where} MA_LK: {value!r} does not match XML1 MA_LK {ma_lk!r}",
                                f"{table}^{n}^MA_LK"))
    return issues


#: XML7's parent codes, by the relationship the reader gave them.
_PARENT_CODES = (("mother", "MA_ME"), ("father", "MA_CHA"))


def _discharge_letter_issues(records: RecordSet, rules: ValidationRules) -> list[Issue]:
    """XML7 MA_ME, MA_CHA and MA_THE_TAM name the child's parents and the child's own card, which
    the person index links a newborn by: a personal id or card must be well formed (E), and a code
    of no known shape is named (W), since no parent can be found by it."""
    letter, person = records.discharge_letter, records.person
    if letter is None or person is None:
        return []
    issues = check_bhyt_card(letter.temporary_card, field="XML7 MA_THE_TAM", location="XML7^1^MA_THE_TAM",
                             rules=rules.identity)
    for relationship, tag in _PARENT_CODES:
        parent = next((r for r in person.related if r.relationship == relationship), None)
        for identifier in parent.identifiers if parent else ():
            field, location = f"XML7 {tag}", f"XML7^1^{tag}"
            if identifier.system == "CCCD":
                issues += check_cccd(identifier.value, field=field, location=location, rules=rules.identity)
            elif identifier.system == "BHYT":
                issues += check_bhyt_card(identifier.value, field=field, location=location, rules=rules.identity)
            elif identifier.system != "BHXH":
                issues.append(Issue(102, f"{field}: {mask_identifier(identifier.value)} is neither a 10-digit BHXH "
                                         "number nor a 12-digit personal id; the parent cannot be found by it",
                                    location, "W"))
    return issues


def _xml1_required(records: RecordSet, rules: ValidationRules) -> list[Issue]:
    person, encounter = records.person, records.encounter
    present = {
        "MA_LK": encounter and encounter.ma_lk, "MA_CSKCB": encounter and encounter.facility,
        "NGAY_VAO": encounter and encounter.admitted_at, "MA_LOAI_KCB": encounter and encounter.encounter_class,
        "HO_TEN": person and person.full_name, "NGAY_SINH": person and person.birth_date,
        "GIOI_TINH": person and person.sex, "MA_BENH_CHINH": records.diagnosis and records.diagnosis.main,
    }
    return [Issue(101, f"{tag}: is required in XML1", f"XML1^1^{tag}")
            for tag in rules.required_xml1 if not present.get(tag)]


#: ERR-2 of the n-th value of an XML1 tag's ``;`` list (1 for a tag that is no list).
Locate = Callable[[str, int], str]


def xml1_location(tag: str, n: int = 1) -> str:
    """Where a rule's field is in an XML 130 file: ``XML1^1^TAG``. A BHXH number has no field of
    its own there; it is the last ten characters of MA_THE_BHYT."""
    return f"XML1^1^{'MA_THE_BHYT' if tag == BHXH_NUMBER else tag}"


#: The identity rules' key for a BHXH number: a PID-3 repetition in HL7, part of the card in XML.
BHXH_NUMBER = "BHXH"


def _person_issues(records: RecordSet, rules: ValidationRules, locate: Locate) -> list[Issue]:
    person = records.person
    if person is None:
        return []
    issues = []
    if person.sex and person.sex not in rules.sex_codes:
        issues.append(Issue(103, f"GIOI_TINH: {person.sex!r} is not 1 (Nam), 2 (Nữ) or 3 (chưa xác định)",
                            locate("GIOI_TINH", 1)))
    issues += check_datetime(person.birth_date, field="NGAY_SINH", location=locate("NGAY_SINH", 1), lengths=(8, 12),
                             allow_unknown_day_month=True, sensitive=True)
    cards = [i for i in person.identifiers if i.system == "BHYT"]
    for i in person.identifiers:
        if i.system == "CCCD":
            issues += check_cccd(i.value, location=locate("SO_CCCD", 1), birth_date=person.birth_date, sex=person.sex,
                                 rules=rules.identity)
        elif i.system == "BHXH":
            issues += check_bhxh_number(i.value, location=locate(BHXH_NUMBER, 1))
    for n, card in enumerate(cards, 1):
        which = f" (card {n})" if len(cards) > 1 else ""
        issues += check_bhyt_card(card.value, field="MA_THE_BHYT" + which, location=locate("MA_THE_BHYT", n),
                                  rules=rules.identity)
        issues += check_facility_code(card.registered_facility, field="MA_DKBD" + which,
                                      location=locate("MA_DKBD", n), rules=rules.identity)
        for tag, value in (("GT_THE_TU", card.valid_from), ("GT_THE_DEN", card.valid_to)):
            issues += check_datetime(value, field=tag + which, location=locate(tag, n), lengths=(8,))
        if card.valid_from and card.valid_to and card.valid_from > card.valid_to:
            issues.append(Issue(102, f"GT_THE_TU{which}: card {mask_identifier(card.value)} is valid from after "
                                     "it is valid to (GT_THE_DEN)", locate("GT_THE_TU", n)))
    if person.address is not None:
        issues += check_province_code(person.address.province, location=locate("MATINH_CU_TRU", 1),
                                      rules=rules.identity)
    return issues


def _encounter_issues(records: RecordSet, rules: ValidationRules) -> list[Issue]:
    encounter = records.encounter
    if encounter is None:
        return []
    loc = "XML1^1^"
    issues = []
    if len(encounter.ma_lk) > 100:
        issues.append(Issue(102, f"MA_LK: has {len(encounter.ma_lk)} characters, at most 100", loc + "MA_LK"))
    for tag, value in (("MA_CSKCB", encounter.facility), ("MA_NOI_DI", encounter.referred_from),
                       ("MA_NOI_DEN", encounter.referred_to)):
        issues += check_facility_code(value, field=tag, location=loc + tag, rules=rules.identity)
    for tag, value in (("NGAY_VAO", encounter.admitted_at), ("NGAY_VAO_NOI_TRU", encounter.inpatient_admitted_at),
                       ("NGAY_RA", encounter.discharged_at)):
        issues += check_datetime(value, field=tag, location=loc + tag)
    if records.claim is not None:
        issues += check_datetime(records.claim.paid_at, field="NGAY_TTOAN", location=loc + "NGAY_TTOAN")
    for date in encounter.follow_up_dates:
        issues += check_datetime(date, field="NGAY_TAI_KHAM", location=loc + "NGAY_TAI_KHAM", lengths=(8,))
    if encounter.admitted_at and encounter.discharged_at and encounter.discharged_at < encounter.admitted_at:
        issues.append(Issue(102, "NGAY_RA: is before NGAY_VAO", loc + "NGAY_RA"))
    return issues


def _line_issues(records: RecordSet) -> list[Issue]:
    issues = []
    times = {"XML2": ("ordered_at NGAY_YL", "performed_at NGAY_TH_YL"),
             "XML3": ("ordered_at NGAY_YL", "performed_at NGAY_TH_YL", "result_at NGAY_KQ"),
             "XML4": ("observed_at NGAY_KQ",), "XML5": ("recorded_at THOI_DIEM_DBLS",)}
    for table, attribute in _LINK_TABLES:
        for n, line in enumerate(getattr(records, attribute), 1):
            for pair in times[table]:
                name, tag = pair.split()
                issues += check_datetime(getattr(line, name), field=f"{table} line {n} {tag}",
                                         location=f"{table}^{n}^{tag}")
    if records.appointment is not None:
        issues += check_datetime(records.appointment.appointment_at, field="XML14 NGAY_HEN_KL",
                                 location="XML14^1^NGAY_HEN_KL")
        issues += check_datetime(records.appointment.issued_on, field="XML14 NGAY_CT", location="XML14^1^NGAY_CT",
                                 lengths=(8,))
    return issues


def identity_issues(records: RecordSet, rules: ValidationRules = DEFAULT_RULES,
                    locate: Locate = xml1_location) -> tuple[Issue, ...]:
    """The identity and code rules that apply to any feed (CCCD structure, BHYT card, BHXH
    number, registered facility, birth date, sex, province, ICD-10 shape), located by ``locate``:
    in XML 130 terms by default, in HL7 terms with :func:`hl7_locator`."""
    issues = _person_issues(records, rules, locate)
    if records.diagnosis is not None:
        issues += [Issue(i.code, i.text, locate(i.location.rpartition("^")[2], 1), i.severity)
                   for i in check_diagnosis_codes(records.diagnosis.main, records.diagnosis.secondary,
                                                  max_secondary=rules.max_secondary_diagnoses)]
    return tuple(issues)


def claim_issues(records: RecordSet, rules: ValidationRules = DEFAULT_RULES) -> tuple[Issue, ...]:
    """The claim rules of an XML 130 episode: the XML1 fields it may not lack, the visit's codes
    and times, the detail lines' times, and MA_LK linking every table. Totals are
    :func:`check_totals`. An HL7 message is no claim, so none of these apply to one."""
    issues = _xml1_required(records, rules)
    issues += _encounter_issues(records, rules)
    issues += _line_issues(records)
    issues += check_linkage(records)
    issues += _discharge_letter_issues(records, rules)
    return tuple(issues)


def validate_record_set(records: RecordSet, rules: ValidationRules = DEFAULT_RULES) -> tuple[Issue, ...]:
    """Every rule above, for one episode (one HOSO / MA_LK), in the order the built-in rule plugins
    run them (identity, claims, totals). Returns all issues found, not just the first, so a sender
    fixes a file in one round."""
    return (identity_issues(records, rules) + claim_issues(records, rules)
            + tuple(check_totals(records, tolerance=rules.totals_tolerance)))


def require_valid(records: RecordSet, rules: ValidationRules = DEFAULT_RULES) -> RecordSet:
    """Return ``records`` if no rule fails with severity E; otherwise raise :class:`ContentError`
    (HL7 AE with ERR segments / HTTP 422 with the JSON list of issues)."""
    errors = [i for i in validate_record_set(records, rules) if i.severity == "E"]
    if errors:
        raise ContentError(errors)
    return records


def check_hl7_structure(message: Hl7Message) -> tuple[Issue, ...]:
    """The one structural rule every ADT and VXU feed must keep: a PID, without which there is
    nobody to file the message under. (HL7 v2.5 ADT_A01 … ADT_A39 and VXU_V04 require it; an
    ORU's patient group is optional, and ADT^A20, a bed status, has none.)"""
    code = message.message_code
    if (code == "VXU" or code == "ADT" and message.trigger_event != "A20") and not message.segments("PID"):
        return (Issue(100, f"PID: the segment is required in {message.message_type} (HL7 v2.5 message structure) "
                           f"and is missing", "PID^1"),)
    return ()


#: Where each XML1 field of the identity rules lives in an HL7 v2 message, for ERR-2, unless the
#: vendor profile placed it elsewhere (:attr:`RecordSet.field_locations`).
_HL7_LOCATIONS = {"SO_CCCD": "PID^1^3", "MA_THE_BHYT": "PID^1^3", BHXH_NUMBER: "PID^1^3", "MA_DKBD": "IN1^1^36",
                  "GT_THE_TU": "IN1^1^12", "GT_THE_DEN": "IN1^1^13", "NGAY_SINH": "PID^1^7", "GIOI_TINH": "PID^1^8",
                  "MATINH_CU_TRU": "PID^1^11", "MA_BENH_CHINH": "DG1^1^3", "MA_BENH_KT": "DG1^2^3"}


def hl7_locator(records: RecordSet) -> Locate:
    """ERR-2 in an HL7 message: where the vendor profile read the value, else the field's
    standard place (a VNPT card date read from ZBH-4 is reported at ZBH^1^4, not IN1^1^12)."""
    def locate(tag: str, n: int) -> str:
        return records.location_of(tag, n) or _HL7_LOCATIONS.get(tag, xml1_location(tag))
    return locate


def rules_from_config(config) -> ValidationRules:
    """The ``[validation]`` section (:class:`gateway.config.ValidationConfig`) as rules."""
    return ValidationRules(
        identity=IdentityRules(
            provinces=PROVINCE_CODES_2025 if config.province_codes == "2025" else PROVINCE_CODES_2024,
            check_cccd_birth=config.check_cccd_birth,
            bhyt_groups=frozenset(config.bhyt_groups) or None,
            accept_bhxh_number_as_card=config.accept_bhxh_number_as_card,
            facility_pattern=config.facility_pattern,
            check_facility_province=config.check_facility_province,
        ),
        totals_tolerance=Decimal(str(config.totals_tolerance)),
        max_secondary_diagnoses=config.max_secondary_diagnoses,
    )
