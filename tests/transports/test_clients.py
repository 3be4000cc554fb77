"""Who may send, over real sockets: a client known by its address (MLLP, HTTP) or its bearer
token (HTTP), anonymous senders let in or refused by ``auth.required``, a client's messages for
another facility refused AR 204 and journaled, and the admin API's token."""
import base64
import json

import pytest
import pytest_twisted
from lxml import etree

from gateway.core.clients import token_digest
from tests.support import (
    connect_mllp, err_segments, hl7, http_request, journal_rows, metric_value, msa, replace_msh_field, run_json,
    send_and_receive, start_gateway, TestPlugin,
)
from tests.transports.test_xml_intake import FORM, TestDocumentPlugin, noi_tru, portal_form, rewrite_tables, sample

TOKEN = "q1-token-3f9c2d7e"
OTHER_TOKEN = "q3-token-81ab44c0"
HL7_TYPE = "application/hl7-v2"


def clients(required: bool, loopback_client: str = "") -> dict[str, object]:
    """``bv_q1`` (facility 79001) has a token and, when ``loopback_client`` names it, 127.0.0.1;
    ``bv_q3`` (79003) has another token and a network the tests never come from."""
    tables = {
        "bv_q1": {"facilities": ["79001"], "token_sha256": [token_digest(TOKEN)], "addresses": ["10.79.1.0/24"]},
        "bv_q3": {"facilities": ["79003", "79025"], "token_sha256": [token_digest(OTHER_TOKEN)],
                  "addresses": ["10.79.3.0/24"]},
    }
    if loopback_client:
        tables[loopback_client]["addresses"] = ["127.0.0.1/32"]
    values = {f"clients.{name}.{key}": value for name, table in tables.items() for key, value in table.items()}
    values["auth.required"] = required
    return values


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")}


# --- MLLP: known by address -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_mllp_client_known_by_address_sends_for_its_facility_and_is_refused_for_another(tmp_path, plugin):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **clients(required=True, loopback_client="bv_q1"))
    try:
        client = await connect_mllp(gw)
        own = await send_and_receive(client, hl7(control_id="OWN1"))
        other = await send_and_receive(client, replace_msh_field(hl7(control_id="OTHER1"), 4, "79002^BV Q2"))
        client.transport.loseConnection()
    finally:
        await gw.stop()

    assert msa(own)[1:3] == ["AA", "OWN1"]
    assert msa(other)[1:3] == ["AR", "OTHER1"]
    [err] = err_segments(other)
    assert err[2] == "MSH^1^4" and err[3].startswith("204^")
    assert "'bv_q1'" in err[8] and "79001" in err[8] and "'79002'" in err[8] and "clients.bv_q1.facilities" in err[8]
    assert [(r["control_id"], r["status"], r["client"]) for r in journal_rows(gw)] == [
        ("OWN1", "accepted", "bv_q1"), ("OTHER1", "rejected", "bv_q1")]


@pytest_twisted.ensureDeferred
async def test_mllp_peer_that_is_no_client_is_answered_ar_and_closed_when_auth_is_required(tmp_path, plugin,
                                                                                           log_events):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **clients(required=True))
    try:
        client = await connect_mllp(gw)
        client.transport.write(b"\x0b" + hl7(control_id="STRANGER1") + b"\x1c\r")
        [answer] = await client.wait_frames(1)
        await client.closed
        rows = journal_rows(gw)
        refused = metric_value(gw, "hssk_connections_refused_total", transport="mllp", reason="unauthenticated")
    finally:
        await gw.stop()

    assert msa(answer)[1:3] == ["AR", "STRANGER1"]
    assert "127.0.0.1 is not a known client's address" in err_segments(answer)[0][8]
    assert rows == []
    assert refused == 1
    assert any("refusing MLLP peer" in e.get("log_format", "") for e in log_events)


@pytest_twisted.ensureDeferred
async def test_anonymous_mllp_sender_is_let_in_without_a_facility_check_when_auth_is_not_required(tmp_path, plugin):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **clients(required=False))
    try:
        client = await connect_mllp(gw)
        answer = await send_and_receive(client, replace_msh_field(hl7(control_id="ANON1"), 4, "79002"))
        client.transport.loseConnection()
    finally:
        await gw.stop()

    assert msa(answer)[1:3] == ["AA", "ANON1"]


@pytest_twisted.ensureDeferred
async def test_inbound_ack_from_a_client_for_another_facility_is_still_not_answered(tmp_path, plugin):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **clients(required=True, loopback_client="bv_q1"))
    try:
        client = await connect_mllp(gw)
        ack = replace_msh_field(hl7("MSA|AA|X1", control_id="ACK1", message_type="ACK"), 4, "79002")
        client.transport.write(b"\x0b" + ack + b"\x1c\r")
        after = await send_and_receive(client, hl7(control_id="NEXT1"))
        client.transport.loseConnection()
    finally:
        await gw.stop()

    assert msa(after)[1:3] == ["AA", "NEXT1"]
    assert len(client.frames) == 1


# --- HTTP: known by token or address ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_http_bearer_and_basic_tokens_name_the_client_and_its_facility(tmp_path, plugin):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **clients(required=True))
    try:
        by_bearer = await http_request(gw, "POST", "/hl7", hl7(control_id="TOK1"), HL7_TYPE, headers=bearer(TOKEN))
        by_basic = await http_request(gw, "POST", "/hl7", hl7(control_id="TOK2"), HL7_TYPE,
                                      headers=basic("bv_q1", TOKEN))
        other_facility = await http_request(gw, "POST", "/hl7", hl7(control_id="TOK3"), HL7_TYPE,
                                            headers=bearer(OTHER_TOKEN))
    finally:
        await gw.stop()

    assert (by_bearer.code, msa(by_bearer.body)[1]) == (200, "AA")
    assert (by_basic.code, msa(by_basic.body)[1]) == (200, "AA")
    assert (other_facility.code, msa(other_facility.body)[1]) == (200, "AR")
    assert "client 'bv_q3' may send for facility 79003, 79025 only, not '79001'" in err_segments(other_facility.body)[0][8]
    assert [(r["status"], r["client"]) for r in journal_rows(gw)] == [
        ("accepted", "bv_q1"), ("accepted", "bv_q1"), ("rejected", "bv_q3")]
    listed = run_json("messages", "list", "--data-dir", gw.config.data_dir, "--client", "bv_q3")
    assert [(r["control_id"], r["client"]) for r in listed] == [("TOK3", "bv_q3")]


@pytest_twisted.ensureDeferred
async def test_http_without_credentials_is_401_with_challenges_and_nothing_journaled(tmp_path, plugin):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **clients(required=True))
    try:
        response = await http_request(gw, "POST", "/hl7", hl7(control_id="NOAUTH1"), HL7_TYPE)
        refused = metric_value(gw, "hssk_connections_refused_total", transport="http", reason="unauthenticated")
    finally:
        await gw.stop()

    assert response.code == 401
    assert response.headers["www-authenticate"].startswith("Basic realm=")
    assert b"auth.required" in response.body
    assert journal_rows(gw) == []
    assert refused == 1


@pytest_twisted.ensureDeferred
async def test_wrong_credentials_are_401_even_when_anonymous_senders_are_let_in(tmp_path, plugin, log_events):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **clients(required=False))
    try:
        wrong_token = await http_request(gw, "POST", "/hl7", hl7(control_id="BAD1"), HL7_TYPE,
                                         headers=bearer("not-a-token"))
        wrong_user = await http_request(gw, "POST", "/hl7", hl7(control_id="BAD2"), HL7_TYPE,
                                        headers=basic("bv_q3", TOKEN))
        anonymous = await http_request(gw, "POST", "/hl7", hl7(control_id="ANON2"), HL7_TYPE)
        refused = metric_value(gw, "hssk_connections_refused_total", transport="http", reason="bad_credentials")
    finally:
        await gw.stop()

    assert (wrong_token.code, wrong_user.code) == (401, 401)
    assert (anonymous.code, msa(anonymous.body)[1]) == (200, "AA")
    assert refused == 2
    assert [(r["control_id"], r["client"]) for r in journal_rows(gw)] == [("ANON2", None)]
    refusals = [e for e in log_events if e.get("log_namespace") == "hssk.http"]
    assert [(e["path"], e["reason"].split(":")[0]) for e in refusals] == [
        ("/hl7", "the Authorization header names no client")] * 2
    logged = json.dumps([{k: str(v) for k, v in e.items()} for e in log_events])
    assert "not-a-token" not in logged and TOKEN not in logged


@pytest_twisted.ensureDeferred
async def test_http_client_known_by_address_needs_no_token(tmp_path, plugin):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **clients(required=True, loopback_client="bv_q1"))
    try:
        response = await http_request(gw, "POST", "/hl7", hl7(control_id="ADDR1"), HL7_TYPE)
    finally:
        await gw.stop()

    assert (response.code, msa(response.body)[1]) == (200, "AA")


# --- XML 130 intake ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_xml130_file_of_another_facility_is_403_and_without_credentials_401(tmp_path):
    gw = await start_gateway(tmp_path / "data", plugins=[TestDocumentPlugin()], **clients(required=True))
    try:
        own = await http_request(gw, "POST", "/xml130", noi_tru(), "application/xml", headers=bearer(OTHER_TOKEN))
        other = await http_request(gw, "POST", "/xml130", noi_tru(b"79025.2024070100999"), "application/xml",
                                   headers=bearer(TOKEN))
        anonymous = await http_request(gw, "POST", "/xml130", noi_tru(), "application/xml")
    finally:
        await gw.stop()

    assert own.code == 200 and own.json()["status"] == "accepted"
    assert other.code == 403
    [error] = other.json()["errors"]
    assert (error["code"], error["location"]) == (204, "THONGTINDONVI^MACSKCB")
    assert "client 'bv_q1'" in error["text"] and "'79025'" in error["text"]
    assert anonymous.code == 401 and anonymous.json()["status"] == "unauthenticated"
    assert [r["status"] for r in journal_rows(gw)] == ["accepted", "rejected"]


@pytest_twisted.ensureDeferred
async def test_bhxh_portal_endpoint_answers_its_own_401_and_403_codes(tmp_path):
    gw = await start_gateway(tmp_path / "data", plugins=[TestDocumentPlugin()], **clients(required=True))
    path = "/api/qd130/guiHoSoXmlQD4750"
    form = "application/x-www-form-urlencoded"
    try:
        anonymous = await http_request(gw, "POST", path, portal_form(noi_tru()), form)
        other = await http_request(gw, "POST", path, portal_form(noi_tru()), form, headers=bearer(TOKEN))
        own = await http_request(gw, "POST", path, portal_form(noi_tru()), form, headers=bearer(OTHER_TOKEN))
    finally:
        await gw.stop()

    assert (anonymous.code, anonymous.json()["maKetQua"]) == (200, "401")
    assert (other.code, other.json()["maKetQua"]) == (200, "403")
    assert (own.code, own.json()["maKetQua"]) == (200, "200")


@pytest_twisted.ensureDeferred
async def test_another_clients_accepted_bytes_are_refused_not_answered_from_the_journal(tmp_path):
    """Issue 22, item 2: a repeat is a repeat only for the client that sent the original, and the
    facility check comes before any stored answer."""
    plugins = [TestPlugin(), TestDocumentPlugin()]
    gw = await start_gateway(tmp_path / "data", plugins=plugins, **clients(required=True))
    form = "application/x-www-form-urlencoded"
    portal = "/api/qd130/guiHoSoXmlQD4750"
    message, claim, claim_form = hl7(control_id="REPLAY1"), noi_tru(b"79025.REPLAY0001"), portal_form(
        noi_tru(b"79025.REPLAY0002"))
    try:
        originals = [await http_request(gw, "POST", "/hl7", message, HL7_TYPE, headers=bearer(TOKEN)),
                     await http_request(gw, "POST", "/xml130", claim, "application/xml", headers=bearer(OTHER_TOKEN)),
                     await http_request(gw, "POST", portal, claim_form, form, headers=bearer(OTHER_TOKEN))]
        replays = [await http_request(gw, "POST", "/hl7", message, HL7_TYPE, headers=bearer(OTHER_TOKEN)),
                   await http_request(gw, "POST", "/xml130", claim, "application/xml", headers=bearer(TOKEN)),
                   await http_request(gw, "POST", portal, claim_form, form, headers=bearer(TOKEN))]
    finally:
        await gw.stop()

    assert [msa(originals[0].body)[1], originals[1].json()["status"], originals[2].json()["maKetQua"]] == [
        "AA", "accepted", "200"]
    hl7_replay, xml_replay, portal_replay = replays
    assert msa(hl7_replay.body)[1] == "AR" and err_segments(hl7_replay.body)[0][3].startswith("204^")
    assert xml_replay.code == 403 and xml_replay.json()["duplicate"] is False
    assert xml_replay.json()["errors"][0]["code"] == 204
    assert portal_replay.json()["maKetQua"] == "403"
    assert [(r["status"], r["client"], r["repeat_count"]) for r in journal_rows(gw)] == [
        ("accepted", "bv_q1", 0), ("accepted", "bv_q3", 0), ("accepted", "bv_q3", 0),
        ("rejected", "bv_q3", 0), ("rejected", "bv_q1", 0), ("rejected", "bv_q1", 0)]
    assert metric_value(gw, "hssk_duplicates_suppressed_total", transport="http") == 0


@pytest_twisted.ensureDeferred
async def test_a_repeat_is_answered_from_the_journal_only_for_the_client_that_sent_it(tmp_path, plugin):
    """Two clients of one facility send the same bytes: each is decided for its own client, and
    only each one's own resend is a repeat."""
    values = clients(required=True)
    values["clients.bv_q3.facilities"] = ["79001"]
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **values)
    message = hl7(control_id="SHARED1")
    try:
        first = await http_request(gw, "POST", "/hl7", message, HL7_TYPE, headers=bearer(TOKEN))
        other = await http_request(gw, "POST", "/hl7", message, HL7_TYPE, headers=bearer(OTHER_TOKEN))
        resent = await http_request(gw, "POST", "/hl7", message, HL7_TYPE, headers=bearer(OTHER_TOKEN))
    finally:
        await gw.stop()

    assert [msa(r.body)[1] for r in (first, other, resent)] == ["AA", "AA", "AA"]
    assert [(r["client"], r["repeat_count"]) for r in journal_rows(gw)] == [("bv_q1", 0), ("bv_q3", 1)]
    assert metric_value(gw, "hssk_duplicates_suppressed_total", transport="http") == 1

def claim_file(ma_lk: bytes, header: str, episode: str) -> bytes:
    """The inpatient sample under a fresh MA_LK, its THONGTINDONVI/MACSKCB ``header`` and its XML1
    MA_CSKCB ``episode``: a file may say one facility on the outside and another inside."""
    xml = noi_tru(ma_lk).replace(b"<MACSKCB>79025</MACSKCB>", f"<MACSKCB>{header}</MACSKCB>".encode())
    return rewrite_tables(xml, lambda kind, table: table.replace(
        b"<MA_CSKCB>79025</MA_CSKCB>", f"<MA_CSKCB>{episode}</MA_CSKCB>".encode()) if kind == "XML1" else table)


def check_in_file(ma_lk: str, *facilities: str) -> bytes:
    """The check-in sample with one TRANG_THAI_KCB per facility code (MA_CSKCB), episodes ``ma_lk.1``, ``.2``…"""
    root = etree.fromstring(sample("xml4750_checkin.xml"))
    rows = root.find("DSACH_TRANG_THAI_KCB")
    [template] = rows.findall("TRANG_THAI_KCB")
    rows.remove(template)
    for n, facility in enumerate(facilities, 1):
        row = etree.fromstring(etree.tostring(template))
        row.find("MA_LK").text, row.find("STT").text, row.find("MA_CSKCB").text = f"{ma_lk}.{n}", str(n), facility
        rows.append(row)
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


CHECK_IN = "/api/qd130/checkInKcbQd4750"
CLAIM = "/api/qd130/guiHoSoXmlQD4750"


async def sent_once(tmp_path, path: str, body: bytes, content_type: str, token: str):
    """The answer to one request a client sends to a fresh gateway with the document plugin, and
    that gateway, stopped (its journal stays readable)."""
    gw = await start_gateway(tmp_path / "data", plugins=[TestDocumentPlugin()], **clients(required=True))
    try:
        return await http_request(gw, "POST", path, body, content_type, headers=bearer(token)), gw
    finally:
        await gw.stop()


@pytest.mark.parametrize("form, facility", [("79025", "79025"), ("79025", "79001"), ("79001", "79025")])
@pytest_twisted.ensureDeferred
async def test_portal_check_in_for_another_clients_facility_is_403_naming_form_file_and_client(tmp_path, form,
                                                                                                facility):
    body = portal_form(check_in_file("79025.XC01", facility), form, "0")

    response, gw = await sent_once(tmp_path, CHECK_IN, body, FORM, TOKEN)

    answer = response.json()
    assert (response.code, answer["maKetQua"]) == (200, "403"), answer
    message = answer["thongDiep"]
    assert f"form maCSKCB '{form}'" in message and f"file MA_CSKCB '{facility}'" in message
    assert "client 'bv_q1' may send for facility 79001 only" in message
    [row] = journal_rows(gw)
    assert (row["status"], row["client"], answer["maGiaoDich"]) == ("rejected", "bv_q1", str(row["id"]))


@pytest_twisted.ensureDeferred
async def test_portal_check_in_with_a_row_of_another_facility_is_403_naming_that_row(tmp_path):
    body = portal_form(check_in_file("79025.XC02", "79025", "79001"), "79025", "0")

    response, gw = await sent_once(tmp_path, CHECK_IN, body, FORM, OTHER_TOKEN)

    answer = response.json()
    assert answer["maKetQua"] == "403", answer
    assert "TRANG_THAI_KCB 2 MA_CSKCB '79001'" in answer["thongDiep"]
    assert "client 'bv_q3' may send for facility 79003, 79025 only, not '79001'" in answer["thongDiep"]
    assert [r["status"] for r in journal_rows(gw)] == ["rejected"]


@pytest.mark.parametrize("header, episode", [("79025", "79001"), ("79001", "79001"), ("79001", "79025")])
@pytest_twisted.ensureDeferred
async def test_portal_claim_under_the_clients_own_macskcb_with_another_facilitys_file_is_403(tmp_path, header,
                                                                                              episode):
    body = portal_form(claim_file(b"79025.XC03", header, episode))

    response, gw = await sent_once(tmp_path, CLAIM, body, FORM, OTHER_TOKEN)

    answer = response.json()
    assert (response.code, answer["maKetQua"]) == (200, "403"), answer
    message = answer["thongDiep"]
    assert "form maCSKCB '79025'" in message and f"file MACSKCB '{header}'" in message
    assert "client 'bv_q3' may send for facility 79003, 79025 only, not '79001'" in message
    assert (f"HOSO 1 XML1 MA_CSKCB '{episode}'" in message) == (episode != header)
    assert [(r["status"], r["client"]) for r in journal_rows(gw)] == [("rejected", "bv_q3")]


@pytest_twisted.ensureDeferred
async def test_xml130_file_of_the_clients_facility_with_an_episode_of_another_is_403(tmp_path):
    response, _ = await sent_once(tmp_path, "/xml130", claim_file(b"79025.XC04", "79025", "79001"),
                                  "application/xml", OTHER_TOKEN)

    assert response.code == 403, response.body
    [error] = response.json()["errors"]
    assert (error["code"], error["location"]) == (204, "HOSO^1^XML1^MA_CSKCB")
    assert "HOSO 1 XML1 MA_CSKCB '79001'" in error["text"]


# --- the admin API's token --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_admin_api_with_a_token_configured_wants_it_as_bearer(tmp_path, plugin, monkeypatch):
    monkeypatch.setenv("HSSK_TEST_ADMIN_TOKEN", "admin-secret-77")
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **{"auth.admin_token_env": "HSSK_TEST_ADMIN_TOKEN"})
    try:
        without = await http_request(gw, "GET", "/admin/outbox")
        wrong = await http_request(gw, "GET", "/admin/outbox", headers=bearer("admin-secret-78"))
        right = await http_request(gw, "GET", "/admin/outbox", headers=bearer("admin-secret-77"))
    finally:
        await gw.stop()

    assert without.code == 401 and "auth.admin_token_env" in without.json()["error"]
    assert without.headers["www-authenticate"].startswith("Bearer")
    assert wrong.code == 401
    assert right.code == 200 and "destinations" in right.json()
