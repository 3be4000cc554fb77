"""The immunization plugin in a real gateway, through the kit's fixtures: what a VXU^V04 becomes
(every RXA field, RXR, the OBX under it, the NK1 mother), each action code and completion status
as the record stores get them (json and FHIR), the CDC IIS Z23 ACK, a malformed RXA answered AE
at its field, and what a site configures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from gateway.plugin import ConfigError, RecordSet, hookimpl, records_from_hl7
from gateway.testing import GatewayUnderTest, read_sample, with_msh_field

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
NIST_LIKE = Path(__file__).resolve().parents[3] / "tests" / "messages" / "vxu_v04.hl7"


@pytest.fixture
def hssk_plugins():
    return ["immunization"]


@pytest.fixture
def hssk_formats():
    return ("json", "fhir")


def sample(name: str, **msh: str) -> bytes:
    """A sample in original mode (one application ACK per message), with MSH fields changed."""
    raw = with_msh_field(with_msh_field(read_sample(SAMPLES / name), 15, ""), 16, "")
    for number, value in msh.items():
        raw = with_msh_field(raw, int(number.removeprefix("msh")), value)
    return raw


def journaled(gateway, ack) -> dict:
    [row] = gateway.journal(control_id=ack.control_id)
    return json.loads(row["records"])


async def delivered(gateway, store, ack, destination: str) -> dict:
    [row] = gateway.journal(control_id=ack.control_id)
    [key] = [r["idempotency_key"] for r in gateway.outbox(message_id=row["id"], destination=destination)]
    await store.wait_for_keys({key})
    [delivery] = store.deliveries(destination, key)
    return json.loads(delivery.body)


def immunizations(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Immunization"]


@pytest_twisted.ensureDeferred
async def test_a_new_administration_becomes_one_record_per_rxa_with_its_rxr_and_obx(hssk_gateway, hssk_mllp):
    ack = await hssk_mllp.send(sample("vxu_v04_new.hl7"))

    ack.assert_accepted()
    records = journaled(hssk_gateway, ack)
    first, second = records["immunizations"]
    assert first == {
        "vaccine_code": "102", "vaccine_system": "CVX", "vaccine_name": "DTP-Hib-Hep B",
        "administered_at": "202504100900", "amount": "0.5", "unit": "mL", "lot_number": "QV250101",
        "expires_on": "20261231", "manufacturer": "Serum Institute of India", "manufacturer_code": "SII",
        "facility": "79001", "completion": "CP", "action": "A", "record_id": "TC2504100001", "source": "00",
        "national_code": "DPT-VGB-Hib", "dose_number": "2", "eligibility": "V02", "funding_source": "PHC70",
        "route": "IM", "site": "LT"}
    assert (second["vaccine_code"], second["national_code"], second["dose_number"], second["route"]) == \
        ("02", "OPV", "2", "PO")
    assert [o["code"] for o in records.get("observations", [])] == ["69764-9"]
    [mother] = records["person"]["related"]
    assert (mother["relationship"], mother["identifiers"][0]["value"]) == ("mother", "079190000456")


@pytest_twisted.ensureDeferred
async def test_a_z22_vxu_is_answered_in_the_z23_profile_and_another_without_it(hssk_mllp):
    z23 = await hssk_mllp.send(sample("vxu_v04_new.hl7"))
    plain = await hssk_mllp.send(sample("vxu_v04_historical.hl7", msh21=""))

    assert (z23.code, z23.message.msh(9), z23.message.msh(21)) == ("AA", "ACK^V04^ACK", "Z23^CDCPHINVS")
    assert (plain.code, plain.message.msh(21)) == ("AA", "")


@pytest_twisted.ensureDeferred
async def test_a_refusal_keeps_its_reason_and_the_record_stores_hear_the_dose_was_not_given(
        hssk_gateway, hssk_mllp, hssk_recording_store):
    ack = await hssk_mllp.send(sample("vxu_v04_refusal.hl7"))

    ack.assert_accepted()
    [dose] = journaled(hssk_gateway, ack)["immunizations"]
    assert (dose["completion"], dose["refusal_reason"], dose["vaccine_code"]) == ("RE", "00", "03")
    assert "amount" not in dose  # RXA-6 999: unknown
    [resource] = immunizations(await delivered(hssk_gateway, hssk_recording_store, ack, "fhir"))
    assert resource["status"] == "not-done"
    assert resource["statusReason"]["coding"][0]["code"] == "00"


@pytest_twisted.ensureDeferred
async def test_a_dose_given_elsewhere_is_kept_as_historical_not_as_given_here(
        hssk_gateway, hssk_mllp, hssk_recording_store):
    ack = await hssk_mllp.send(sample("vxu_v04_historical.hl7"))

    [dose] = journaled(hssk_gateway, ack)["immunizations"]
    assert (dose["source"], dose["administered_at"], dose.get("facility")) == ("01", "20240310", None)
    [resource] = immunizations(await delivered(hssk_gateway, hssk_recording_store, ack, "fhir"))
    assert resource["primarySource"] is False and resource["occurrenceDateTime"] == "2024-03-10"


@pytest.mark.parametrize("name,action,status", [("vxu_v04_new.hl7", "A", "completed"),
                                                ("vxu_v04_update.hl7", "U", "completed"),
                                                ("vxu_v04_delete.hl7", "D", "entered-in-error")])
@pytest_twisted.ensureDeferred
async def test_each_action_code_reaches_the_stores_naming_the_dose_by_the_senders_id(
        hssk_gateway, hssk_mllp, hssk_recording_store, name, action, status):
    ack = await hssk_mllp.send(sample(name))

    ack.assert_accepted()
    dose = journaled(hssk_gateway, ack)["immunizations"][-1]
    as_json = (await delivered(hssk_gateway, hssk_recording_store, ack, "json"))
    resource = immunizations(await delivered(hssk_gateway, hssk_recording_store, ack, "fhir"))[-1]
    assert dose["action"] == action and dose["record_id"].startswith("TC25041000")
    assert json.dumps(as_json).count(f'"action": "{action}"') >= 1
    assert resource["status"] == status
    assert resource["identifier"] == [{"system": "urn:hssk:sid:vaccination", "value": dose["record_id"]}]


@pytest_twisted.ensureDeferred
async def test_a_malformed_rxa_is_answered_ae_with_an_err_at_each_field_and_queues_nothing(hssk_gateway, hssk_mllp):
    raw = sample("vxu_v04_new.hl7").replace(b"|20250410091500+0700||02^OPV^CVX|", b"|2025-04-10||02^OPV^CVX|")
    raw = raw.replace(b"|POL^Polyvac^MVX|||CP|A", b"|POL^Polyvac^MVX|||XX|Z").replace(b"|20261231|", b"|20261331|")

    ack = await hssk_mllp.send(raw)

    assert (ack.code, ack.message.msh(21)) == ("AE", "Z23^CDCPHINVS")
    found = {(e.location, e.code, e.severity) for e in ack.errors}
    assert found == {("RXA^2^3", 102, "E"), ("RXA^1^16", 102, "E"), ("RXA^2^20", 103, "E"),
                     ("RXA^2^21", 103, "E")}
    assert "2025-04-10" in ack.assert_error(location="RXA^2^3").text
    [row] = hssk_gateway.journal(control_id=ack.control_id)
    assert row["status"] == "error" and hssk_gateway.outbox(message_id=row["id"]) == []


@pytest_twisted.ensureDeferred
async def test_in_enhanced_mode_a_malformed_rxa_gets_ce_then_ae(hssk_gateway):
    raw = read_sample(SAMPLES / "vxu_v04_refusal.hl7").replace(b"00^Parental decision^NIP002", b"")
    connection = await hssk_gateway.connect_mllp()
    try:
        await connection.send(raw)
        for _ in range(500):  # the application ACK follows the accept ACK on the wire
            if len(connection.acks) == 2:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
    finally:
        connection.close()

    first, second = connection.acks
    assert (first.code, second.code) == ("CE", "AE")
    second.assert_error(location="RXA^1^18", code=101, text="refusal reason")


@pytest_twisted.ensureDeferred
async def test_an_update_without_the_doses_id_is_ae_at_orc_3(hssk_mllp):
    raw = sample("vxu_v04_update.hl7").replace(b"ORC|RE||TC2504100002^NIIS_THU_NGHIEM", b"ORC|RE||")

    ack = await hssk_mllp.send(raw)

    ack.assert_error(location="ORC^1^3", code=101, text="RXA-21 U")


@pytest_twisted.ensureDeferred
async def test_a_vxu_without_any_rxa_is_ae(hssk_mllp):
    raw = b"\r".join(s for s in sample("vxu_v04_historical.hl7").split(b"\r") if not s.startswith((b"RXA", b"ORC")))

    ack = await hssk_mllp.send(raw)

    ack.assert_error(location="RXA^1", code=101)


@pytest_twisted.ensureDeferred
async def test_a_broken_mothers_cccd_is_ae_at_nk1_33_without_quoting_it(hssk_mllp):
    ack = await hssk_mllp.send(sample("vxu_v04_newborn.hl7").replace(b"079190000456", b"000190000456"))

    error = ack.assert_error(location="NK1^1^33", code=103, text="CCCD")
    assert "000190000456" not in error.text


@pytest_twisted.ensureDeferred
async def test_the_nist_like_shared_sample_is_accepted(hssk_gateway, hssk_mllp):
    ack = await hssk_mllp.send(read_sample(NIST_LIKE))

    ack.assert_accepted()
    records = journaled(hssk_gateway, ack)
    assert [d["national_code"] for d in records["immunizations"]] == ["VGB", "BCG"]


class NiisVendor:
    """A vendor plugin that knows its own VXU: it claims MSH-3 VENDOR_IIS first."""

    @hookimpl
    def hssk_identify(self, message):
        if message.sending_application == "VENDOR_IIS":
            return self

    name = "vendor_iis"

    def normalize(self, message) -> RecordSet:
        return records_from_hl7(message)


@pytest.mark.parametrize("hssk_plugins", [["immunization", NiisVendor()]])
@pytest_twisted.ensureDeferred
async def test_a_vxu_another_plugin_claims_is_left_to_it_and_the_rest_are_claimed(hssk_gateway, hssk_mllp):
    vendor = await hssk_mllp.send(sample("vxu_v04_new.hl7", msh3="VENDOR_IIS"))
    anyone = await hssk_mllp.send(sample("vxu_v04_historical.hl7", msh3="ANY_COMMUNE_APP"))

    assert [(r["control_id"], r["plugin"]) for r in hssk_gateway.journal()] == [
        (vendor.control_id, "vendor_iis"), (anyone.control_id, "immunization")]


@pytest.mark.parametrize("hssk_settings", [{"plugins.immunization.sending_applications": ["NIIS_THU_NGHIEM"],
                                            "plugins.immunization.national_codes": {"08": "VGB-SS"}}])
@pytest_twisted.ensureDeferred
async def test_a_site_narrows_the_senders_and_extends_the_national_code_table(hssk_gateway, hssk_mllp):
    listed = await hssk_mllp.send(sample("vxu_v04_newborn.hl7"))
    other = await hssk_mllp.send(sample("vxu_v04_historical.hl7", msh3="ANY_COMMUNE_APP"))

    listed.assert_accepted()
    other.assert_rejected(location="MSH^1^3", code=200)
    assert [d["national_code"] for d in journaled(hssk_gateway, listed)["immunizations"]] == ["VGB-SS", "BCG"]


@pytest.mark.parametrize("key,value", [("national_codes", ["08"]), ("placeholders", "CON BÀ"),
                                       ("placeholders", [" "]), ("sending_applications", [1])])
def test_a_bad_setting_stops_start_up_naming_it(tmp_path, key, value):
    with pytest.raises(ConfigError) as raised:
        GatewayUnderTest(tmp_path, ["immunization"], {f"plugins.immunization.{key}": value})

    assert raised.value.key == f"plugins.immunization.{key}"
