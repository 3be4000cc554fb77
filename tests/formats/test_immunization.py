"""Vaccine doses: VXU RXA/RXR → the canonical Immunization → FHIR R4 Immunization resources,
checked on the shared VXU^V04 sample (two doses, Vietnamese text)."""
from __future__ import annotations

from pathlib import Path

from gateway.formats.fhir import fhir_bundle
from gateway.formats.hl7_model import immunizations_from_rxa, records_from_hl7
from gateway.formats.hl7v2 import Hl7Message

VXU = Path(__file__).resolve().parents[1] / "messages" / "vxu_v04.hl7"


def message() -> Hl7Message:
    raw = VXU.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    return Hl7Message.from_bytes(raw)


def test_each_rxa_becomes_one_dose_with_the_rxr_that_follows_it():
    first, second = immunizations_from_rxa(message())

    assert (first.vaccine_code, first.vaccine_system, first.vaccine_name) == ("08", "CVX", "Hep B, adolescent or pediatric")
    assert (first.administered_at, first.amount, first.unit) == ("202503160900", "0.5", "mL")
    assert (first.lot_number, first.expires_on, first.manufacturer) == ("HB250101", "20261231", "Nhà sản xuất thử nghiệm")
    assert (first.facility, first.completion, first.route, first.site) == ("79001", "CP", "IM", "RT")
    assert (second.vaccine_code, second.route, second.site, second.lot_number) == ("19", "ID", "LA", "BCG250202")


def test_fhir_bundle_carries_an_immunization_resource_per_dose():
    records = records_from_hl7(message())

    bundle = fhir_bundle(records, "key-1")
    doses = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Immunization"]
    patient = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")

    assert len(doses) == 2
    hep_b = doses[0]
    assert hep_b["vaccineCode"]["coding"] == [{"system": "http://hl7.org/fhir/sid/cvx", "code": "08"}]
    assert (hep_b["status"], hep_b["lotNumber"], hep_b["doseQuantity"]) == ("completed", "HB250101",
                                                                           {"value": 0.5, "unit": "mL"})
    assert hep_b["occurrenceDateTime"].startswith("2025-03-16T09:00")
    assert hep_b["patient"] == {"reference": patient["fullUrl"]}
    assert hep_b["route"]["coding"][0]["code"] == "IM"
    assert doses[1]["vaccineCode"]["coding"][0]["code"] == "19"
