"""The privacy policy (DESIGN.md §7): HIV/AIDS, drug-use and sex-work information is taken out of
a record set before it leaves for a destination that may not hold it.

Why per destination: Law 64/2006/QH11, as amended by Law 71/2020/QH14, Art. 30, lets a positive
HIV result reach only a closed list of people, and BHXH may see it for appraisal and payment. So
the BHXH path takes the full record set (``privacy = "full"``) and every other destination, the
provincial record store first, takes it filtered, which is the default. The journal keeps what
was received, because every message must stay replayable (invariant 3).

What is matched (the lists are ../shared/domain/vn-standards.md §8, mostly marked uncertain, so
``[privacy]`` can replace each one):

- ICD-10 codes, by prefix (``B20`` takes ``B20.7``), wherever the model holds codes: MA_BENH_CHINH,
  MA_BENH_KT, XML3 MA_BENH, and code lists in unmapped fields and unmapped tables;
- terms in free text (``ma túy``, ``HIV``), as whole words, whatever the case;
- drug ingredients in TEN_THUOC. Tenofovir, lamivudine and ritonavir also treat hepatitis B or
  COVID-19, so they count only when something else in the record set already says HIV;
- structure: XML6 (the HIV care record) is dropped whole, MA_DOITUONG_KCB 1.9 (HIV) is emptied,
  and the HIV fields of XML15 (NGAYKD_HIV, BDDT_ARV, PHANLOAI_LAO_HIV) are emptied.

A free-text field that matches is emptied whole, because a partial cut of prose cannot be
trusted; the diagnosis texts are emptied too once a diagnosis code was removed, since they name
it. A line (drug, service, result, progress note, vaccine dose) that matches is dropped. Nothing
removed is logged: what was removed is counted, by category and by the part of the record it was in.

The policy is fail-closed. :data:`FIELDS` names every field of every record a record set holds,
with the step that filters it or the reason it needs none, and :meth:`PrivacyPolicy.filter`
refuses (:class:`UnknownPart`) a record set holding anything else — a field added to the model
but not to :data:`FIELDS`, a plugin's subclass of a record with fields of its own, an object that
is no record — because it cannot tell what such a part says. The destination then does not get
the record set, and it is journaled, counted and logged as not routed (``privacy_unknown``).
"""
from __future__ import annotations

import dataclasses
import functools
import operator
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from lxml import etree

from gateway.formats.xml_safety import parse_untrusted_xml
from gateway.model.outcome import NotRenderable
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

HIV, DRUG_USE, SEX_WORK = "hiv", "drug_use", "sex_work"
CATEGORIES = (HIV, DRUG_USE, SEX_WORK)

#: ICD-10 prefixes per category (vn-standards §8; WHO ICD-10, to check against TT 06/2026).
#: F10 alcohol and F17 tobacco are out of scope, and so is R78.0 (alcohol in blood).
DEFAULT_CODES: Mapping[str, tuple[str, ...]] = {
    HIV: ("B20", "B21", "B22", "B23", "B24", "Z21", "R75", "O98.7", "Z20.6", "Z71.7", "Z11.4", "Z83.0", "F02.4"),
    DRUG_USE: ("F11", "F12", "F13", "F14", "F15", "F16", "F18", "F19", "Z50.3", "Z71.5", "Z72.2", "Z86.4",
               "Z81.3", "R78.1", "R78.2", "R78.3", "R78.4", "R78.5", "T40", "P96.1", "P04.4", "O35.5"),
    #: No ICD-10 code says sex work; Z72.5 and the STI codes are only indirect.
    SEX_WORK: (),
}
#: Whole words or phrases in free text.
DEFAULT_TERMS: Mapping[str, tuple[str, ...]] = {
    HIV: ("HIV", "AIDS", "ARV", "PrEP", "suy giảm miễn dịch mắc phải"),
    DRUG_USE: ("ma túy", "ma tuý", "heroin", "methadone", "methadon", "buprenorphine", "buprenorphin",
               "nghiện chích", "cai nghiện", "chất dạng thuốc phiện"),
    SEX_WORK: ("mại dâm", "bán dâm", "mua dâm"),
}
#: Drug ingredient stems in TEN_THUOC, matched at the start of a word (``nevirapin`` takes
#: ``Nevirapine``): ARVs that treat nothing but HIV, and opioid substitution therapy.
DEFAULT_DRUGS: Mapping[str, tuple[str, ...]] = {
    HIV: ("efavirenz", "nevirapin", "dolutegravir", "lopinavir", "zidovudin", "abacavir", "raltegravir",
          "atazanavir", "darunavir", "emtricitabin", "rilpivirin", "etravirin", "stavudin", "didanosin"),
    DRUG_USE: ("methadon", "buprenorphin"),
    SEX_WORK: (),
}
#: ARVs with other uses (hepatitis B, COVID-19): removed only when the record set says HIV elsewhere.
DEFAULT_SHARED_HIV_DRUGS = ("tenofovir", "lamivudin", "ritonavir")

#: MA_DOITUONG_KCB 1.9: the patient is treated under the HIV programme.
HIV_PATIENT_CLASS = "1.9"
#: The table that is an HIV care record, and the HIV fields of the TB table.
HIV_TABLE = "XML6"
HIV_FIELDS = frozenset({"NGAYKD_HIV", "BDDT_ARV", "PHANLOAI_LAO_HIV"})

# The steps of the policy, each filtering the fields :data:`FIELDS` gives it.
#: Free text, matched against the terms as whole words: a field of a single record (the visit,
#: the referral letter) is emptied, a line (drug, service, result, note, dose) is dropped.
TEXT = "text"
#: ICD-10 codes, matched by prefix: a code is taken out of its list.
CODES = "codes"
#: A drug's name, matched against the ingredient stems and the terms: the line is dropped.
DRUG = "drug"
#: MA_DOITUONG_KCB: 1.9, the HIV programme, is emptied.
PROGRAMME = "programme"
#: Fields the model does not map (``extra``): an HIV field emptied, listed codes taken out of a
#: code list, matching prose emptied.
UNMAPPED = "unmapped"
#: A table the model does not map: XML6 is dropped, any other filtered as unmapped fields are.
TABLE = "table"
#: Records, each filtered by its own type's steps.
RECORDS = "records"
FILTERED_BY = (TEXT, CODES, DRUG, PROGRAMME, UNMAPPED, TABLE, RECORDS)

# Why a field needs no step.
#: Who a person or a member of staff is: a name, an identifier, an address or phone number, the
#: nationality, ethnicity or occupation.
IDENTITY = "identity"
#: A date or time.
TIME = "time"
#: An amount, a price, a quantity, a rate or a measure.
AMOUNT = "amount"
#: A key, a count or a value of a closed administrative table (facility, department, class of
#: visit, outcome, sex, blood group, cost group, unit): none names a condition the policy covers.
CODE = "code"
#: A clinical code of a system the policy has no list for (drug, service, supply and vaccine
#: codes, ICD-9-CM procedures: vn-standards §8 found no reliable ARV or methadone code list);
#: the names beside them are filtered, and a line whose name matches goes with its codes.
UNLISTED = "unlisted"
#: How the message was read (where a profile placed a value), not what it says.
READING = "reading"
NOT_FILTERED_BECAUSE = (IDENTITY, TIME, AMOUNT, CODE, UNLISTED, READING)


def _by_field(steps: Mapping[str, str]) -> Mapping[str, str]:
    """``{step or reason: "field field …"}`` as ``{field: step or reason}``."""
    return {name: step for step, names in steps.items() for name in names.split()}


#: Every field of every record a record set holds: the step that filters it, or why it needs none.
#: Text fields are listed in the order they are matched, which decides the category counted when
#: two fields of one line match different ones.
FIELDS: Mapping[type, Mapping[str, str]] = {cls: _by_field(steps) for cls, steps in {
    RecordSet: {CODE: "kind", READING: "field_locations",
                RECORDS: "person encounter observations immunizations diagnosis claim medications services notes "
                         "referral appointment check_in other_tables discharge_letter"},
    Person: {RECORDS: "identifiers address related previous_identifiers", TIME: "birth_date",
             IDENTITY: "family middle given phone nationality ethnicity occupation",
             CODE: "sex blood_group multiple_birth birth_order provisional"},
    Identifier: {CODE: "system assigner registered_facility", IDENTITY: "value", TIME: "valid_from valid_to"},
    Address: {IDENTITY: "text province district commune"},
    RelatedPerson: {CODE: "relationship", IDENTITY: "family middle given phone", RECORDS: "identifiers"},
    Encounter: {TEXT: "admission_reason inpatient_reason treatment_method note reserve", PROGRAMME: "patient_class",
                UNMAPPED: "extra", UNLISTED: "inpatient_reason_code",
                CODE: "ma_lk facility encounter_class outcome discharge_type stt record_number departments "
                      "referred_from referred_to accident referral_letter region",
                TIME: "admitted_at discharged_at inpatient_admitted_at continuous_five_years follow_up_dates",
                AMOUNT: "treatment_days weight newborn_weights", IDENTITY: "head_of_facility"},
    Diagnosis: {CODES: "main secondary traditional", TEXT: "admission_text discharge_text", UNLISTED: "procedures"},
    ClaimTotals: {AMOUNT: "drugs supplies total_hospital total_insurance patient_paid patient_copay fund_paid "
                          "other_sources fund_paid_outside_capitation",
                  TIME: "settlement_year settlement_month paid_at copay_exempt_from"},
    MedicationLine: {DRUG: "name", TEXT: "directions strength dosage_form dose reserve", UNMAPPED: "extra",
                     UNLISTED: "code service_code",
                     CODE: "ma_lk stt preparation_method dispensing_facility cost_group unit route registration_number "
                           "tender scope department payment_method funding_source war_wound",
                     AMOUNT: "insurance_rate quantity unit_price amount_hospital amount_insurance other_state_budget "
                             "other_foreign_aid other_domestic_aid other_remaining other_total benefit_level "
                             "patient_paid patient_copay fund_paid",
                     IDENTITY: "doctors", TIME: "ordered_at performed_at"},
    ServiceLine: {TEXT: "service_name supply_name body_site reserve", CODES: "diagnosis_codes traditional_codes",
                  UNMAPPED: "extra", UNLISTED: "service_code procedure_codes supply_code",
                  CODE: "ma_lk stt cost_group supply_package fuel_code unit scope tender department bed_code "
                        "payment_method war_wound anaesthesia machine product_code reuse",
                  AMOUNT: "quantity unit_price_hospital unit_price_insurance service_rate insurance_rate "
                          "amount_hospital amount_insurance ceiling_amount benefit_level other_state_budget "
                          "other_foreign_aid other_domestic_aid other_remaining other_total patient_paid "
                          "patient_copay fund_paid",
                  IDENTITY: "doctors performers", TIME: "ordered_at performed_at result_at"},
    Observation: {TEXT: "code name value description conclusion reference_range reserve", UNMAPPED: "extra",
                  UNLISTED: "service_code", CODE: "unit abnormal_flag ma_lk stt", TIME: "observed_at",
                  IDENTITY: "reader"},
    ClinicalNote: {TEXT: "progress stage consultation surgery reserve", UNMAPPED: "extra", CODE: "ma_lk stt",
                   TIME: "recorded_at", IDENTITY: "author"},
    Immunization: {TEXT: "vaccine_name", UNLISTED: "vaccine_code national_code",
                   CODE: "vaccine_system unit lot_number manufacturer facility completion route site dose_number "
                         "action record_id source refusal_reason manufacturer_code eligibility funding_source",
                   AMOUNT: "amount", TIME: "administered_at expires_on"},
    Referral: {TEXT: "clinical_signs history results_summary treatment_given services_used drugs_used "
                     "treatment_method treatment_direction transport reserve",
               UNMAPPED: "extra",
               CODE: "ma_lk record_number referral_number referral_letter from_facility to_facility discharge_type "
                     "reason",
               IDENTITY: "escort_name escort_title doctor head_of_facility"},
    DischargeLetter: {TEXT: "reserve", UNMAPPED: "extra", CODE: "ma_lk", TIME: "issued_on",
                      IDENTITY: "temporary_card"},
    Appointment: {TEXT: "reserve", UNMAPPED: "extra", CODE: "ma_lk number", TIME: "appointment_at issued_on",
                  IDENTITY: "doctor head_of_facility"},
    CheckIn: {DRUG: "drug_name", TEXT: "service_name supply_name reserve", UNMAPPED: "extra",
              UNLISTED: "service_code drug_code supply_code", CODE: "stt", TIME: "ordered_at"},
    RawTable: {TABLE: "kind content"},
}.items()}


@functools.cache
def _known_as(cls: type) -> type | None:
    """The record type of :data:`FIELDS` that ``cls`` is (or derives from), or None."""
    return next((base for base in cls.__mro__ if base in FIELDS), None)


@functools.cache
def _names(cls: type, step: str) -> tuple[str, ...]:
    """The fields of record type ``cls`` that ``step`` filters (or that ``step`` says pass)."""
    return tuple(name for name, by in FIELDS[_known_as(cls)].items() if by == step)


@functools.cache
def _walk_plan(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """For a record of type ``cls``: its fields :data:`FIELDS` does not name, and those that hold
    records; None when ``cls`` is no record type the policy knows."""
    known_as = _known_as(cls) if dataclasses.is_dataclass(cls) else None
    if known_as is None:
        return None
    return (tuple(f.name for f in dataclasses.fields(cls) if f.name not in FIELDS[known_as]),
            _names(known_as, RECORDS))


@functools.cache
def _line_plan(cls: type) -> tuple[tuple[str, ...], Callable[[object], tuple[str, ...]], tuple[str, ...], bool]:
    """For a line of type ``cls`` (drug, service, result, note, dose): its drug-name fields, a
    reader of its text fields, its code fields, and whether it has unmapped fields; built once,
    because every line of every routed record set goes through it."""
    texts = _names(cls, TEXT)
    read = operator.attrgetter(*texts) if len(texts) > 1 else lambda line: (getattr(line, texts[0]),)
    return _names(cls, DRUG), read, _names(cls, CODES), bool(_names(cls, UNMAPPED))


def unknown_parts(records: RecordSet) -> list[str]:
    """What in ``records`` the policy does not know, as ``Type.field`` or ``Type``: a field that
    holds something and that :data:`FIELDS` does not name, or a record of a type it has no row
    for. Empty fields do not count: what says nothing cannot leak."""
    found: list[str] = []
    pending: list[object] = [records]
    while pending:
        record = pending.pop()
        plan = _walk_plan(type(record))
        if plan is None:
            found.append(type(record).__name__)
            continue
        unknown, nested = plan
        if unknown:
            found += [f"{type(record).__name__}.{name}" for name in unknown
                      if getattr(record, name) not in (None, "", ())]
        for name in nested:
            value = getattr(record, name)
            if type(value) is tuple:
                pending += value
            elif value is not None:
                pending.append(value)
    return found


class UnknownPart(NotRenderable):
    """The record set holds a part :data:`FIELDS` does not name, so the policy cannot say what it
    would remove: a destination with ``privacy = "filtered"`` does not get it."""

    def __init__(self, parts: list[str]) -> None:
        shown = ", ".join(sorted(set(parts)))
        super().__init__("privacy_unknown", f"the privacy policy does not know {shown} of this record set, so it "
                                            f"cannot tell what to remove; teach gateway/rules/privacy.py (FIELDS) "
                                            f"that part, or route the message to a destination with privacy = "
                                            f"\"full\" if the law allows")


_CODE_SHAPE = re.compile(r"[A-Z]\d\d[0-9A-Z.*†+]*")
_CODE_NOISE = re.compile(r"[.*†+\s]")


@dataclass(frozen=True)
class Removal:
    """``count`` items of ``category`` were removed from ``part`` of a record set: ``diagnosis``
    (codes), ``text`` (free-text fields), ``encounter`` (MA_DOITUONG_KCB), ``medication``,
    ``service``, ``observation``, ``note``, ``immunization``, ``table`` (an unmapped table or its
    fields), or ``message`` (the whole message, withheld from a destination that forwards it as
    received)."""

    category: str
    part: str
    count: int


def _normal_code(code: str) -> str:
    return _CODE_NOISE.sub("", code.upper())


def _words(lists: Mapping[str, Iterable[str]], stem: bool = False) -> re.Pattern | None:
    """One pattern for the whole words (or, with ``stem``, word starts) of every list, with a
    group named after each list's key, so one search says which category matched."""
    groups = []
    for name, items in lists.items():
        items = sorted({unicodedata.normalize("NFC", i.strip()) for i in items if i.strip()}, key=len, reverse=True)
        if items:
            groups.append(f"(?P<{name}>{'|'.join(re.escape(i) for i in items)})")
    if not groups:
        return None
    end = "" if stem else r"(?!\w)"
    return re.compile(rf"(?<!\w)(?:{'|'.join(groups)}){end}", re.IGNORECASE)


def _search(pattern: re.Pattern | None, text: str) -> str | None:
    if pattern is None or not text:
        return None
    found = pattern.search(text if text.isascii() else unicodedata.normalize("NFC", text))
    return found.lastgroup if found else None


class PrivacyPolicy:
    """The lists, compiled once; :meth:`filter` is called on a worker for every routed record set."""

    def __init__(self, codes: Mapping[str, Iterable[str]] = DEFAULT_CODES,
                 terms: Mapping[str, Iterable[str]] = DEFAULT_TERMS,
                 drugs: Mapping[str, Iterable[str]] = DEFAULT_DRUGS,
                 shared_hiv_drugs: Iterable[str] = DEFAULT_SHARED_HIV_DRUGS) -> None:
        self._codes = tuple((c, tuple(_normal_code(p) for p in codes.get(c, ()) if p.strip())) for c in CATEGORIES)
        self._terms = _words({c: terms.get(c, ()) for c in CATEGORIES})
        self._drugs = _words({c: drugs.get(c, ()) for c in CATEGORIES}, stem=True)
        self._shared = _words({HIV: shared_hiv_drugs}, stem=True)

    @classmethod
    def from_config(cls, config) -> PrivacyPolicy:
        """From a :class:`gateway.config.PrivacyConfig`: a list it leaves unset keeps the default."""
        def pick(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = getattr(config, key)
            return default if value is None else value

        return cls(
            codes={c: pick(f"{c}_codes", DEFAULT_CODES[c]) for c in CATEGORIES},
            terms={c: pick(f"{c}_terms", DEFAULT_TERMS[c]) for c in CATEGORIES},
            drugs={c: pick(f"{c}_drugs", DEFAULT_DRUGS[c]) for c in CATEGORIES},
            shared_hiv_drugs=pick("hiv_shared_drugs", DEFAULT_SHARED_HIV_DRUGS),
        )

    def code_category(self, code: str) -> str | None:
        code = _normal_code(code)
        if not code:
            return None
        return next((c for c, prefixes in self._codes if prefixes and code.startswith(prefixes)), None)

    def text_category(self, text: str) -> str | None:
        return _search(self._terms, text)

    def drug_category(self, name: str, says_hiv: Callable[[], bool]) -> str | None:
        """``says_hiv`` is asked only for a shared ARV: it may have to look at the whole record set."""
        found = _search(self._drugs, name) or self.text_category(name)
        if found is None and _search(self._shared, name) and says_hiv():
            return HIV
        return found

    def filter(self, records: RecordSet) -> tuple[RecordSet, tuple[Removal, ...]]:
        """``records`` without what the policy covers, and what was removed. When nothing was,
        the same object comes back, so its cached JSON is reused. Raises :class:`UnknownPart`
        when ``records`` holds a part the policy does not know."""
        unknown = unknown_parts(records)
        if unknown:
            raise UnknownPart(unknown)
        cut = _Cut(self, records)
        changes = {}
        for name, step in _STEPS:
            part = getattr(records, name)
            if part:
                kept = step(cut, part)
                if kept is not part:
                    changes[name] = kept
        if not cut.counts:
            return records, ()
        removed = tuple(Removal(category, part, n) for (category, part), n in sorted(cut.counts.items()))
        return dataclasses.replace(records, **changes), removed

    def says_hiv(self, records: RecordSet) -> bool:
        """Whether anything but a shared ARV already marks the record set as HIV care."""
        encounter, diagnosis = records.encounter, records.diagnosis
        codes = [*(diagnosis.secondary if diagnosis else ()), diagnosis.main if diagnosis else ""]
        codes += [c for line in records.services for c in line.diagnosis_codes.split(";")]
        return ((encounter is not None and encounter.patient_class == HIV_PATIENT_CLASS)
                or any(t.kind == HIV_TABLE for t in records.other_tables)
                or any(self.code_category(c) == HIV for c in codes)
                or any(self.drug_category(m.name, _never) == HIV for m in records.medications))


def _never() -> bool:
    return False


def _joined(texts: Iterable[str]) -> str:
    """Several fields as one text to search: a line break keeps every word apart, and no term
    spans one, so the first match is in the first field that holds a term, as field by field."""
    return "\n".join(text for text in texts if text)


class _Cut:
    """One record set's filtering: each step gets a part that is not empty, returns it as it
    was when nothing in it matched (or the part to keep), and counts what it took out."""

    def __init__(self, policy: PrivacyPolicy, records: RecordSet) -> None:
        self.policy = policy
        self.records = records
        self._says_hiv: bool | None = None
        self.counts: Counter[tuple[str, str]] = Counter()

    def says_hiv(self) -> bool:
        if self._says_hiv is None:
            self._says_hiv = self.policy.says_hiv(self.records)
        return self._says_hiv

    def text(self, value: str) -> str:
        category = self.policy.text_category(value)
        if category is None:
            return value
        self.counts[category, "text"] += 1
        return ""

    def codes(self, codes: Iterable[str]) -> tuple[list[str], list[str]]:
        """The codes to keep, and the categories of those taken out."""
        kept, removed = [], []
        for code in codes:
            category = self.policy.code_category(code) if _CODE_SHAPE.fullmatch(code.strip().upper()) else None
            if category is None:
                kept.append(code)
            else:
                self.counts[category, "diagnosis"] += 1
                removed.append(category)
        return kept, removed

    def value(self, tag: str, text: str) -> str:
        """An unmapped field's text: an HIV field or matching prose emptied, listed codes taken
        out of a code list."""
        if not text:
            return text
        if tag in HIV_FIELDS:
            self.counts[HIV, "table"] += 1
            return ""
        kept, removed = self.codes(text.split(";"))
        return ";".join(kept) if removed else self.text(text)

    def extra(self, extra: Extra) -> Extra:
        return tuple((tag, self.value(tag, text)) for tag, text in extra)

    def fields(self, record, names: Iterable[str]):
        """``record`` with its free-text ``names`` and its unmapped fields filtered. The texts are
        searched together first (one search, as most records hold no term), then one by one."""
        changes = {}
        values = [(name, getattr(record, name)) for name in names]
        if self.policy.text_category(_joined(value for _, value in values)) is not None:
            for name, value in values:
                if value and self.text(value) != value:
                    changes[name] = ""
        if _names(type(record), UNMAPPED) and record.extra:
            extra = self.extra(record.extra)
            if extra != record.extra:
                changes["extra"] = extra
        return dataclasses.replace(record, **changes) if changes else record

    def record(self, record):
        """A single record (the visit, a letter): its text fields emptied, not the record dropped."""
        kept = self.fields(record, _names(type(record), TEXT))
        for name in _names(type(record), PROGRAMME):
            if getattr(kept, name) == HIV_PATIENT_CLASS:
                self.counts[HIV, "encounter"] += 1
                kept = dataclasses.replace(kept, **{name: ""})
        return kept

    def diagnosis(self, diagnosis):
        main, removed = self.codes([diagnosis.main] if diagnosis.main else [])
        secondary, removed_secondary = self.codes(diagnosis.secondary)
        traditional, removed_traditional = self.codes(diagnosis.traditional)
        removed += removed_secondary + removed_traditional
        texts = {}
        for name in _names(Diagnosis, TEXT):
            value = getattr(diagnosis, name)
            if removed and value:
                self.counts[removed[0], "text"] += 1
                value = ""
            texts[name] = self.text(value)
        if not removed and texts == {name: getattr(diagnosis, name) for name in texts}:
            return diagnosis
        return dataclasses.replace(diagnosis, main=main[0] if main else "", secondary=tuple(secondary),
                                   traditional=tuple(traditional), **texts)

    def lines(self, lines: tuple, part: str):
        """Each line through :meth:`line`: one whose drug name or free text matches is dropped
        and counted under ``part``; the others keep their lines with codes and unmapped fields cut."""
        kept, changed = [], False
        for line in lines:
            result = self.line(line)
            if isinstance(result, str):
                self.counts[result, part] += 1
                changed = True
            else:
                changed = changed or result is not line
                kept.append(result)
        return tuple(kept) if changed else lines

    def line(self, line):
        """The line to keep (maybe with codes taken out), or the category that drops it."""
        drug_names, texts_of, code_names, unmapped = _line_plan(type(line))
        for name in drug_names:
            found = self.policy.drug_category(getattr(line, name), self.says_hiv)
            if found is not None:
                return found
        found = self.policy.text_category(_joined(texts_of(line)))
        if found is not None:
            return found
        changes = {}
        if unmapped and line.extra:
            extra = self.extra(line.extra)
            if extra != line.extra:
                changes["extra"] = extra
        for name in code_names:
            value = getattr(line, name)
            if value:
                remaining, removed = self.codes(value.split(";"))
                if removed:
                    changes[name] = ";".join(remaining)
        return dataclasses.replace(line, **changes) if changes else line

    def check_in(self, check_in):
        """The first cost of a visit: a matching drug, service or supply is emptied with its code."""
        changes = {}
        drug = self.policy.drug_category(check_in.drug_name, self.says_hiv)
        if drug is not None:
            self.counts[drug, "medication"] += 1
            changes.update(drug_code="", drug_name="")
        for kind in ("service", "supply"):
            found = self.policy.text_category(getattr(check_in, f"{kind}_name"))
            if found is not None:
                self.counts[found, "service"] += 1
                changes.update({f"{kind}_code": "", f"{kind}_name": ""})
        kept = self.fields(check_in, [n for n in _names(CheckIn, TEXT) if n not in ("service_name", "supply_name")])
        return dataclasses.replace(kept, **changes) if changes else kept

    def tables(self, tables: tuple[RawTable, ...]):
        kept, changed = [], False
        for table in tables:
            if table.kind == HIV_TABLE:
                self.counts[HIV, "table"] += 1
                changed = True
                continue
            filtered = self.table(table)
            changed = changed or filtered is not table
            kept.append(filtered)
        return tuple(kept) if changed else tables

    def table(self, table: RawTable) -> RawTable:
        """A table the model does not map, field by field: its leaf elements are the fields."""
        root = parse_untrusted_xml(table.content.encode("utf-8"), where=table.kind)
        before = sum(self.counts.values())
        for element in root.iter():
            if len(element) == 0 and element.text and isinstance(element.tag, str):
                value = self.value(etree.QName(element).localname, element.text)
                if value != element.text:
                    element.text = value
        if sum(self.counts.values()) == before:
            return table
        content = table.content
        declaration = content[:content.index("?>") + 2] if content.startswith("<?xml") else ""
        return RawTable(table.kind, declaration + etree.tostring(root, encoding="unicode"))


#: Record-set attribute → the step that filters it, in the order the parts are visited.
_STEPS = (
    ("encounter", _Cut.record),
    ("diagnosis", _Cut.diagnosis),
    ("medications", lambda cut, lines: cut.lines(lines, "medication")),
    ("services", lambda cut, lines: cut.lines(lines, "service")),
    ("observations", lambda cut, lines: cut.lines(lines, "observation")),
    ("notes", lambda cut, lines: cut.lines(lines, "note")),
    ("immunizations", lambda cut, lines: cut.lines(lines, "immunization")),
    ("discharge_letter", _Cut.record),
    ("referral", _Cut.record),
    ("appointment", _Cut.record),
    ("check_in", _Cut.check_in),
    ("other_tables", _Cut.tables),
)
