"""The VNPT-HIS plugin: its profile defaults, its overrides, and its samples through XML 130 and
back. Each test builds a fresh plugin object so a reconfiguration never leaks into the bundled one."""
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from gateway.plugin import ConfigError, ContentError, Envelope, Hl7Message, NotRenderable, VendorPlugin
from plugins.viettel_his.plugin import DEFAULTS as VIETTEL_DEFAULTS
from plugins.vnpt_his.plugin import DEFAULTS, NAME
from tests.fake_store import start_store, url_of
from tests.support import (answer_of_a_fresh_gateway, config_from, err_segments, fresh_plugin_manager, http_request,
                           installed_plugins, msa, plugin_sample, read_claim_file, rendered_xml130, replace_msh_field,
                           start_gateway, wait_until, write_claim_file, xml130_projection)

HERE = Path(__file__).resolve().parents[1]
REPO = HERE.parents[1]
HL7_WITH_EPISODE = ["adt_a04.hl7", "adt_a08.hl7", "oru_r01.hl7"]
XML_SAMPLES = ["xml4750_noi_tru.xml", "xml4750_chuyen_tuyen.xml", "xml4750_checkin.xml", "xml4210_ngoai_tru.xml"]


def hook_for(**settings):
    return fresh_plugin_manager(VendorPlugin(NAME, DEFAULTS, contract="1.0"), **{f"plugins.{NAME}.{k}": v
                                                                 for k, v in settings.items()}).hook


def envelope(raw: bytes, facility=None) -> Envelope:
    return Envelope(raw, "mllp", "127.0.0.1:1", 0.0, facility=facility)


def normalize(hook, raw: bytes):
    message = Hl7Message.from_bytes(raw)
    adapter = hook.hssk_identify(message=message, envelope=envelope(raw))
    assert adapter is not None and adapter.name == NAME
    return adapter.normalize(message), message


def read_document(hook, name: str):
    raw = plugin_sample(HERE, name)
    document = read_claim_file(raw)
    adapter = hook.hssk_identify_document(document=document, envelope=envelope(raw))
    return adapter, document


@pytest.mark.parametrize("sending_app", ["VNPT_HIS", "VNPTHIS", "vnpt_his"])
def test_default_sending_applications_are_claimed(sending_app):
    raw = replace_msh_field(plugin_sample(HERE, "adt_a04.hl7"), 3, sending_app)

    adapter = hook_for().hssk_identify(message=Hl7Message.from_bytes(raw), envelope=envelope(raw))

    assert adapter is not None and adapter.name == NAME


def test_viettel_sender_and_unmapped_events_are_not_claimed():
    hook = hook_for()
    other_sender = replace_msh_field(plugin_sample(HERE, "adt_a04.hl7"), 3, "VIETTEL_HIS")
    unmapped_event = replace_msh_field(plugin_sample(HERE, "adt_a04.hl7"), 9, "ADT^A99^ADT_A01")

    claims = [hook.hssk_identify(message=Hl7Message.from_bytes(raw), envelope=envelope(raw))
              for raw in (other_sender, unmapped_event)]

    assert claims == [None, None]


def test_cccd_comes_from_pid_19_and_card_data_from_zbh():
    records, _ = normalize(hook_for(), plugin_sample(HERE, "adt_a04.hl7"))

    person = records.person
    assert person.identifier("CCCD") == "048072001122"
    [card] = [i for i in person.identifiers if i.system == "BHYT"]
    assert (card.value, card.valid_from, card.valid_to, card.registered_facility) == (
        "HT3484812345670", "20240101", "20241231", "48202")
    assert person.identifier("BHXH") == "4812345670"
    assert records.encounter.region == "K2"


def test_each_placed_value_remembers_the_field_and_segment_occurrence_it_was_read_from():
    second_card = b"ZBH|2|GD4484899999999|48202|20250101|20251231|K2|20190101\r"
    raw = plugin_sample(HERE, "adt_a04.hl7").replace(b"ZTC|", second_card + b"ZTC|")

    records, _ = normalize(hook_for(), raw)

    assert [i.value for i in records.person.identifiers if i.system == "BHYT"] == ["HT3484812345670", "GD4484899999999"]
    assert [records.location_of(tag, n) for tag, n in (("MA_THE_BHYT", 1), ("GT_THE_TU", 1), ("MA_THE_BHYT", 2),
                                                       ("GT_THE_DEN", 2), ("SO_CCCD", 1), ("T_BHTT", 1))] == [
        "ZBH^1^2", "ZBH^1^4", "ZBH^2^2", "ZBH^2^5", "PID^1^19", "ZTC^1^10"]
    assert records.location_of("NGAY_SINH") == ""  # read from its standard place, PID-7
    assert "field_locations" not in records.json_text


def test_the_same_message_under_the_viettel_profile_loses_the_vnpt_placements():
    viettel = fresh_plugin_manager(VendorPlugin(NAME, VIETTEL_DEFAULTS, contract="1.0")).hook

    records, _ = normalize(viettel, replace_msh_field(plugin_sample(HERE, "adt_a04.hl7"), 3, "VIETTEL_HIS"))

    [card] = [i for i in records.person.identifiers if i.system == "BHYT"]
    assert records.person.identifier("CCCD") == ""
    assert (card.valid_from, card.registered_facility) == ("", "")


def test_field_map_override_moves_the_cccd_out_of_pid_19():
    hook = hook_for(field_map={"PID-19": ""})

    records, _ = normalize(hook, plugin_sample(HERE, "adt_a04.hl7"))

    assert records.person.identifier("CCCD") == ""


def test_identifier_type_override_reclassifies_a_pid_3_repeat():
    hook = hook_for(identifier_types={"MR": "OTHER_ID"})

    records, _ = normalize(hook, plugin_sample(HERE, "adt_a04.hl7"))

    assert (records.person.identifier("MR"), records.person.identifier("OTHER_ID")) == ("", "BN0048123")


def test_sending_applications_override_replaces_the_defaults():
    hook = hook_for(sending_applications=["VNPT_SITE_7"])
    raw = plugin_sample(HERE, "adt_a04.hl7")

    assert hook.hssk_identify(message=Hl7Message.from_bytes(raw), envelope=envelope(raw)) is None
    moved = replace_msh_field(raw, 3, "VNPT_SITE_7")
    assert hook.hssk_identify(message=Hl7Message.from_bytes(moved), envelope=envelope(moved)) is not None


@pytest.mark.parametrize("settings, key", [
    ({"field_map": {"PID-19": "NOT_A_TAG"}}, "plugins.vnpt_his.field_map"),
    ({"field_map": {"PID19": "SO_CCCD"}}, "plugins.vnpt_his.field_map"),
    ({"xml_facilities": ["7902"]}, "plugins.vnpt_his.xml_facilities"),
    ({"identifier_types": {"NI": "SSN"}}, "plugins.vnpt_his.identifier_types"),
    ({"charset": "KLINGON-8"}, "plugins.vnpt_his.charset"),
    ({"sending_application": ["X"]}, "plugins.vnpt_his.sending_application"),
])
def test_bad_profile_settings_stop_start_up_naming_the_key(settings, key):
    with pytest.raises(ConfigError) as raised:
        hook_for(**settings)

    assert raised.value.key == key


def test_a40_merge_maps_mrg_1_to_the_prior_identifiers():
    records, _ = normalize(hook_for(), plugin_sample(HERE, "adt_a40.hl7"))

    assert records.kind == "ADT^A40"
    assert [(i.system, i.value) for i in records.person.previous_identifiers] == [
        ("MR", "BN0047001"), ("CMND", "201234567")]
    assert records.person.identifier("MR") == "BN0048123"
    assert records.encounter is None


def test_a40_has_no_xml130_form_and_says_why():
    records, message = normalize(hook_for(), plugin_sample(HERE, "adt_a40.hl7"))

    with pytest.raises(NotRenderable) as raised:
        rendered_xml130(records, message)

    assert raised.value.reason == "no_episode" and "MA_LK" in raised.value.text


@pytest.mark.parametrize("name", HL7_WITH_EPISODE)
def test_hl7_sample_round_trips_through_xml130_losslessly(name):
    records, message = normalize(hook_for(), plugin_sample(HERE, name))

    [again] = read_claim_file(rendered_xml130(records, message)).records

    assert xml130_projection(again) == xml130_projection(records)
    assert again.person.full_name.encode("utf-8") == "Trần Văn Đức".encode("utf-8")


def test_adt_a04_keeps_guardian_address_codes_and_diagnoses():
    records, _ = normalize(hook_for(), plugin_sample(HERE, "adt_a04.hl7"))

    [guardian] = records.person.related
    assert (guardian.relationship, guardian.family, guardian.given, guardian.phone) == (
        "guardian", "Trần", "Hộ", "0905333444")
    address = records.person.address
    assert (address.province, address.district, address.commune) == ("48", "490", "20194")
    assert (records.diagnosis.main, records.diagnosis.secondary) == ("I10", ("E11.9",))
    assert (records.claim.total_insurance, records.claim.fund_paid) == (71500, 67925)


def test_oru_results_map_to_xml4_fields():
    records, _ = normalize(hook_for(), plugin_sample(HERE, "oru_r01.hl7"))

    first = records.observations[0]
    assert (first.code, first.value, first.unit, first.service_code, first.observed_at, first.ma_lk) == (
        "2345-7", "7.8", "mmol/L", "23.0075.1494", "202408150900", "48202.2024081500077")


@pytest.mark.parametrize("name", XML_SAMPLES)
def test_xml_sample_is_claimed_by_its_facility_and_round_trips(name):
    hook = hook_for(xml_facilities=["79025", "48202", "01001"])
    adapter, document = read_document(hook, name)

    kept = adapter.normalize(document)
    rewritten = write_claim_file(type(document)(kept, document.facility, document.created_on, "4750",
                                                document.document))
    again = read_claim_file(rewritten).records

    assert adapter.name == NAME
    assert [xml130_projection(r) for r in again] == [xml130_projection(r) for r in kept]
    assert [r.person.full_name for r in again] == [r.person.full_name for r in document.records]


def test_xml_from_an_unlisted_facility_is_not_claimed():
    adapter, _ = read_document(hook_for(xml_facilities=["79025"]), "xml4750_chuyen_tuyen.xml")

    assert adapter is None


def test_xml_standards_override_refuses_4210_files():
    adapter, document = read_document(hook_for(xml_facilities=["01001"], xml_standards=["4750"]),
                                      "xml4210_ngoai_tru.xml")

    with pytest.raises(ContentError) as raised:
        adapter.normalize(document)

    assert raised.value.issues[0].code == 203 and "4210" in raised.value.issues[0].text


def test_bundled_config_loads_the_plugin_through_its_entry_point_with_the_sample_facilities():
    hook = installed_plugins(config_from(REPO / "config" / "gateway.toml")).hook
    raw = plugin_sample(HERE, "xml4750_noi_tru.xml")

    adapter = hook.hssk_identify_document(document=read_claim_file(raw), envelope=envelope(raw))

    assert adapter is not None and adapter.name == NAME


@pytest_twisted.ensureDeferred
async def test_vnpt_xml_file_posted_to_xml130_reaches_the_store_as_xml130(tmp_path):
    resource, listening = start_store(reactor)
    gateway = await start_gateway(tmp_path, plugins=[VendorPlugin(NAME, DEFAULTS, contract="1.0")], **{
        f"plugins.{NAME}.xml_facilities": ["79025"],
        "destinations.store.kind": "http", "destinations.store.url": url_of(listening),
        "destinations.store.format": "xml130"})
    sent = read_claim_file(plugin_sample(HERE, "xml4750_noi_tru.xml")).records[0]
    try:
        response = await http_request(gateway, "POST", "/xml130", plugin_sample(HERE, "xml4750_noi_tru.xml"),
                                      "application/xml")
        await wait_until(lambda: len(resource.received) == 1, what="the store to receive the XML 130 file")
    finally:
        await gateway.stop()
        listening.stopListening()

    assert response.code == 200
    [request] = resource.received
    [records] = read_claim_file(request.body).records
    assert request.content_type == "application/xml"
    assert xml130_projection(records) == xml130_projection(sent)
    assert records.person.full_name.encode("utf-8") == "Nguyễn Thị Hồng Nhung".encode("utf-8")


@pytest_twisted.ensureDeferred
async def test_a_bad_card_date_in_zbh_4_is_answered_at_zbh_4_where_the_profile_read_it(tmp_path):
    """The VNPT profile reads GT_THE_TU from ZBH-4 (``field_map``), so the ERR names ZBH-4, not
    the IN1-12 of the standard placement, a segment this message does not have."""
    raw = plugin_sample(HERE, "adt_a04.hl7").replace(b"|20240101|20241231|", b"|20240230|20241231|")

    ack = await answer_of_a_fresh_gateway(tmp_path, [VendorPlugin(NAME, DEFAULTS, contract="1.0")], raw)

    assert msa(ack)[1] == "CE"  # the sample asks for enhanced mode: the commit answer carries the errors
    [err] = err_segments(ack)
    assert (err[2], err[3].split("^")[0]) == ("ZBH^1^4", "102")
    assert err[8] == "GT_THE_TU: '20240230' is not a calendar date"
