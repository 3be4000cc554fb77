"""The Viettel-HIS profile: its samples through XML 130 and back, identifier placement, the
Windows-1258 feed, overrides from config, and the HL7 feed delivered to a real store as XML 130."""
import base64
from pathlib import Path

import pytest
import pytest_twisted
from lxml import etree
from twisted.internet import reactor

from gateway.plugin import Envelope, Hl7Message, VendorPlugin
from plugins.viettel_his.plugin import DEFAULTS, NAME
from tests.fake_store import start_store, url_of
from tests.support import (answer_of_a_fresh_gateway, config_from, connect_mllp, encode_windows_1258, err_segments,
                           fresh_plugin_manager, msa, plugin_sample, read_claim_file, rendered_xml130,
                           send_and_receive, start_gateway, wait_until, xml130_projection)

HERE = Path(__file__).resolve().parents[1]
NHUNG = "Nguyễn Thị Hồng Nhung"


def hook_for(**settings):
    return fresh_plugin_manager(VendorPlugin(NAME, DEFAULTS, contract="1.0"), **{f"plugins.{NAME}.{k}": v
                                                                 for k, v in settings.items()}).hook


def normalize(hook, raw: bytes, **decode):
    message = Hl7Message.from_bytes(raw, **decode)
    adapter = hook.hssk_identify(message=message, envelope=Envelope(raw, "mllp", "127.0.0.1:1", 0.0))
    assert adapter is not None and adapter.name == NAME
    return adapter.normalize(message), message


@pytest.mark.parametrize("name, full_name", [("adt_a04.hl7", NHUNG), ("adt_a08.hl7", NHUNG), ("oru_r01.hl7", NHUNG),
                                             ("adt_a01_windows1258.hl7", "Trần Thị Ngọc Ánh")])
def test_hl7_sample_round_trips_through_xml130_losslessly(name, full_name):
    records, message = normalize(hook_for(), plugin_sample(HERE, name))

    [again] = read_claim_file(rendered_xml130(records, message)).records

    assert xml130_projection(again) == xml130_projection(records)
    assert again.person.full_name.encode("utf-8") == full_name.encode("utf-8")


def test_card_validity_comes_from_in1_and_registered_facility_from_pd1():
    records, _ = normalize(hook_for(), plugin_sample(HERE, "adt_a04.hl7"))

    person = records.person
    [card] = [i for i in person.identifiers if i.system == "BHYT"]
    assert (card.value, card.valid_from, card.valid_to, card.registered_facility) == (
        "DN4797912345678", "20250101", "20251231", "79025")
    assert (person.identifier("CCCD"), person.identifier("BHXH"), person.identifier("MR")) == (
        "079185004321", "7912345678", "BN2025000777")


def test_adt_a04_maps_person_visit_diagnoses_and_zpv_totals():
    records, _ = normalize(hook_for(), plugin_sample(HERE, "adt_a04.hl7"))

    person, encounter = records.person, records.encounter
    assert (person.family, person.middle, person.given, person.birth_date, person.sex, person.phone) == (
        "Nguyễn", "Thị Hồng", "Nhung", "19850312", "2", "0903123456")
    assert person.related[0].relationship == "mother"
    assert (encounter.ma_lk, encounter.facility, encounter.encounter_class, encounter.patient_class,
            encounter.admitted_at) == ("79001.2503150001", "79001", "01", "1.1", "202503150830")
    assert (records.diagnosis.main, records.diagnosis.secondary) == ("A90", ("R51", "E86"))
    assert (records.claim.total_hospital, records.claim.patient_copay, records.claim.fund_paid) == (150000, 30000, 120000)


def test_windows_1258_sample_decodes_to_precomposed_vietnamese():
    raw = plugin_sample(HERE, "adt_a01_windows1258.hl7")

    records, message = normalize(hook_for(), raw)

    assert message.charset == "WINDOWS-1258"
    assert "Trần".encode("utf-8") not in raw and encode_windows_1258("Trần^Thị Ngọc Ánh") in raw  # â + combining grave
    assert records.person.full_name == "Trần Thị Ngọc Ánh"
    assert (records.person.birth_date, records.person.birth_date_precision) == ("1990", "year")
    assert records.encounter.encounter_class == "03"


def test_charset_hint_redecodes_a_message_without_msh_18():
    raw = plugin_sample(HERE, "adt_a01_windows1258.hl7").replace(b"|WINDOWS-1258", b"|")
    hinted = hook_for(charset="WINDOWS-1258")

    plain, _ = normalize(hook_for(), raw, default_charset="latin-1")
    records, _ = normalize(hinted, raw, default_charset="latin-1")

    assert plain.person.full_name != "Trần Thị Ngọc Ánh"
    assert records.person.full_name == "Trần Thị Ngọc Ánh"


def test_field_map_override_takes_the_card_from_another_field():
    hook = hook_for(field_map={"IN1-36": "", "IN1-12": "", "PID-3.1": "MA_THE_BHYT"})

    records, _ = normalize(hook, plugin_sample(HERE, "adt_a04.hl7"))

    cards = [i for i in records.person.identifiers if i.system == "BHYT"]
    assert "079185004321" in [c.value for c in cards]  # PID-3's first repeat now counts as a card
    assert all(c.valid_from == "" for c in cards)


def test_a40_merge_maps_mrg_1_to_the_prior_identifiers():
    records, _ = normalize(hook_for(), plugin_sample(HERE, "adt_a40.hl7"))

    assert [(i.system, i.value) for i in records.person.previous_identifiers] == [
        ("MR", "BN2024009999"), ("CMND", "025185000111")]
    assert records.encounter is None


def xml1_of(body: bytes) -> bytes:
    root = etree.fromstring(body)
    [content] = [f.findtext("NOIDUNGFILE") for f in root.iter("FILEHOSO") if f.findtext("LOAIHOSO") == "XML1"]
    return base64.b64decode(content)


@pytest_twisted.ensureDeferred
async def test_viettel_hl7_feed_reaches_the_store_as_xml130(tmp_path):
    resource, listening = start_store(reactor)
    gateway = await start_gateway(tmp_path, plugins=[VendorPlugin(NAME, DEFAULTS, contract="1.0")], **{
        f"plugins.{NAME}.sending_applications": ["VIETTEL_HIS"],
        "destinations.store.kind": "http", "destinations.store.url": url_of(listening),
        "destinations.store.format": "xml130"})
    try:
        client = await connect_mllp(gateway)
        ack = await send_and_receive(client, plugin_sample(HERE, "adt_a04.hl7"))
        await wait_until(lambda: len(resource.received) == 1, what="the store to receive the XML 130 file")
        client.transport.loseConnection()
    finally:
        await gateway.stop()
        listening.stopListening()

    assert msa(ack)[1:3] == ["CA", "VT20250315000001"]
    [request] = resource.received
    assert request.content_type == "application/xml"
    assert f"<?hssk-id {request.idempotency_key}?>".encode() in request.body
    [records] = read_claim_file(request.body).records
    assert records.encounter.ma_lk == "79001.2503150001"
    assert [(i.system, i.value) for i in records.person.identifiers] == [
        ("CCCD", "079185004321"), ("BHYT", "DN4797912345678"), ("BHXH", "7912345678"), ("MR", "BN2025000777")]
    assert (records.claim.total_insurance, records.claim.patient_copay, records.claim.fund_paid) == (
        150000, 30000, 120000)
    assert f"<HO_TEN>{NHUNG}</HO_TEN>".encode("utf-8") in xml1_of(request.body)


def test_fhir_destination_gets_a_bundle_with_patient_encounter_conditions_and_results():
    import json

    destination = config_from(**{"destinations.store.kind": "file", "destinations.store.directory": "x",
                                 "destinations.store.format": "fhir"}).destinations[0]
    hook = hook_for()
    records, message = normalize(hook, plugin_sample(HERE, "adt_a04.hl7"))

    payload = hook.hssk_render(records=records, destination=destination, message=message, idempotency_key="k1")

    bundle = json.loads(payload.body)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    patient = bundle["entry"][0]["resource"]
    assert (payload.content_type, bundle["id"], kinds) == (
        "application/fhir+json", "k1", ["Patient", "Encounter", "Condition", "Condition", "Condition"])
    assert patient["name"][0]["text"].encode("utf-8") == NHUNG.encode("utf-8")
    assert {"system": "urn:hssk:sid:cccd", "value": "079185004321"} in patient["identifier"]
    assert bundle["entry"][1]["resource"]["identifier"][0]["value"] == "79001.2503150001"


@pytest_twisted.ensureDeferred
async def test_a_bad_registered_facility_in_pd1_3_is_answered_at_pd1_3_where_the_profile_read_it(tmp_path):
    """The Viettel profile reads MA_DKBD from PD1-3 (``field_map``): the ERR names PD1-3, not the
    IN1-36 of the standard placement, which holds the card number in this message."""
    raw = plugin_sample(HERE, "adt_a04.hl7").replace(b"PD1|||79025^^79025", b"PD1|||7902^^7902")

    ack = await answer_of_a_fresh_gateway(tmp_path, [VendorPlugin(NAME, DEFAULTS, contract="1.0")], raw)

    assert msa(ack)[1] == "CE"  # the sample asks for enhanced mode: the commit answer carries the errors
    [err] = err_segments(ack)
    assert (err[2], err[3].split("^")[0]) == ("PD1^1^3", "102")
    assert err[8] == "MA_DKBD: facility code '7902' has 4 characters, expected 5"
