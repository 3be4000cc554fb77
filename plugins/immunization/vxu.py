"""A VXU^V04 (CDC IIS implementation guide, HL7 2.5.1) as canonical records.

The shared mapping (``records_from_hl7``) reads the patient (PID, NK1 and PID-21 the mother, PV1,
DG1); this module reads the order groups itself, in message order, because an OBX belongs to the
RXA before it: ``ORC [TQ1] RXA [RXR] {OBX [NTE]}`` (vn-standards §7.1). Each RXA is one
:class:`Immunization`: vaccine (RXA-5, CVX, with the national code from the plugin's table), dose
number (OBX 30973-2), when (RXA-3), amount (RXA-6/7), new or historical (RXA-9), giving facility
(RXA-11.4), lot (RXA-15), expiry (RXA-16), manufacturer (RXA-17, MVX), refusal reason (RXA-18),
completion (RXA-20: CP, PA, RE, NA), action (RXA-21: A, U, D), route and site (RXR-1/2), the
sender's id of the dose (ORC-3, which a U or D names again), eligibility (OBX 64994-7) and funding
source (OBX 30963-3). Other OBX (VIS documents, adverse events) become observations.

What the guide makes an error is raised as :class:`ContentError` naming the field (``RXA^2^3``:
the second RXA's third field), so the sender hears AE with an ERR per problem, all at once.
"""
from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.plugin import (ContentError, Hl7Message, Identifier, Immunization, Issue, Observation, Person,
                            RecordSet, RelatedPerson, fold_name, records_from_hl7)

#: RXA-20 completion status (HL7 table 0322) and RXA-21 action code (table 0206).
COMPLETION = frozenset({"CP", "PA", "RE", "NA"})
ACTIONS = frozenset({"A", "U", "D"})
#: OBX-3 LOINC codes the dose keeps in fields of its own.
DOSE_NUMBER, ELIGIBILITY, FUNDING_SOURCE = "30973-2", "64994-7", "30963-3"
_TIMESTAMP = re.compile(r"(\d{4}(?:\d{2}){0,5})(?:\.\d{1,4})?(?:[+-]\d{4})?")
_CVX = re.compile(r"\d{1,3}")
_BHYT_CARD = re.compile(r"[A-Z]{2}\d{13}")


@dataclass(frozen=True)
class VxuSettings:
    """What a site may change (``[plugins.immunization]``, see the plugin's README)."""

    #: Folded name prefixes of a newborn registered under the mother's name (``con ba`` …).
    placeholders: tuple[str, ...]
    #: CVX code → the national vaccine list's code.
    national_codes: Mapping[str, str]


def records_from_vxu(message: Hl7Message, settings: VxuSettings) -> RecordSet:
    """The record set of one VXU, or :class:`ContentError` with every error the guide names."""
    records = records_from_hl7(message)
    doses, observations, issues = _order_groups(message, settings)
    if not doses:
        issues.append(Issue(101, "RXA: a VXU^V04 carries at least one RXA (the dose); there is none", "RXA^1"))
    if any(i.severity == "E" for i in issues):
        raise ContentError(issues)
    person = records.person
    if person is not None:
        person = newborn(with_mother_from_pid21(message, person), settings.placeholders)
    return dataclasses.replace(records, person=person, immunizations=tuple(doses), observations=tuple(observations))


def is_placeholder(name: str, placeholders: tuple[str, ...]) -> bool:
    """Whether ``name`` is no name of its own but a newborn's placeholder ("CON BÀ NGUYỄN THỊ A",
    "Con của …", "CB …", "Bé trai", "Bé gái", "SS …"), with or without diacritics, in any case."""
    folded = fold_name(name)
    return any(folded == p or folded.startswith(p + " ") for p in placeholders)


def newborn(person: Person, placeholders: tuple[str, ...]) -> Person:
    """A child under a placeholder name, with a mother the record identifies, is provisional: the
    person index files it under her until a record names the child on its own. An identifier of
    the mother's that the sender put on the child (registered under her card) is hers, not the
    child's, and is left out."""
    mother = next((r for r in person.related if r.relationship == "mother"), None)
    if mother is None or not mother.identifiers or not is_placeholder(person.full_name, placeholders):
        return person
    hers = {i.value for i in mother.identifiers}
    hers |= {i.value[5:] for i in mother.identifiers if i.system == "BHYT" and _BHYT_CARD.fullmatch(i.value)}
    own = tuple(i for i in person.identifiers if i.value not in hers)
    return dataclasses.replace(person, identifiers=own, provisional="newborn")


def with_mother_from_pid21(message: Hl7Message, person: Person) -> Person:
    """PID-21, the mother's identifier, when no NK1 mother carries one (NK1-33)."""
    pid21 = message.field("PID", 21)
    mother = next((r for r in person.related if r.relationship == "mother"), None)
    if not pid21 or (mother is not None and mother.identifiers):
        return person
    identifiers = tuple(Identifier(_system(message, cx), _component(message, cx, 1), _component(message, cx, 4))
                        for cx in message.repetitions(pid21) if _component(message, cx, 1))
    if not identifiers:
        return person
    if mother is None:
        related = person.related + (RelatedPerson("mother", identifiers=identifiers),)
    else:
        related = tuple(dataclasses.replace(r, identifiers=identifiers) if r is mother else r for r in person.related)
    return dataclasses.replace(person, related=related)


_IDENTIFIER_TYPES = {"NI": "CCCD", "NNVNM": "CCCD", "CCCD": "CCCD", "HC": "BHYT", "BHYT": "BHYT", "SS": "BHXH",
                     "BHXH": "BHXH", "MR": "MR", "PI": "MR", "PPN": "PASSPORT"}


def _system(message: Hl7Message, cx: str) -> str:
    type_code = _component(message, cx, 5).upper()
    return _IDENTIFIER_TYPES.get(type_code) or _IDENTIFIER_TYPES.get(_component(message, cx, 4).upper()) or "OTHER"


def related_cccd_issues(message: Hl7Message) -> list[Issue]:
    """A mother's (or father's, guardian's) CCCD that cannot be one: not 12 digits, or no province
    code (001-096) in front. A newborn is filed under the mother by it, so a wrong one would file
    the child under someone else; the shared identity rules check only the patient's own."""
    places = [(f"NK1^{k}^33", f"NK1-33 ({k})", _get(nk1, 33)) for k, nk1 in enumerate(message.segments("NK1"), 1)]
    places.append(("PID^1^21", "PID-21", message.field("PID", 21)))
    issues = []
    for location, name, value in places:
        for cx in message.repetitions(value):
            cccd = _component(message, cx, 1)
            if _system(message, cx) == "CCCD" and cccd and not _cccd_shape(cccd):
                issues.append(Issue(103, f"{name}: the related person's CCCD is not 12 digits beginning with a "
                                         f"province code (001-096)", location))
    return issues


def _cccd_shape(value: str) -> bool:
    return len(value) == 12 and value.isdigit() and 1 <= int(value[:3]) <= 96


def _order_groups(message: Hl7Message, settings: VxuSettings) -> tuple[list[Immunization], list[Observation],
                                                                        list[Issue]]:
    doses: list[Immunization] = []
    observations: list[Observation] = []
    issues: list[Issue] = []
    orc: list[str] = []
    counts = {"ORC": 0, "RXA": 0}
    for fields in message.all_segments():
        name = fields[0]
        if name not in ("ORC", "RXA", "RXR", "OBX"):
            continue
        if name == "ORC":
            counts["ORC"] += 1
            orc = fields
        elif name == "RXA":
            counts["RXA"] += 1
            dose, found = _dose(message, fields, counts["RXA"], orc, counts["ORC"], settings)
            doses.append(dose)
            issues += found
        elif name == "RXR" and doses:
            doses[-1] = dataclasses.replace(doses[-1], route=_component(message, _get(fields, 1), 1),
                                            site=_component(message, _get(fields, 2), 1))
        elif name == "OBX":
            observation = _observation(message, fields)
            if doses and observation.code in (DOSE_NUMBER, ELIGIBILITY, FUNDING_SOURCE):
                field_name = {DOSE_NUMBER: "dose_number", ELIGIBILITY: "eligibility",
                              FUNDING_SOURCE: "funding_source"}[observation.code]
                value = _component(message, _get(fields, 5), 1)
                doses[-1] = dataclasses.replace(doses[-1], **{field_name: value})
            else:
                observations.append(observation)
    return doses, observations, issues


def _dose(message: Hl7Message, rxa: list[str], n: int, orc: list[str], orc_n: int,
          settings: VxuSettings) -> tuple[Immunization, list[Issue]]:
    issues: list[Issue] = []
    at = f"RXA^{n}"
    given = _component(message, _get(rxa, 3), 1)
    administered = _time(given, 12)
    if not given:
        issues.append(Issue(101, f"RXA-3 (dose {n}): the date/time the vaccine was given is required", f"{at}^3"))
    elif administered is None:
        issues.append(Issue(102, f"RXA-3 (dose {n}): {given[:20]!r} is no HL7 date/time (YYYYMMDD[HHMM])", f"{at}^3"))
    vaccine = _get(rxa, 5)
    code, system = _component(message, vaccine, 1), _component(message, vaccine, 3).upper()
    if not code:
        issues.append(Issue(101, f"RXA-5 (dose {n}): the vaccine code (CVX) is required", f"{at}^5"))
    elif system == "CVX" and not _CVX.fullmatch(code):
        issues.append(Issue(103, f"RXA-5 (dose {n}): {code[:20]!r} is no CVX code (1 to 3 digits)", f"{at}^5"))
    expires = _component(message, _get(rxa, 16), 1)
    expiry = _time(expires, 8)
    if expiry is None:
        issues.append(Issue(102, f"RXA-16 (dose {n}): the lot's expiry {expires[:20]!r} is no HL7 date", f"{at}^16"))
    completion = _component(message, _get(rxa, 20), 1).upper()
    if completion and completion not in COMPLETION:
        issues.append(Issue(103, f"RXA-20 (dose {n}): completion status {completion[:10]!r} is not one of CP, PA, "
                                 f"RE, NA (HL7 table 0322)", f"{at}^20"))
    refusal = _component(message, _get(rxa, 18), 1)
    if completion == "RE" and not refusal:
        issues.append(Issue(101, f"RXA-18 (dose {n}): a refused dose (RXA-20 RE) names the refusal reason "
                                 f"(table NIP002)", f"{at}^18"))
    action = _component(message, _get(rxa, 21), 1).upper() or "A"
    if action not in ACTIONS:
        issues.append(Issue(103, f"RXA-21 (dose {n}): action code {action[:10]!r} is not one of A, U, D (HL7 table "
                                 f"0206)", f"{at}^21"))
    record_id = _component(message, _get(orc, 3), 1)
    if action in ("U", "D") and not record_id:
        issues.append(Issue(101, f"ORC-3 (dose {n}): an update or delete (RXA-21 {action}) names the dose it "
                                 f"changes by its filler order number", f"ORC^{max(orc_n, 1)}^3"))
    manufacturer = _get(rxa, 17)
    amount = _component(message, _get(rxa, 6), 1)
    dose = Immunization(
        vaccine_code=code,
        vaccine_system=_component(message, vaccine, 3),
        vaccine_name=_component(message, vaccine, 2),
        administered_at=administered or "",
        amount="" if amount == "999" else amount,
        unit=_component(message, _get(rxa, 7), 1),
        lot_number=_component(message, _get(rxa, 15), 1),
        expires_on=expiry or "",
        manufacturer=_component(message, manufacturer, 2) or _component(message, manufacturer, 1),
        manufacturer_code=_component(message, manufacturer, 1),
        facility=_component(message, _get(rxa, 11), 4),
        completion=completion,
        action=action,
        record_id=record_id,
        source=_component(message, _get(rxa, 9), 1),
        refusal_reason=refusal,
        national_code=settings.national_codes.get(code, "") if system == "CVX" else "",
    )
    return dose, issues


def _observation(message: Hl7Message, obx: list[str]) -> Observation:
    value = _get(obx, 5)
    coded = _component(message, _get(obx, 2), 1).upper() in ("CE", "CWE", "CNE")
    return Observation(
        code=_component(message, _get(obx, 3), 1),
        name=_component(message, _get(obx, 3), 2),
        value=(_component(message, value, 2) or _component(message, value, 1)) if coded
        else _component(message, value, 1),
        unit=_component(message, _get(obx, 6), 1),
        observed_at=_time(_component(message, _get(obx, 14), 1), 12) or "",
        stt=_component(message, _get(obx, 1), 1),
    )


def _get(fields: list[str], n: int) -> str:
    return fields[n] if n < len(fields) else ""


def _component(message: Hl7Message, value: str, n: int) -> str:
    """Component ``n`` of a field's first repetition, unescaped, NFC, trimmed."""
    first = value.split(message.encoding_characters[1], 1)[0]
    parts = message.components(first)
    part = parts[n - 1] if n - 1 < len(parts) else ""
    return unicodedata.normalize("NFC", message.unescape(part)).strip() if part else ""


def _time(value: str, length: int) -> str | None:
    """An HL7 TS (its first component) cut to ``length`` digits, None when it is no date (a 13th
    month included), "" when empty."""
    if not value:
        return ""
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        return None
    digits = match.group(1)
    if len(digits) >= 8:
        try:
            datetime.strptime(digits[:8], "%Y%m%d")
        except ValueError:
            return None
    return digits[:length]
