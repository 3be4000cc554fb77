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
it. A line (drug, service, result, progress note) that matches is dropped. Nothing removed is
logged: what was removed is counted, by category and by the part of the record it was in.
"""
from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from lxml import etree

from gateway.core.model import Extra, RawTable, RecordSet
from gateway.formats.xml_safety import parse_untrusted_xml

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

_CODE_SHAPE = re.compile(r"[A-Z]\d\d[0-9A-Z.*†+]*")
_CODE_NOISE = re.compile(r"[.*†+\s]")


@dataclass(frozen=True)
class Removal:
    """``count`` items of ``category`` were removed from ``part`` of a record set: ``diagnosis``
    (codes), ``text`` (free-text fields), ``encounter`` (MA_DOITUONG_KCB), ``medication``,
    ``service``, ``observation``, ``note``, ``table`` (an unmapped table or its fields), or
    ``message`` (the whole message, withheld from a destination that forwards it as received)."""

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
        the same object comes back, so its cached JSON is reused."""
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


_ENCOUNTER_TEXTS = ("admission_reason", "inpatient_reason", "treatment_method", "note")
_REFERRAL_TEXTS = ("clinical_signs", "history", "results_summary", "treatment_given", "services_used",
                   "drugs_used", "treatment_method", "treatment_direction")


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
        """``record`` with its free-text ``names`` and its unmapped fields filtered."""
        changes = {}
        for name in names:
            value = getattr(record, name)
            if value and self.text(value) != value:
                changes[name] = ""
        if record.extra:
            extra = self.extra(record.extra)
            if extra != record.extra:
                changes["extra"] = extra
        return dataclasses.replace(record, **changes) if changes else record

    def encounter(self, encounter):
        kept = self.fields(encounter, _ENCOUNTER_TEXTS)
        if kept.patient_class == HIV_PATIENT_CLASS:
            self.counts[HIV, "encounter"] += 1
            kept = dataclasses.replace(kept, patient_class="")
        return kept

    def diagnosis(self, diagnosis):
        main, removed = self.codes([diagnosis.main] if diagnosis.main else [])
        secondary, removed_secondary = self.codes(diagnosis.secondary)
        removed += removed_secondary
        texts = {}
        for name in ("admission_text", "discharge_text"):
            value = getattr(diagnosis, name)
            if removed and value:
                self.counts[removed[0], "text"] += 1
                value = ""
            texts[name] = self.text(value)
        if not removed and texts == {name: getattr(diagnosis, name) for name in texts}:
            return diagnosis
        return dataclasses.replace(diagnosis, main=main[0] if main else "", secondary=tuple(secondary), **texts)

    def lines(self, lines: tuple, part: str, keep):
        """Each line through ``keep``, which returns the line to keep (maybe changed) or the
        category that drops it."""
        kept, changed = [], False
        for line in lines:
            result = keep(line)
            if isinstance(result, str):
                self.counts[result, part] += 1
                changed = True
            else:
                changed = changed or result is not line
                kept.append(result)
        return tuple(kept) if changed else lines

    def _first(self, *categories: str | None) -> str | None:
        return next((c for c in categories if c is not None), None)

    def medication(self, line):
        found = self._first(self.policy.drug_category(line.name, self.says_hiv),
                            self.policy.text_category(line.directions))
        return found or self.fields(line, ())

    def service(self, line):
        found = self._first(self.policy.text_category(line.service_name), self.policy.text_category(line.supply_name))
        if found:
            return found
        kept = self.fields(line, ())
        if line.diagnosis_codes:
            remaining, removed = self.codes(line.diagnosis_codes.split(";"))
            if removed:
                kept = dataclasses.replace(kept, diagnosis_codes=";".join(remaining))
        return kept

    def observation(self, line):
        found = self._first(*(self.policy.text_category(getattr(line, name))
                              for name in ("code", "name", "value", "description", "conclusion")))
        return found or self.fields(line, ())

    def note(self, line):
        found = self._first(*(self.policy.text_category(getattr(line, name))
                              for name in ("progress", "stage", "consultation", "surgery")))
        return found or self.fields(line, ())

    def check_in(self, check_in):
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
        kept = self.fields(check_in, ())
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
    ("encounter", _Cut.encounter),
    ("diagnosis", _Cut.diagnosis),
    ("medications", lambda cut, lines: cut.lines(lines, "medication", cut.medication)),
    ("services", lambda cut, lines: cut.lines(lines, "service", cut.service)),
    ("observations", lambda cut, lines: cut.lines(lines, "observation", cut.observation)),
    ("notes", lambda cut, lines: cut.lines(lines, "note", cut.note)),
    ("referral", lambda cut, letter: cut.fields(letter, _REFERRAL_TEXTS)),
    ("appointment", lambda cut, letter: cut.fields(letter, ())),
    ("check_in", _Cut.check_in),
    ("other_tables", _Cut.tables),
)
