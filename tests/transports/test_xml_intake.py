"""XML 130 intake over HTTP: ``POST /xml130`` and the BHXH portal pair
``/api/qd130/guiHoSoXmlQD4750`` and ``/api/qd130/checkInKcbQd4750``, against a real gateway with
a real journal, outbox and file destination. "Accepted" is answered only once the journal holds
the file; refused XML (XXE, entity expansion, oversized) costs one fast answer and nothing else."""
import base64
import json
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest_twisted
from lxml import etree

from gateway.model.hooks import PluginDescription, hookimpl
from gateway.model.outcome import Issue
from tests.support import http_request, journal_rows, metric_value, outbox_rows, start_gateway, wait_until

SAMPLES = Path(__file__).resolve().parents[2] / "plugins" / "vnpt_his" / "samples"
SAMPLE_MA_LK = b"79025.2024070100123"
FORM = "application/x-www-form-urlencoded"
MAX_BODY = 1024 * 1024


class DocumentAdapter:
    """Keeps the record sets as the core read them, as a vendor without quirks would."""

    name = "test_xml"

    def normalize(self, document):
        return document.records


class TestDocumentPlugin:
    """Claims the XML files of facilities 79025 and 48202 (the 4210 sample's 01001 is nobody's);
    its hssk_check warns on every record set read from a file, to prove it runs with message None."""

    __test__ = False
    facilities = frozenset({"79025", "48202"})

    def __init__(self) -> None:
        self.checked_messages: list = []

    @hookimpl
    def hssk_describe(self):
        return PluginDescription("test_xml", "XML 130 files of facilities 79025, 48202")

    @hookimpl
    def hssk_identify_document(self, document, envelope):
        return DocumentAdapter() if document.facility in self.facilities else None

    @hookimpl
    def hssk_check(self, message, records):
        if message is None:
            self.checked_messages.append(message)
            return [Issue(101, "SO_CCCD: test policy looked at this record set", "XML1^1^SO_CCCD", "W")]
        return None


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def rewrite_tables(data: bytes, edit) -> bytes:
    """The claim file with ``edit(kind, table_bytes)`` applied to every base64 FILEHOSO table."""
    root = etree.fromstring(data)
    for file in root.iter("FILEHOSO"):
        node = file.find("NOIDUNGFILE")
        node.text = base64.b64encode(edit(file.findtext("LOAIHOSO"), base64.b64decode(node.text))).decode("ascii")
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def noi_tru(ma_lk: bytes = SAMPLE_MA_LK) -> bytes:
    """The inpatient sample (20 drug and 30 service lines) with its episode key MA_LK set to ``ma_lk``."""
    return rewrite_tables(sample("xml4750_noi_tru.xml"), lambda kind, table: table.replace(SAMPLE_MA_LK, ma_lk))


def portal_form(xml: bytes, facility: str = "79025", file_type: str = "130") -> bytes:
    return urlencode({"username": "79025_BV", "loaiHoSo": file_type, "maTinh": "79", "maCSKCB": facility,
                      "fileHSBase64": base64.b64encode(xml).decode("ascii")}).encode("ascii")


def outbox_payloads(gateway) -> list[bytes]:
    conn = sqlite3.connect(gateway.config.database_path)
    try:
        return [row[0] for row in conn.execute("SELECT payload FROM outbox ORDER BY id")]
    finally:
        conn.close()


@pytest_twisted.async_yield_fixture
async def xml_gateway(tmp_path):
    """A gateway with the document plugin, a JSON file destination and a 1 MiB body bound."""
    plugin = TestDocumentPlugin()
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], destinations={
        "files": {"kind": "file", "format": "json", "directory": str(tmp_path / "drop")}},
        **{"http.max_body_bytes": MAX_BODY})
    gw.test_plugin = plugin
    gw.drop = tmp_path / "drop"
    yield gw
    await gw.stop()


# --- POST /xml130 -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_accepted_file_is_answered_200_after_its_journal_row_and_outbox_row_exist(xml_gateway):
    body = noi_tru()

    response = await http_request(xml_gateway, "POST", "/xml130", body, "application/xml")

    assert response.code == 200, response.body
    answer = response.json()
    assert (answer["status"], answer["records"], answer["duplicate"]) == ("accepted", 1, False)
    [row] = journal_rows(xml_gateway)
    assert answer["message_id"] == row["id"]
    assert (row["status"], row["sender"], row["message_type"], row["plugin"], row["raw"]) == (
        "accepted", "XML|79025", "XML130", "test_xml", body)
    assert len(row["control_id"]) == 32
    assert [r["encounter"]["ma_lk"] for r in json.loads(row["records"])] == [SAMPLE_MA_LK.decode()]
    [queued] = outbox_rows(xml_gateway)
    assert (queued["message_id"], queued["destination"]) == (row["id"], "files")
    [payload] = outbox_payloads(xml_gateway)
    rendered = json.loads(payload)
    assert rendered["source"] == {"sender": "XML|79025", "control_id": row["control_id"], "message_type": "XML130"}
    assert rendered["records"]["encounter"]["ma_lk"] == SAMPLE_MA_LK.decode()
    assert len(rendered["records"]["medications"]) == 20 and len(rendered["records"]["services"]) == 30
    assert metric_value(xml_gateway, "hssk_messages_received_total", transport="http", plugin="test_xml",
                        message_type="XML130") == 1


@pytest_twisted.ensureDeferred
async def test_accepted_file_is_delivered_to_the_file_destination_with_its_ma_lk(xml_gateway):
    await http_request(xml_gateway, "POST", "/xml130", noi_tru(b"79025.LK0000000042"), "text/xml")

    await wait_until(lambda: xml_gateway.drop.exists() and any(xml_gateway.drop.iterdir()), what="a delivered file")
    [delivered] = list(xml_gateway.drop.iterdir())
    assert json.loads(delivered.read_bytes())["records"]["encounter"]["ma_lk"] == "79025.LK0000000042"


@pytest_twisted.ensureDeferred
async def test_a_file_with_hiv_care_data_reaches_a_filtered_destination_without_it(xml_gateway):
    from tests.formats.support import HIV_CARE_TABLE, edit_table

    body = edit_table(noi_tru(), "XML1", lambda t: t.replace("<MA_BENH_KT>E11.9;I10<", "<MA_BENH_KT>E11.9;B20;I10<"))
    body = edit_table(body, "XML6", lambda _: HIV_CARE_TABLE)

    response = await http_request(xml_gateway, "POST", "/xml130", body, "application/xml")

    assert response.code == 200
    [payload] = outbox_payloads(xml_gateway)
    records = json.loads(payload)["records"]
    assert records["diagnosis"]["secondary"] == ["E11.9", "I10"] and "other_tables" not in records
    assert metric_value(xml_gateway, "hssk_privacy_removed_total", destination="files", category="hiv",
                        part="table") == 1
    assert "B20" in json.loads(journal_rows(xml_gateway)[0]["records"])[0]["diagnosis"]["secondary"]


@pytest_twisted.ensureDeferred
async def test_policy_checks_run_with_message_none_and_their_warnings_ride_on_the_200(xml_gateway):
    response = await http_request(xml_gateway, "POST", "/xml130", noi_tru(), "application/xml")

    assert xml_gateway.test_plugin.checked_messages == [None]
    assert [w["location"] for w in response.json()["warnings"]] == ["XML1^1^SO_CCCD"]


@pytest_twisted.ensureDeferred
async def test_identical_file_sent_again_gets_the_same_answer_and_is_neither_journaled_nor_queued_twice(xml_gateway):
    body = noi_tru()
    first = await http_request(xml_gateway, "POST", "/xml130", body, "application/xml")

    again = await http_request(xml_gateway, "POST", "/xml130", body, "application/xml")

    assert again.code == 200
    assert again.json()["message_id"] == first.json()["message_id"]
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    [row] = journal_rows(xml_gateway)
    assert row["repeat_count"] == 1
    assert len(outbox_rows(xml_gateway)) == 1


@pytest_twisted.ensureDeferred
async def test_files_differing_only_in_ma_lk_are_two_messages_with_their_own_idempotency_keys(xml_gateway):
    await http_request(xml_gateway, "POST", "/xml130", noi_tru(b"79025.LK0000000001"), "application/xml")
    await http_request(xml_gateway, "POST", "/xml130", noi_tru(b"79025.LK0000000002"), "application/xml")

    rows = journal_rows(xml_gateway)
    assert [r["status"] for r in rows] == ["accepted", "accepted"]
    assert rows[0]["control_id"] != rows[1]["control_id"]
    keys = {r["idempotency_key"] for r in outbox_rows(xml_gateway)}
    assert len(keys) == 2


@pytest_twisted.ensureDeferred
async def test_broken_rules_answer_422_with_one_error_per_field_and_the_file_is_journaled_as_error(xml_gateway):
    def break_xml1(kind, table):
        if kind != "XML1":
            return table
        return table.replace(b"<GIOI_TINH>2</GIOI_TINH>", b"<GIOI_TINH>7</GIOI_TINH>") \
            .replace(b"<SO_CCCD>079185004321</SO_CCCD>", b"<SO_CCCD>999185004321</SO_CCCD>")

    response = await http_request(xml_gateway, "POST", "/xml130",
                                  rewrite_tables(sample("xml4750_noi_tru.xml"), break_xml1), "application/xml")

    assert response.code == 422
    errors = [e for e in response.json()["errors"] if e["severity"] == "E"]
    assert any("GIOI_TINH" in e["text"] and e["code"] == 103 for e in errors), errors
    assert any("SO_CCCD" in e["location"] or "SO_CCCD" in e["text"] for e in errors), errors
    assert all(set(e) >= {"code", "location", "text"} for e in errors)
    assert b"999185004321" not in response.body  # identifiers are masked in error texts
    [row] = journal_rows(xml_gateway)
    assert row["status"] == "error"
    assert outbox_rows(xml_gateway) == []


@pytest_twisted.ensureDeferred
async def test_errors_come_in_call_order_core_identity_claims_totals_then_the_plugins_checks(xml_gateway):
    """The national rules are hssk_check hooks of built-in plugins, run before any plugin's."""
    def break_one_rule_of_each(kind, table):
        if kind != "XML1":
            return table
        return table.replace(b"<T_TONGCHI_BV>3947280.00<", b"<T_TONGCHI_BV>3947999.00<") \
            .replace(b"<NGAY_RA>202407061000<", b"<NGAY_RA>202407061075<") \
            .replace(b"<GIOI_TINH>2<", b"<GIOI_TINH>7<")

    response = await http_request(xml_gateway, "POST", "/xml130",
                                  rewrite_tables(sample("xml4750_noi_tru.xml"), break_one_rule_of_each),
                                  "application/xml")

    assert response.code == 422
    assert [(e["location"], e["severity"]) for e in response.json()["errors"]] == [
        ("XML1^1^GIOI_TINH", "E"),  # core.identity
        ("XML1^1^NGAY_RA", "E"),  # core.claims
        ("XML1^1^T_TONGCHI_BV", "E"),  # core.totals
        ("XML1^1^SO_CCCD", "W"),  # the test plugin's check
    ]


@pytest_twisted.ensureDeferred
async def test_not_well_formed_xml_is_422_naming_the_document(xml_gateway):
    response = await http_request(xml_gateway, "POST", "/xml130", b"<GIAMDINHHS><THONGTINDONVI>", "application/xml")

    assert response.code == 422
    [error] = response.json()["errors"]
    assert "not well-formed" in error["text"] and error["location"] == "GIAMDINHHS"


@pytest_twisted.ensureDeferred
async def test_file_of_a_facility_no_plugin_claims_is_rejected_403_and_journaled(xml_gateway):
    response = await http_request(xml_gateway, "POST", "/xml130", sample("xml4210_ngoai_tru.xml"), "application/xml")

    assert response.code == 403
    [error] = response.json()["errors"]
    assert error["code"] == 200 and "no plugin claims facility MACSKCB='01001'" in error["text"]
    assert journal_rows(xml_gateway)[0]["status"] == "rejected"


@pytest_twisted.ensureDeferred
async def test_body_that_is_not_xml_is_415_and_nothing_is_journaled(xml_gateway):
    response = await http_request(xml_gateway, "POST", "/xml130", noi_tru(), "application/json")

    assert response.code == 415
    assert "application/xml" in response.json()["errors"][0]["text"]
    assert journal_rows(xml_gateway) == []


@pytest_twisted.ensureDeferred
async def test_file_refused_at_a_bound_is_503_with_retry_after_and_not_journaled(xml_gateway):
    xml_gateway.intake.admission = lambda: "the outbox holds too many rows (test bound); send again later"

    response = await http_request(xml_gateway, "POST", "/xml130", noi_tru(), "application/xml")

    assert response.code == 503
    assert response.headers["retry-after"] == "30"
    assert response.json()["status"] == "unavailable" and "test bound" in response.json()["errors"][0]["text"]
    assert journal_rows(xml_gateway) == []


# --- security: refused fast, and the gateway keeps serving ---------------------------------------------


async def _refused_fast_then_serving(gateway, body: bytes, content_type: str = "application/xml"):
    started = time.monotonic()
    response = await http_request(gateway, "POST", "/xml130", body, content_type)
    elapsed = time.monotonic() - started
    after = await http_request(gateway, "POST", "/xml130", noi_tru(b"79025.AFTER0000001"), "application/xml")
    assert elapsed < 1.0, f"refusal took {elapsed:.2f} s"
    assert after.code == 200, after.body
    return response


@pytest_twisted.ensureDeferred
async def test_external_entity_to_a_local_file_is_refused_422_without_reading_the_file(xml_gateway, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    body = (f'<?xml version="1.0"?><!DOCTYPE GIAMDINHHS [<!ENTITY xxe SYSTEM "file://{secret}">]>'
            f'<GIAMDINHHS><THONGTINDONVI><MACSKCB>&xxe;</MACSKCB></THONGTINDONVI></GIAMDINHHS>').encode()

    response = await _refused_fast_then_serving(xml_gateway, body)

    assert response.code == 422
    assert "DOCTYPE declarations are not accepted" in response.json()["errors"][0]["text"]
    assert b"TOP-SECRET" not in response.body
    assert journal_rows(xml_gateway)[0]["status"] == "error"


@pytest_twisted.ensureDeferred
async def test_external_entity_inside_a_base64_table_is_refused_422_naming_the_table(xml_gateway, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")

    def poison(kind, table):
        if kind != "XML2":
            return table
        return (f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file://{secret}">]>'
                f'<CHITIEU_CHITIET_THUOC>&xxe;</CHITIEU_CHITIET_THUOC>').encode()

    response = await _refused_fast_then_serving(xml_gateway, rewrite_tables(noi_tru(), poison))

    assert response.code == 422
    [error] = response.json()["errors"]
    assert error["location"] == "XML2" and "DOCTYPE" in error["text"]
    assert b"TOP-SECRET" not in response.body


@pytest_twisted.ensureDeferred
async def test_billion_laughs_is_refused_422_fast(xml_gateway):
    entities = "".join(f'<!ENTITY lol{n} "{("&lol%d;" % (n - 1)) * 10}">' for n in range(1, 10))
    body = (f'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">{entities}]>'
            f'<GIAMDINHHS><THONGTINDONVI><MACSKCB>&lol9;</MACSKCB></THONGTINDONVI></GIAMDINHHS>').encode()

    response = await _refused_fast_then_serving(xml_gateway, body)

    assert response.code == 422
    assert "DOCTYPE" in response.json()["errors"][0]["text"]


@pytest_twisted.ensureDeferred
async def test_oversized_body_is_413_fast_and_nothing_is_journaled(xml_gateway):
    body = b"<GIAMDINHHS>" + b" " * (2 * MAX_BODY) + b"</GIAMDINHHS>"

    response = await _refused_fast_then_serving(xml_gateway, body)

    assert response.code == 413
    assert "http.max_body_bytes" in response.json()["errors"][0]["text"]
    assert [r["status"] for r in journal_rows(xml_gateway)] == ["accepted"]  # only the request that followed


# --- BHXH portal-compatible endpoints ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_portal_submission_answers_makequa_200_with_the_journal_id_after_commit(xml_gateway):
    xml = noi_tru()

    response = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750", portal_form(xml), FORM)

    assert response.code == 200
    answer = response.json()
    assert set(answer) == {"maKetQua", "maGiaoDich", "thoiGianTiepNhan", "thongDiep"}
    [row] = journal_rows(xml_gateway)
    assert (answer["maKetQua"], answer["maGiaoDich"]) == ("200", str(row["id"]))
    assert len(answer["thoiGianTiepNhan"]) == 14 and answer["thoiGianTiepNhan"].isdigit()
    assert (row["status"], row["raw"], row["sender"]) == ("accepted", xml, "XML|79025")
    assert len(outbox_rows(xml_gateway)) == 1


@pytest_twisted.ensureDeferred
async def test_portal_submission_as_multipart_form_data_is_accepted(xml_gateway):
    boundary = "hssk-test-boundary"
    fields = {"username": "79025_BV", "loaiHoSo": "130", "maTinh": "79", "maCSKCB": "79025",
              "fileHSBase64": base64.b64encode(noi_tru()).decode("ascii")}
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in fields.items()) + f"--{boundary}--\r\n"

    response = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750", body.encode("ascii"),
                                  f"multipart/form-data; boundary={boundary}")

    assert response.json()["maKetQua"] == "200", response.json()
    assert journal_rows(xml_gateway)[0]["status"] == "accepted"


@pytest_twisted.ensureDeferred
async def test_portal_and_plain_submission_of_one_file_are_one_message(xml_gateway):
    xml = noi_tru()
    plain = await http_request(xml_gateway, "POST", "/xml130", xml, "application/xml")

    portal = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750", portal_form(xml), FORM)

    assert portal.json()["maKetQua"] == "200"
    assert portal.json()["maGiaoDich"] == str(plain.json()["message_id"])
    assert len(journal_rows(xml_gateway)) == 1 and len(outbox_rows(xml_gateway)) == 1


@pytest_twisted.ensureDeferred
async def test_portal_check_in_takes_the_check_in_file(xml_gateway):
    xml = sample("xml4750_checkin.xml")

    response = await http_request(xml_gateway, "POST", "/api/qd130/checkInKcbQd4750",
                                  portal_form(xml, file_type="0"), FORM)

    assert response.json()["maKetQua"] == "200", response.json()
    [row] = journal_rows(xml_gateway)
    assert (row["message_type"], row["status"]) == ("XML130^CHECKIN", "accepted")


@pytest_twisted.ensureDeferred
async def test_portal_check_in_refuses_a_claim_file_with_205(xml_gateway):
    response = await http_request(xml_gateway, "POST", "/api/qd130/checkInKcbQd4750",
                                  portal_form(noi_tru(), file_type="0"), FORM)

    assert response.json()["maKetQua"] == "205"
    assert "loaiHoSo" in response.json()["thongDiep"]


@pytest_twisted.ensureDeferred
async def test_wrong_macskcb_is_205_and_the_same_file_with_the_right_one_is_then_accepted(xml_gateway):
    xml = noi_tru()

    wrong = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750", portal_form(xml, "01001"), FORM)
    right = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750", portal_form(xml, "79025"), FORM)

    assert wrong.json()["maKetQua"] == "205"
    assert "maCSKCB" in wrong.json()["thongDiep"] and "79025" in wrong.json()["thongDiep"]
    assert right.json()["maKetQua"] == "200"
    assert [r["status"] for r in journal_rows(xml_gateway)] == ["rejected", "accepted"]


@pytest_twisted.ensureDeferred
async def test_bad_base64_is_205_and_nothing_is_journaled(xml_gateway):
    form = urlencode({"username": "u", "loaiHoSo": "130", "maTinh": "79", "maCSKCB": "79025",
                      "fileHSBase64": "not*base64!"}).encode()

    response = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750", form, FORM)

    assert response.code == 200
    assert response.json()["maKetQua"] == "205" and "fileHSBase64" in response.json()["thongDiep"]
    assert journal_rows(xml_gateway) == []


@pytest_twisted.ensureDeferred
async def test_missing_form_fields_are_named_in_a_205(xml_gateway):
    response = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750",
                                  urlencode({"username": "u"}).encode(), FORM)

    assert response.json()["maKetQua"] == "205"
    assert "loaiHoSo, maCSKCB, fileHSBase64" in response.json()["thongDiep"]


@pytest_twisted.ensureDeferred
async def test_portal_file_breaking_rules_is_123_with_the_field_in_the_message(xml_gateway):
    xml = rewrite_tables(noi_tru(), lambda kind, table: table.replace(b"<GIOI_TINH>2</GIOI_TINH>",
                                                                        b"<GIOI_TINH>7</GIOI_TINH>"))

    response = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750", portal_form(xml), FORM)

    answer = response.json()
    assert answer["maKetQua"] == "123" and "GIOI_TINH" in answer["thongDiep"]
    assert answer["maGiaoDich"] == str(journal_rows(xml_gateway)[0]["id"])


@pytest_twisted.ensureDeferred
async def test_portal_file_of_an_unclaimed_facility_is_403(xml_gateway):
    response = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750",
                                  portal_form(sample("xml4210_ngoai_tru.xml"), "01001"), FORM)

    assert response.json()["maKetQua"] == "403"
    assert "no plugin claims facility" in response.json()["thongDiep"]


@pytest_twisted.ensureDeferred
async def test_portal_submission_refused_at_a_bound_is_124_with_retry_after(xml_gateway):
    xml_gateway.intake.admission = lambda: "the disk is nearly full (test bound); send again later"

    response = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750", portal_form(noi_tru()), FORM)

    assert response.json()["maKetQua"] == "124" and response.json()["maGiaoDich"] == ""
    assert response.headers["retry-after"] == "30"
    assert journal_rows(xml_gateway) == []


@pytest_twisted.ensureDeferred
async def test_portal_body_over_the_bound_is_1001(xml_gateway):
    form = urlencode({"loaiHoSo": "130", "maCSKCB": "79025", "fileHSBase64": "A" * (2 * MAX_BODY)}).encode()

    response = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750", form, FORM)

    assert response.json()["maKetQua"] == "1001"
    assert journal_rows(xml_gateway) == []


@pytest_twisted.ensureDeferred
async def test_a_repeat_with_another_macskcb_is_refused_as_a_new_file_would_be(xml_gateway):
    xml = noi_tru()
    first = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750", portal_form(xml, "79025"), FORM)

    other = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750", portal_form(xml, "01001"), FORM)

    assert first.json()["maKetQua"] == "200"
    assert other.json()["maKetQua"] == "205", other.json()
    assert [r["status"] for r in journal_rows(xml_gateway)] == ["accepted", "rejected"]
    assert len(outbox_rows(xml_gateway)) == 1


@pytest_twisted.ensureDeferred
async def test_a_repeat_sent_to_the_other_portal_endpoint_is_refused_as_a_new_file_would_be(xml_gateway):
    xml = noi_tru()
    first = await http_request(xml_gateway, "POST", "/api/qd130/guiHoSoXmlQD4750", portal_form(xml), FORM)

    other = await http_request(xml_gateway, "POST", "/api/qd130/checkInKcbQd4750", portal_form(xml, file_type="0"),
                               FORM)

    assert first.json()["maKetQua"] == "200"
    assert other.json()["maKetQua"] == "205", other.json()
    assert "loaiHoSo" in other.json()["thongDiep"]
    assert [r["status"] for r in journal_rows(xml_gateway)] == ["accepted", "rejected"]
