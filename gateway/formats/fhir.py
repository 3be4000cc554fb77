"""Canonical records → a FHIR R4 ``Bundle`` (type ``collection``) as JSON.

Vietnam has no state-approved FHIR implementation guide (vn-standards §6; the community "VN Core"
IG says so itself), so identifier and code systems that no international terminology covers use
the gateway's own ``urn:hssk:`` namespace below: stable, obviously ours, and easy for a receiver
to map once an official IG exists. ICD-10, LOINC (codes shaped ``nnnn-n``), v3 ActCode and the
HL7 v2 interpretation table are the international ones.

Resources are written where the record set has data: Patient, Encounter, Condition (main and
secondary ICD-10), MedicationDispense (XML2 lines), Observation (XML4 / OBX), Immunization (VXU
RXA: a dose's update and delete, RXA-21 U and D, name the dose by the sender's id, ORC-3, and a
delete is ``entered-in-error``). The bundle's ``id`` and
``identifier`` carry the gateway's idempotency key; entry ``fullUrl``s are UUIDs derived from it,
so a re-render of the same outbox row is byte-identical.
"""
from __future__ import annotations

import json
import re
import uuid
from decimal import Decimal

from gateway.model.records import Diagnosis, Encounter, Immunization, MedicationLine, Observation, Person, RecordSet

IDEMPOTENCY_SYSTEM = "urn:hssk:idempotency-key"
IDENTIFIER_SYSTEMS = {
    "CCCD": "urn:hssk:sid:cccd", "CMND": "urn:hssk:sid:cmnd", "BHYT": "urn:hssk:sid:bhyt",
    "BHXH": "urn:hssk:sid:bhxh", "MR": "urn:hssk:sid:mr", "PASSPORT": "urn:hssk:sid:passport",
    "OTHER_ID": "urn:hssk:sid:other",
}
MA_LK_SYSTEM = "urn:hssk:sid:ma-lk"
FACILITY_SYSTEM = "urn:hssk:sid:ma-cskcb"
DRUG_SYSTEM = "urn:hssk:cs:ma-thuoc"
INDICATOR_SYSTEM = "urn:hssk:cs:ma-chi-so"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v2-0078"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
COMMUNE_EXTENSION = "urn:hssk:fhir:StructureDefinition/commune-code"
#: Vietnam keeps one offset all year (no daylight saving).
VIETNAM_OFFSET = "+07:00"

_GENDER = {"1": "male", "2": "female", "3": "unknown"}
#: MA_LOAI_KCB → v3 ActCode: 03/09 inpatient, 04 day inpatient (short stay), 06 commune-station
#: stay (short stay), the rest ambulatory. Our reading.
_ENCOUNTER_CLASS = {"03": "IMP", "09": "IMP", "04": "SS", "06": "SS"}
_RELATION = {"mother": "MTH", "father": "FTH", "guardian": "GUARD"}
_LOINC_SHAPE = re.compile(r"\d{1,7}-\d")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def fhir_datetime(value: str) -> str:
    """``yyyymmdd[HHMM]`` (or a year / year-month) → FHIR date or dateTime in Vietnam time."""
    if len(value) >= 12:
        return f"{value[:4]}-{value[4:6]}-{value[6:8]}T{value[8:10]}:{value[10:12]}:00{VIETNAM_OFFSET}"
    if len(value) >= 8:
        return f"{value[:4]}-{value[4:6]}-{value[6:8]}"
    if len(value) >= 6:
        return f"{value[:4]}-{value[4:6]}"
    return value[:4]


def _birth_date(person: Person) -> str:
    """NGAY_SINH at the precision known: ``198500000000`` is the year only."""
    precision = person.birth_date_precision
    value = person.birth_date
    return {"year": value[:4], "month": f"{value[:4]}-{value[4:6]}"}.get(precision) or fhir_datetime(value[:8])


def _identifier(system: str, value: str, valid_from: str = "", valid_to: str = "") -> dict:
    found: dict = {"system": IDENTIFIER_SYSTEMS.get(system, f"urn:hssk:sid:{system.lower()}"), "value": value}
    period = {k: fhir_datetime(v) for k, v in (("start", valid_from), ("end", valid_to)) if v}
    if period:
        found["period"] = period
    return found


def _patient(person: Person) -> dict:
    resource: dict = {"resourceType": "Patient", "identifier": [
        _identifier(i.system, i.value, i.valid_from, i.valid_to) for i in person.identifiers]}
    if person.full_name:
        resource["name"] = [{"text": person.full_name, "family": person.family,
                             "given": [p for p in (person.middle, person.given) if p]}]
    if person.phone:
        resource["telecom"] = [{"system": "phone", "value": person.phone}]
    if person.sex in _GENDER:
        resource["gender"] = _GENDER[person.sex]
    if person.birth_date:
        resource["birthDate"] = _birth_date(person)
    address = person.address
    if address is not None:
        written = {k: v for k, v in (("text", address.text), ("district", address.district),
                                     ("state", address.province)) if v}
        if address.commune:
            written["extension"] = [{"url": COMMUNE_EXTENSION, "valueString": address.commune}]
        resource["address"] = [written]
    contacts = [{"relationship": [{"coding": [{"system": ROLE_CODE, "code": _RELATION[r.relationship]}]}],
                 "name": {"text": " ".join(p for p in (r.family, r.middle, r.given) if p), "family": r.family,
                          "given": [p for p in (r.middle, r.given) if p]}}
                | ({"telecom": [{"system": "phone", "value": r.phone}]} if r.phone else {})
                for r in person.related if r.relationship in _RELATION]
    if contacts:
        resource["contact"] = contacts
    if person.previous_identifiers:
        resource["link"] = [{"type": "replaces", "other": {"identifier": _identifier(i.system, i.value)}}
                            for i in person.previous_identifiers]
    return resource


def _encounter(encounter: Encounter, patient_ref: dict, condition_refs: list[str]) -> dict:
    resource: dict = {
        "resourceType": "Encounter",
        "status": "finished" if encounter.discharged_at else "in-progress",
        "class": {"system": ACT_CODE, "code": _ENCOUNTER_CLASS.get(encounter.encounter_class, "AMB")},
        "subject": patient_ref,
    }
    if encounter.ma_lk:
        resource["identifier"] = [{"system": MA_LK_SYSTEM, "value": encounter.ma_lk}]
    period = {k: fhir_datetime(v) for k, v in (("start", encounter.admitted_at), ("end", encounter.discharged_at)) if v}
    if period:
        resource["period"] = period
    if encounter.admission_reason:
        resource["reasonCode"] = [{"text": encounter.admission_reason}]
    if condition_refs:
        resource["diagnosis"] = [{"condition": {"reference": ref}, "rank": n}
                                 for n, ref in enumerate(condition_refs, 1)]
    if encounter.facility:
        resource["serviceProvider"] = {"identifier": {"system": FACILITY_SYSTEM, "value": encounter.facility}}
    return resource


def _conditions(diagnosis: Diagnosis, patient_ref: dict, encounter_ref: dict | None) -> list[dict]:
    found = []
    for n, code in enumerate((diagnosis.main, *diagnosis.secondary)):
        if not code:
            continue
        resource: dict = {
            "resourceType": "Condition",
            "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "encounter-diagnosis"}]}],
            "code": {"coding": [{"system": ICD10, "code": code}]},
            "subject": patient_ref,
        }
        if n == 0 and diagnosis.discharge_text:
            resource["code"]["text"] = diagnosis.discharge_text
        if encounter_ref:
            resource["encounter"] = encounter_ref
        found.append(resource)
    return found


def _quantity(value: Decimal | None, unit: str) -> dict | None:
    if value is None:
        return None
    return {"value": float(value), **({"unit": unit} if unit else {})}


def _dispense(line: MedicationLine, patient_ref: dict, encounter_ref: dict | None) -> dict:
    resource: dict = {
        "resourceType": "MedicationDispense",
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": DRUG_SYSTEM, "code": line.code}], "text": line.name},
        "subject": patient_ref,
    }
    quantity = _quantity(line.quantity, line.unit)
    if quantity:
        resource["quantity"] = quantity
    if encounter_ref:
        resource["context"] = encounter_ref
    if line.performed_at or line.ordered_at:
        resource["whenHandedOver"] = fhir_datetime(line.performed_at or line.ordered_at)
    if line.directions or line.dose:
        resource["dosageInstruction"] = [{"text": "; ".join(p for p in (line.dose, line.directions) if p)}]
    return resource


def _observation(obs: Observation, patient_ref: dict, encounter_ref: dict | None) -> dict:
    system = LOINC if _LOINC_SHAPE.fullmatch(obs.code) else INDICATOR_SYSTEM
    resource: dict = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": system, "code": obs.code}], **({"text": obs.name} if obs.name else {})},
        "subject": patient_ref,
    }
    if encounter_ref:
        resource["encounter"] = encounter_ref
    if obs.observed_at:
        resource["effectiveDateTime"] = fhir_datetime(obs.observed_at)
    if _NUMBER.fullmatch(obs.value):
        resource["valueQuantity"] = {"value": float(obs.value), **({"unit": obs.unit} if obs.unit else {})}
    elif obs.value:
        resource["valueString"] = obs.value
    if obs.reference_range:
        resource["referenceRange"] = [{"text": obs.reference_range}]
    if obs.abnormal_flag:
        resource["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": obs.abnormal_flag}]}]
    if obs.conclusion:
        resource["note"] = [{"text": obs.conclusion}]
    return resource


#: RXA-20 completion status → FHIR Immunization.status (NA, RE: the dose was not given).
_IMMUNIZATION_STATUS = {"CP": "completed", "PA": "completed", "RE": "not-done", "NA": "not-done"}
_VACCINE_SYSTEMS = {"CVX": "http://hl7.org/fhir/sid/cvx"}
NATIONAL_VACCINE_SYSTEM = "urn:hssk:cs:vaccine"
DOSE_SYSTEM = "urn:hssk:sid:vaccination"
REFUSAL_SYSTEM = "urn:oid:2.16.840.1.114222.4.5.274"  # CDC PHIN VS NIP002, substance refusal reason
MVX = "http://hl7.org/fhir/sid/mvx"


def _immunization(dose: Immunization, patient_ref: dict) -> dict:
    system = _VACCINE_SYSTEMS.get(dose.vaccine_system.upper(), f"urn:hssk:sid:vaccine:{dose.vaccine_system or 'local'}")
    coding = [{"system": system, "code": dose.vaccine_code}]
    if dose.national_code:
        coding.append({"system": NATIONAL_VACCINE_SYSTEM, "code": dose.national_code})
    status = "entered-in-error" if dose.action == "D" else _IMMUNIZATION_STATUS.get(dose.completion, "completed")
    resource: dict = {
        "resourceType": "Immunization",
        "status": status,
        "vaccineCode": {"coding": coding, **({"text": dose.vaccine_name} if dose.vaccine_name else {})},
        "patient": patient_ref,
        "occurrenceDateTime": fhir_datetime(dose.administered_at) if dose.administered_at else "unknown",
    }
    if dose.record_id:
        resource["identifier"] = [{"system": DOSE_SYSTEM, "value": dose.record_id}]
    if dose.source:
        resource["primarySource"] = dose.source == "00"
    if dose.refusal_reason:
        resource["statusReason"] = {"coding": [{"system": REFUSAL_SYSTEM, "code": dose.refusal_reason}]}
    if dose.dose_number:
        resource["protocolApplied"] = [{"doseNumberString": dose.dose_number}]
    if dose.funding_source:
        resource["fundingSource"] = {"coding": [{"code": dose.funding_source}]}
    if dose.eligibility:
        resource["programEligibility"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0064",
                                                       "code": dose.eligibility}]}]
    if dose.lot_number:
        resource["lotNumber"] = dose.lot_number
    if dose.expires_on:
        resource["expirationDate"] = fhir_datetime(dose.expires_on)
    if dose.manufacturer or dose.manufacturer_code:
        resource["manufacturer"] = {k: v for k, v in (
            ("identifier", {"system": MVX, "value": dose.manufacturer_code} if dose.manufacturer_code else None),
            ("display", dose.manufacturer)) if v}
    if dose.amount and _NUMBER.fullmatch(dose.amount):
        resource["doseQuantity"] = {"value": float(dose.amount), **({"unit": dose.unit} if dose.unit else {})}
    if dose.route:
        resource["route"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0162", "code": dose.route}]}
    if dose.site:
        resource["site"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0163", "code": dose.site}]}
    if dose.facility:
        resource["location"] = {"identifier": {"system": FACILITY_SYSTEM, "value": dose.facility}}
    return resource


def fhir_bundle(records: RecordSet, bundle_id: str) -> dict:
    """The record set as a FHIR R4 collection Bundle whose id is ``bundle_id``."""
    entries: list[tuple[str, dict]] = []

    def full_url(n: int) -> str:
        return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{IDEMPOTENCY_SYSTEM}:{bundle_id}:{n}')}"

    patient_url = full_url(0)
    patient_ref = {"reference": patient_url}
    if records.person is not None:
        entries.append((patient_url, _patient(records.person)))
    encounter_url = full_url(1)
    encounter_ref = {"reference": encounter_url} if records.encounter is not None else None
    conditions = _conditions(records.diagnosis, patient_ref, encounter_ref) if records.diagnosis else []
    condition_urls = [full_url(100 + n) for n in range(len(conditions))]
    if records.encounter is not None:
        entries.append((encounter_url, _encounter(records.encounter, patient_ref, condition_urls)))
    entries.extend(zip(condition_urls, conditions))
    entries.extend((full_url(1000 + n), _dispense(line, patient_ref, encounter_ref))
                   for n, line in enumerate(records.medications))
    entries.extend((full_url(10000 + n), _observation(obs, patient_ref, encounter_ref))
                   for n, obs in enumerate(records.observations))
    entries.extend((full_url(20000 + n), _immunization(dose, patient_ref))
                   for n, dose in enumerate(records.immunizations))
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "identifier": {"system": IDEMPOTENCY_SYSTEM, "value": bundle_id},
        "type": "collection",
        "entry": [{"fullUrl": url, "resource": resource} for url, resource in entries],
    }


def render_fhir_json(records: RecordSet, bundle_id: str) -> bytes:
    return json.dumps(fhir_bundle(records, bundle_id), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
