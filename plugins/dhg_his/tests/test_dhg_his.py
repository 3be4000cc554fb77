"""dhg_his in a real gateway, through the kit's fixtures: what it claims, where its profile finds
the CCCD, the card and the claim summary, what a site can override, and its own check."""
import ast
import json
from pathlib import Path

import pytest
import pytest_twisted

from gateway.testing import read_sample, with_msh_field, xml130_tables

HERE = Path(__file__).resolve().parents[1]
SAMPLES = HERE / "samples"
VNPT_SAMPLES = HERE.parent / "vnpt_his" / "samples"
VISIT_NUMBER = b"92001.2505100001^^^92001^VN"


@pytest.fixture
def hssk_plugins():
    return ["dhg_his"]


@pytest.fixture
def hssk_settings():
    return {"plugins.dhg_his.xml_facilities": ["92001"]}


@pytest.fixture
def hssk_formats():
    return ("json", "xml130")


def journaled_records(gateway, ack) -> dict:
    [row] = gateway.journal(control_id=ack.control_id)
    return json.loads(row["records"])


@pytest_twisted.ensureDeferred
async def test_admission_maps_the_cccd_the_card_from_in1_and_the_zkb_claim_summary(hssk_gateway, hssk_mllp):
    ack = await hssk_mllp.send(read_sample(SAMPLES / "adt_a04.hl7"))

    ack.assert_accepted()
    records = journaled_records(hssk_gateway, ack)
    identifiers = {i["system"]: i for i in records["person"]["identifiers"]}
    assert identifiers["CCCD"]["value"] == "092078004567"
    assert {k: identifiers["BHYT"][k] for k in ("value", "valid_from", "valid_to", "registered_facility")} == {
        "value": "GD4929200045678", "valid_from": "20250101", "valid_to": "20251231", "registered_facility": "92001"}
    assert (records["encounter"]["patient_class"], records["encounter"]["departments"]) == ("1.1", ["K03"])
    assert records["claim"] == {"total_hospital": "215000.00", "total_insurance": "215000.00",
                                "patient_copay": "43000.00", "fund_paid": "172000.00"}


@pytest_twisted.ensureDeferred
async def test_admission_reaches_the_xml130_destination_with_card_and_totals(hssk_gateway, hssk_mllp,
                                                                          hssk_recording_store):
    ack = await hssk_mllp.send(read_sample(SAMPLES / "adt_a04.hl7"))
    [row] = hssk_gateway.journal(control_id=ack.control_id)
    await hssk_recording_store.wait_for_keys(hssk_gateway.outbox_keys([row["id"]]))

    [delivery] = hssk_recording_store.deliveries("xml130")
    xml1 = next(t for t in xml130_tables(delivery.body) if b"<TONG_HOP>" in t).decode()
    for tag, value in (("MA_THE_BHYT", "GD4929200045678"), ("MA_DKBD", "92001"), ("SO_CCCD", "092078004567"),
                       ("MA_LK", "92001.2505100001"), ("T_BHTT", "172000")):
        assert f"<{tag}>{value}" in xml1, tag


@pytest.mark.parametrize("sending_application", ["DHG_HIS", "DHG.HOSPITAL", "dhg_his"])
@pytest_twisted.ensureDeferred
async def test_dhg_sending_applications_are_claimed(hssk_mllp, sending_application):
    ack = await hssk_mllp.send(with_msh_field(read_sample(SAMPLES / "oru_r01.hl7"), 3, sending_application))

    ack.assert_accepted()


@pytest_twisted.ensureDeferred
async def test_another_sending_application_is_not_claimed(hssk_mllp):
    ack = await hssk_mllp.send(with_msh_field(read_sample(SAMPLES / "adt_a04.hl7"), 3, "VNPT_HIS"))

    ack.assert_rejected(location="MSH^1^3", code=200)


@pytest_twisted.ensureDeferred
async def test_xml130_file_of_the_configured_facility_is_accepted(hssk_http):
    answer = await hssk_http.post_xml130(read_sample(SAMPLES / "xml4750_ngoai_tru.xml"))

    assert (answer.status, answer.json()["status"]) == (200, "accepted")


@pytest.mark.parametrize("hssk_settings", [{"plugins.dhg_his.xml_facilities": []}])
@pytest_twisted.ensureDeferred
async def test_xml130_file_of_a_facility_not_configured_is_not_claimed(hssk_http):
    answer = await hssk_http.post_xml130(read_sample(SAMPLES / "xml4750_ngoai_tru.xml"))

    assert answer.status == 403


@pytest.mark.parametrize("hssk_settings", [{"plugins.dhg_his.field_map": {"IN1-12": "", "IN1-13": ""}}])
@pytest_twisted.ensureDeferred
async def test_a_site_can_drop_a_default_placement_in_its_config(hssk_gateway, hssk_mllp):
    ack = await hssk_mllp.send(read_sample(SAMPLES / "adt_a04.hl7"))

    [card] = [i for i in journaled_records(hssk_gateway, ack)["person"]["identifiers"] if i["system"] == "BHYT"]
    assert (card.get("valid_from", ""), card.get("valid_to", ""), card["registered_facility"]) == ("", "", "92001")


@pytest_twisted.ensureDeferred
async def test_a_visit_without_its_number_is_accepted_with_a_warning_at_pv1_19(hssk_mllp):
    ack = await hssk_mllp.send(read_sample(SAMPLES / "adt_a04.hl7").replace(VISIT_NUMBER, b""))

    ack.assert_accepted()
    assert [(e.location, e.code, e.severity) for e in ack.errors] == [("PV1^1^19", 101, "W")]


@pytest.mark.parametrize("hssk_plugins", [["dhg_his", "vnpt_his"]])
@pytest_twisted.ensureDeferred
async def test_the_check_leaves_other_vendors_messages_alone(hssk_mllp):
    raw = read_sample(VNPT_SAMPLES / "adt_a04.hl7").replace(b"48202.2024081500077^^^48202^VN", b"")

    ack = await hssk_mllp.send(raw)

    ack.assert_accepted()
    assert ack.errors == ()


def test_the_plugin_imports_only_the_public_plugin_surface():
    tree = ast.parse((HERE / "plugin.py").read_text(encoding="utf-8"))

    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}

    assert {m for m in imported if m.startswith("gateway")} == {"gateway.plugin"}
