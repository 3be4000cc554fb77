"""Newborns registered under the mother's name, end to end: a real gateway with the immunization
plugin and a HIS plugin (dhg_his, for the child's own ADT), a real loopback HTTP server as the
record store (the kit's recording store), and the command line as a subprocess for reviews.

The placeholder VXU makes a provisional child under its mother; the child's own record (its CCCD,
the same mother, the same birth day, for twins the same birth order) links it; the identity update
(ADT^A40: the child as known now, the placeholder's identifiers as previous ones) reaches every
destination that received the placeholder, after what they received. What cannot be told apart
waits for an operator in the review queue."""
from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from gateway.testing import read_sample, with_msh_field

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
REPO = Path(__file__).resolve().parents[3]
MOTHER_CCCD, CHILD_CCCD, TWIN_CCCD = "079190000456", "079325000111", "079325000222"
NIIS_ID = "NIIS25000888"
MOTHER = "NK1|1|Lê^Thị Mẫu|MTH^Mẹ^HL70063" + "|" * 30 + f"{MOTHER_CCCD}^^^BCA^CCCD"


@pytest.fixture
def hssk_plugins():
    return ["immunization", "dhg_his"]


@pytest.fixture
def hssk_formats():
    return ("json", "fhir", "hl7v2")


@pytest.fixture
def hssk_settings():
    return {"outbox.poll_interval_seconds": 0.2}


def placeholder(control_id: str, *, name: str = "CON BÀ LÊ THỊ MẪU", niis: str = NIIS_ID, multiple: str = "N",
                order: str = "", mother: str = MOTHER) -> bytes:
    """The newborn sample (original mode) under another control id, NIIS id, name, birth order."""
    raw = read_sample(SAMPLES / "vxu_v04_newborn.hl7")
    raw = with_msh_field(with_msh_field(with_msh_field(raw, 15, ""), 16, ""), 10, control_id)
    raw = raw.replace(NIIS_ID.encode(), niis.encode()).replace("CON BÀ LÊ THỊ MẪU".encode(), name.encode())
    raw = raw.replace(b"900000003|||||||||||N", f"900000003|||||||||||{multiple}|{order}".encode())
    segments = [s for s in raw.split(b"\r") if s and not s.startswith(b"NK1")]
    return b"\r".join(segments[:2] + ([mother.encode()] if mother else []) + segments[2:]) + b"\r"


def own_adt(control_id: str, *, cccd: str = CHILD_CCCD, name: str = "Nguyễn^Thị An", multiple: str = "",
            order: str = "", mother: str = MOTHER) -> bytes:
    """The child's own record from the hospital: its CCCD, its name, the same mother."""
    segments = [
        f"MSH|^~\\&|DHG_HIS|92001^BV Đa khoa Thử Nghiệm^VN_BYT|HSSK_GW|SYT_92|20250601080000+0700||ADT^A28^ADT_A05|"
        f"{control_id}|P|2.5||||||UNICODE UTF-8",
        f"PID|1||{cccd}^^^BCA^CCCD||{name}||20250315|F||||||||||||||||{multiple}|{order}",
        mother,
    ]
    return ("\r".join(s for s in segments if s) + "\r").encode("utf-8")


CHILD_CARD = "TE1797931234567"


def child_claim_file(mother_code: str, *, birth: str = "202503150000") -> bytes:
    """The child's own XML 130 file from a hospital (79025): XML1 names the child by its temporary
    card and its own name; XML7, the discharge letter, names the mother by MA_ME."""
    xml1 = (f"<TONG_HOP><MA_LK>79025.2025060100042</MA_LK><STT>1</STT><MA_BN>BN2025000042</MA_BN>"
            f"<HO_TEN>Nguyễn Thị An</HO_TEN><NGAY_SINH>{birth}</NGAY_SINH><GIOI_TINH>2</GIOI_TINH>"
            f"<MA_THE_BHYT>{CHILD_CARD}</MA_THE_BHYT><MA_DKBD>79025</MA_DKBD><GT_THE_TU>20250315</GT_THE_TU>"
            f"<GT_THE_DEN>20310314</GT_THE_DEN><MA_BENH_CHINH>P59.9</MA_BENH_CHINH><NGAY_VAO>202506010800</NGAY_VAO>"
            f"<NGAY_RA>202506031000</NGAY_RA><MA_LOAI_KCB>03</MA_LOAI_KCB><MA_CSKCB>79025</MA_CSKCB></TONG_HOP>")
    xml7 = (f"<CHI_TIEU_DU_LIEU_GIAY_RA_VIEN><MA_LK>79025.2025060100042</MA_LK><NGAY_CT>20250603</NGAY_CT>"
            f"<MA_ME>{mother_code}</MA_ME><MA_THE_TAM>{CHILD_CARD}</MA_THE_TAM><HO_TEN_ME>Lê Thị Mẫu</HO_TEN_ME>"
            f"</CHI_TIEU_DU_LIEU_GIAY_RA_VIEN>")
    files = "".join(f"<FILEHOSO><LOAIHOSO>{kind}</LOAIHOSO><NOIDUNGFILE>{base64.b64encode(table.encode()).decode()}"
                    f"</NOIDUNGFILE></FILEHOSO>" for kind, table in (("XML1", xml1), ("XML7", xml7)))
    return (f'<?xml version="1.0" encoding="utf-8"?><GIAMDINHHS><THONGTINDONVI><MACSKCB>79025</MACSKCB>'
            f"</THONGTINDONVI><THONGTINHOSO><NGAYLAP>20250603</NGAYLAP><SOLUONGHOSO>1</SOLUONGHOSO><DANHSACHHOSO>"
            f"<HOSO>{files}</HOSO></DANHSACHHOSO></THONGTINHOSO><CHUKYDONVI></CHUKYDONVI></GIAMDINHHS>").encode()


async def send_in_order(gateway, *messages: bytes) -> list:
    """Send each message on one MLLP connection, in order; each must be accepted. Their ACKs."""
    connection = await gateway.connect_mllp()
    try:
        acks = [await connection.send(raw) for raw in messages]
    finally:
        connection.close()
    for ack in acks:
        ack.assert_accepted()
    return acks


async def eventually(condition, what: str, timeout: float = 10.0):
    for _ in range(int(timeout / 0.02)):
        found = condition()
        if found:
            return found
        await task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


def index(gateway, sql: str, *params) -> list[tuple]:
    conn = sqlite3.connect(gateway.config.database_path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def updates(gateway) -> list[dict]:
    """The identity update events journaled, oldest first."""
    return [r for r in gateway.journal(transport="event")]


async def delivered_update(gateway, store, destination: str) -> tuple[list[str], bytes]:
    """Wait for the identity update at ``destination``; the control ids it received, in order,
    and the update's body."""
    [event] = await eventually(lambda: updates(gateway), "the identity update to be journaled")
    keys = {r["idempotency_key"]: r["message_id"] for r in gateway.outbox(destination=destination)}
    [key] = [k for k, m in keys.items() if m == event["id"]]
    await store.wait_for_keys({key})
    by_id = {r["id"]: r["control_id"] for r in gateway.journal()}
    order = [by_id[keys[d.idempotency_key]] for d in store.deliveries(destination) if d.idempotency_key in keys]
    return order, store.deliveries(destination, key)[0].body


def previous_values(person: dict) -> set[str]:
    return {i["value"] for i in person.get("previous_identifiers", [])}


@pytest_twisted.ensureDeferred
async def test_a_placeholder_then_the_childs_own_record_sends_the_merge_to_every_store_in_order(
        hssk_gateway, hssk_recording_store):
    vxu, adt = await send_in_order(hssk_gateway, placeholder("NB1"), own_adt("OWN1"))

    order, body = await delivered_update(hssk_gateway, hssk_recording_store, "json")
    merge = json.loads(body)
    fhir_order, fhir = await delivered_update(hssk_gateway, hssk_recording_store, "fhir")
    _, a40 = await delivered_update(hssk_gateway, hssk_recording_store, "hl7v2")
    [event] = updates(hssk_gateway)

    assert order[:2] == [vxu.control_id, adt.control_id] and order[-1] == event["control_id"]
    assert fhir_order[-1] == event["control_id"]
    person = merge["records"]["person"]
    assert (merge["records"]["kind"], merge["source"]["message_type"]) == ("ADT^A40", "ADT^A40")
    assert {i["value"] for i in person["identifiers"]} >= {CHILD_CCCD, NIIS_ID}
    assert previous_values(person) == {NIIS_ID}
    [patient] = [e["resource"] for e in json.loads(fhir)["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert patient["link"] == [{"type": "replaces", "other": {"identifier": {"system": "urn:hssk:sid:mr",
                                                                            "value": NIIS_ID}}}]
    segments = {s[:3]: s for s in a40.decode().split("\r") if s}
    assert "ADT^A40" in segments["MSH"] and CHILD_CCCD in segments["PID"] and NIIS_ID in segments["MRG"]
    [(provisional, how)] = index(hssk_gateway, "SELECT p.provisional, l.how FROM persons p JOIN person_identity_links "
                                               "l ON l.person_id = p.id WHERE p.id = l.person_id")
    assert (provisional, how) == (None, "automatic")
    keys = index(hssk_gateway, "SELECT DISTINCT ordering_key FROM outbox WHERE destination = 'json'")
    assert len(keys) == 1, "the placeholder, the child's record and the update are one person's rows"


@pytest_twisted.ensureDeferred
async def test_a_diacritic_free_lower_case_placeholder_is_provisional_too(hssk_gateway):
    await hssk_gateway.send_mllp(placeholder("NB2", name="con ba le thi mau"))

    assert index(hssk_gateway, "SELECT provisional, birth_date, sex, facility FROM persons "
                               "WHERE provisional IS NOT NULL") == [("newborn", "20250315", "2", "79001")]
    assert index(hssk_gateway, "SELECT count(*) FROM person_relations WHERE kind = 'mother'") == [(1,)]


@pytest_twisted.ensureDeferred
async def test_the_childs_own_record_first_and_the_vaccination_after_are_linked_all_the_same(
        hssk_gateway, hssk_recording_store):
    adt, vxu = await send_in_order(hssk_gateway, own_adt("OWN3"), placeholder("NB3"))

    order, body = await delivered_update(hssk_gateway, hssk_recording_store, "json")
    assert order[:2] == [adt.control_id, vxu.control_id] and len(order) == 3
    assert previous_values(json.loads(body)["records"]["person"]) == {NIIS_ID}
    assert index(hssk_gateway, "SELECT count(*) FROM persons WHERE provisional IS NOT NULL") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_twins_with_a_birth_order_link_each_child_to_its_own_placeholder(hssk_gateway, hssk_recording_store):
    await send_in_order(hssk_gateway, placeholder("TW1", niis="NIIS25000001", multiple="Y", order="1"),
                        placeholder("TW2", niis="NIIS25000002", multiple="Y", order="2"),
                        own_adt("TWIN2", cccd=TWIN_CCCD, name="Nguyễn^Thị Hai", multiple="Y", order="2"))

    _, body = await delivered_update(hssk_gateway, hssk_recording_store, "json")
    assert previous_values(json.loads(body)["records"]["person"]) == {"NIIS25000002"}
    assert index(hssk_gateway, "SELECT birth_order FROM persons WHERE provisional IS NOT NULL") == [("1",)]
    assert index(hssk_gateway, "SELECT count(*) FROM person_reviews") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_a_mother_whose_card_changed_in_between_is_still_the_mother(hssk_gateway, hssk_recording_store):
    old_card = MOTHER.replace(f"{MOTHER_CCCD}^^^BCA^CCCD", "GD4790190000456^^^BHXH^HC")
    new_card = old_card.replace("GD4790190000456", "DN4790190000456")
    await send_in_order(hssk_gateway, placeholder("CARD1", mother=old_card), own_adt("CARD2", mother=new_card))

    _, body = await delivered_update(hssk_gateway, hssk_recording_store, "json")
    assert previous_values(json.loads(body)["records"]["person"]) == {NIIS_ID}


def cli(gateway, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args, "--data-dir", str(gateway.config.data_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest_twisted.ensureDeferred
async def test_twins_without_a_birth_order_wait_for_a_review_and_an_accepted_one_sends_the_update(
        hssk_gateway, hssk_recording_store):
    await send_in_order(hssk_gateway, placeholder("TX1", niis="NIIS25000011", multiple="Y"),
                        placeholder("TX2", niis="NIIS25000012", multiple="Y"), own_adt("TWINX"))
    listed = json.loads((await _in_thread(cli, hssk_gateway, "identity", "review", "list", "--json")).stdout)
    [review] = listed
    second = [c["id"] for c in review["candidates"]][1]
    waiting = await eventually(lambda: _metric(hssk_gateway, "hssk_identity_reviews_waiting") == 1.0, "the gauge")

    accepted_review = await _in_thread(cli, hssk_gateway, "identity", "review", "accept", str(review["id"]),
                                       "--candidate", second, "--operator", "bs.lan")
    _, body = await delivered_update(hssk_gateway, hssk_recording_store, "json")

    assert waiting and review["reason"] == "twins_without_birth_order" and len(review["candidates"]) == 2
    assert accepted_review.returncode == 0, accepted_review.stderr
    assert previous_values(json.loads(body)["records"]["person"]) == {"NIIS25000012"}
    [(state, decided_by, chosen)] = index(hssk_gateway, "SELECT state, decided_by, chosen FROM person_reviews")
    assert (state, chosen) == ("accepted", second) and decided_by.startswith("bs.lan (OS user ")
    assert index(hssk_gateway, "SELECT how FROM person_identity_links") == [("reviewed",)]
    await eventually(lambda: _metric(hssk_gateway, "hssk_identity_updates_total", how="reviewed") == 1.0,
                     "the updates counter")


@pytest_twisted.ensureDeferred
async def test_a_mother_known_by_other_identifiers_is_a_review_and_a_rejected_one_links_nothing(hssk_gateway):
    card_only = MOTHER.replace(f"{MOTHER_CCCD}^^^BCA^CCCD", "DN4791234567890^^^BHXH^HC")
    await hssk_gateway.send_mllp(placeholder("MC1"))
    await hssk_gateway.send_mllp(own_adt("MC2", mother=card_only))
    [review] = json.loads((await _in_thread(cli, hssk_gateway, "identity", "review", "list", "--json")).stdout)

    rejected = await _in_thread(cli, hssk_gateway, "identity", "review", "reject", str(review["id"]),
                                "--note", "another mother")

    assert review["reason"] == "mother_identifiers_changed"
    assert rejected.returncode == 0, rejected.stderr
    assert index(hssk_gateway, "SELECT state, note FROM person_reviews") == [("rejected", "another mother")]
    assert index(hssk_gateway, "SELECT count(*) FROM person_identity_links") == [(0,)]
    assert index(hssk_gateway, "SELECT count(*) FROM persons WHERE provisional IS NOT NULL") == [(1,)]


@pytest_twisted.ensureDeferred
async def test_the_metrics_count_provisional_persons_links_and_updates(hssk_gateway, hssk_recording_store):
    await hssk_gateway.send_mllp(placeholder("M1"))
    provisional = await eventually(lambda: _metric(hssk_gateway, "hssk_persons_provisional") == 1.0, "provisional")
    await hssk_gateway.send_mllp(own_adt("M2"))
    await delivered_update(hssk_gateway, hssk_recording_store, "json")
    await eventually(lambda: _metric(hssk_gateway, "hssk_identity_updates_total", how="automatic") == 1.0, "updates")
    await hssk_gateway.gateway.identity_updates.refresh()

    assert provisional
    assert _metric(hssk_gateway, "hssk_persons_provisional") == 0.0
    assert _metric(hssk_gateway, "hssk_identity_links_total", how="automatic") == 1.0


def _metric(gateway, name: str, **labels: str) -> float:
    return gateway.gateway.metrics.registry.get_sample_value(name, labels) or 0.0


def _in_thread(function, *args):
    """A subprocess run off the reactor, so the gateway under test keeps serving meanwhile."""
    from twisted.internet.threads import deferToThread

    return deferToThread(function, *args)


#: The hospital's claim files come through a HIS plugin that takes XML 130 from facility 79025.
with_claim_files = pytest.mark.parametrize("hssk_plugins, hssk_settings", [(
    ["immunization", "vnpt_his"],
    {"outbox.poll_interval_seconds": 0.2, "plugins.vnpt_his.xml_facilities": ["79025"]})], ids=["vnpt_his"])


@with_claim_files
@pytest.mark.parametrize("mother, ma_me", [(MOTHER, MOTHER_CCCD),
                                           (MOTHER.replace(f"{MOTHER_CCCD}^^^BCA^CCCD", "DN4790190000456^^^BHXH^HC"),
                                            "0190000456")], ids=["ma_me_personal_id", "ma_me_bhxh_number"])
@pytest_twisted.ensureDeferred
async def test_a_claim_file_whose_discharge_letter_names_the_mother_links_the_placeholder(
        hssk_gateway, hssk_recording_store, mother, ma_me):
    """XML7 MA_ME names the mother (by her 12-digit id, or by the BHXH number her card carries),
    XML1 the child's birth day and its temporary card (MA_THE_TAM): the provisional child the
    vaccination made is the child, and the identity update reaches the stores behind the file."""
    [vxu] = await send_in_order(hssk_gateway, placeholder("NB7", mother=mother))

    answer = await hssk_gateway.http.post_xml130(child_claim_file(ma_me))
    order, body = await delivered_update(hssk_gateway, hssk_recording_store, "json")

    assert answer.status == 200, answer.body
    [claim] = hssk_gateway.journal(id=answer.json()["message_id"])
    [event] = updates(hssk_gateway)
    assert order == [vxu.control_id, claim["control_id"], event["control_id"]]
    person = json.loads(body)["records"]["person"]
    assert previous_values(person) == {NIIS_ID}
    assert {(i["system"], i["value"]) for i in person["identifiers"]} >= {("BHYT", CHILD_CARD), ("MR", "BN2025000042")}
    [(provisional, how)] = index(hssk_gateway, "SELECT p.provisional, l.how FROM persons p JOIN person_identity_links "
                                               "l ON l.person_id = p.id")
    assert (provisional, how) == (None, "automatic")
    assert len(index(hssk_gateway, "SELECT DISTINCT ordering_key FROM outbox WHERE destination = 'json'")) == 1


@with_claim_files
@pytest_twisted.ensureDeferred
async def test_a_claim_file_for_a_child_born_another_day_leaves_the_placeholder_provisional(hssk_gateway):
    await send_in_order(hssk_gateway, placeholder("NB8"))

    answer = await hssk_gateway.http.post_xml130(child_claim_file(MOTHER_CCCD, birth="202503160000"))

    assert answer.status == 200, answer.body
    assert index(hssk_gateway, "SELECT count(*) FROM persons WHERE provisional IS NOT NULL") == [(1,)]
    assert index(hssk_gateway, "SELECT count(*) FROM person_identity_links") == [(0,)]
