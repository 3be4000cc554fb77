"""What the ACK says for each pipeline decision, and that every decision is journaled as sent.

Rules: DESIGN.md §4 and ../shared/domain/vn-standards.md §7.3 (AR for MSH-9/11/12 problems and
unknown senders, AE for content errors, ERR in v2.5 form with a table-0357 code).
"""
import json

import pytest_twisted

from gateway.formats.hl7v2 import escape
from gateway.model.outcome import ContentError, Issue
from tests.support import connect_mllp, err_segments, hl7, journal_rows, msa, replace_msh_field, segments_of, \
    send_and_receive, standard_records


def missing_cccd(message):
    raise ContentError([Issue(101, "PID-3: CCCD is required", "PID^1^3")])


@pytest_twisted.ensureDeferred
async def test_aa_ack_mirrors_sender_and_receiver_and_copies_version_and_charset(gateway):
    payload = replace_msh_field(hl7(control_id="MIRROR1", version="2.5.1"), 4, "79001^BV Thu Nghiem^VN_BYT")
    payload = replace_msh_field(payload, 6, "SYT_79^So Y te^VN_BYT")
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, payload)

    msh = segments_of(ack)["MSH"][0]  # msh[n - 1] is MSH-n
    assert msh[2:6] == ["HSSK_GW", "SYT_79^So Y te^VN_BYT", "TEST_HIS", "79001^BV Thu Nghiem^VN_BYT"]
    assert msh[8] == "ACK^A04^ACK"
    assert msh[9] and msh[9] != "MIRROR1"
    assert msh[10:12] == ["P", "2.5.1"]
    assert msh[17] == "UNICODE UTF-8"
    assert msa(ack)[1:3] == ["AA", "MIRROR1"]
    assert "ERR" not in segments_of(ack)
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_unknown_sending_application_gets_ar_200_naming_msh_3(gateway):
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, hl7(control_id="UNK1", sending_app="NOBODY_HIS"))

    assert msa(ack)[1:3] == ["AR", "UNK1"]
    [err] = err_segments(ack)
    assert err[2] == "MSH^1^3"
    assert err[3].startswith("200^")
    assert "MSH-3" in err[8] and "NOBODY_HIS" in err[8]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_unsupported_version_gets_ar_203_at_msh_12(gateway):
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, hl7(control_id="V30", version="3.0"))

    assert msa(ack)[1:3] == ["AR", "V30"]
    [err] = err_segments(ack)
    assert err[2:5] == ["MSH^1^12", "203^Unsupported version id^HL70357", "E"]
    assert "MSH-12" in err[8] and "3.0" in err[8]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_missing_control_id_gets_ar_101_at_msh_10(gateway):
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, hl7(control_id=""))

    assert msa(ack)[1:3] == ["AR", ""]
    [err] = err_segments(ack)
    assert err[2:5] == ["MSH^1^10", "101^Required field missing^HL70357", "E"]
    assert "MSH-10" in err[8]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_frame_without_msh_gets_ar_with_empty_msa_2(gateway):
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, b"PID|1||079085000123^^^BCA^NI\r")

    assert msa(ack)[1:3] == ["AR", ""]
    [err] = err_segments(ack)
    assert err[3].startswith("100^")
    assert "MSH" in err[8]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_content_error_gets_ae_with_err_from_the_plugin_and_msa_3_text(gateway, plugin):
    plugin.behaviour = missing_cccd
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, hl7(control_id="NOCCCD1"))

    assert msa(ack) == ["MSA", "AE", "NOCCCD1", "PID-3: CCCD is required"]
    [err] = err_segments(ack)
    assert err == ["ERR", "", "PID^1^3", "101^Required field missing^HL70357", "E", "", "", "",
                   "PID-3: CCCD is required"]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_v2_7_ack_leaves_out_withdrawn_msa_3_but_keeps_err(gateway, plugin):
    plugin.behaviour = missing_cccd
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, hl7(control_id="NOCCCD27", version="2.7"))

    assert msa(ack) == ["MSA", "AE", "NOCCCD27"]
    assert err_segments(ack)[0][8] == "PID-3: CCCD is required"
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_separators_in_error_text_are_hl7_escaped_in_err_8_and_msa_3(gateway, plugin):
    text = r"PID-5: name 'A|B^C~D&E\F' has separators"

    def separators_in_text(message):
        raise ContentError([Issue(102, text, "PID^1^5")])

    plugin.behaviour = separators_in_text
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, hl7(control_id="ESC1"))

    escaped = r"PID-5: name 'A\F\B\S\C\R\D\T\E\E\F' has separators"
    assert escape(text) == escaped
    assert msa(ack) == ["MSA", "AE", "ESC1", escaped]
    [err] = err_segments(ack)
    assert len(err) == 9 and err[8] == escaped
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_every_decision_is_journaled_with_its_errors_and_the_bytes_as_sent(gateway, plugin):
    def error_for_one(message):
        if message.control_id == "J-AE":
            missing_cccd(message)
        return standard_records(message)

    plugin.behaviour = error_for_one
    sent = {
        "J-AA": hl7(control_id="J-AA"),
        "J-AE": hl7(control_id="J-AE"),
        "J-AR": hl7(control_id="J-AR", sending_app="NOBODY_HIS"),
    }
    client = await connect_mllp(gateway)
    codes = {cid: msa(await send_and_receive(client, payload))[1] for cid, payload in sent.items()}
    client.transport.loseConnection()

    rows = {row["control_id"]: row for row in journal_rows(gateway)}

    assert codes == {"J-AA": "AA", "J-AE": "AE", "J-AR": "AR"}
    assert set(rows) == set(sent)
    assert {cid: (row["ack_code"], row["status"]) for cid, row in rows.items()} == {
        "J-AA": ("AA", "accepted"), "J-AE": ("AE", "error"), "J-AR": ("AR", "rejected")}
    assert all(rows[cid]["raw"] == payload for cid, payload in sent.items())
    assert rows["J-AA"]["errors"] is None
    assert json.loads(rows["J-AA"]["records"])["person"]["family"] == "Nguyễn"
    assert json.loads(rows["J-AE"]["errors"]) == [
        {"code": 101, "text": "PID-3: CCCD is required", "location": "PID^1^3", "severity": "E"}]
    [refusal] = json.loads(rows["J-AR"]["errors"])
    assert refusal["code"] == 200 and refusal["location"] == "MSH^1^3"
    assert rows["J-AA"]["plugin"] == rows["J-AE"]["plugin"] == "test_his"
    assert rows["J-AA"]["sender"] == "TEST_HIS|79001"


@pytest_twisted.ensureDeferred
async def test_frame_without_msh_is_journaled_as_rejected_with_its_raw_bytes(gateway):
    payload = b"PID|1||079085000123^^^BCA^NI\r"
    client = await connect_mllp(gateway)
    await send_and_receive(client, payload)
    client.transport.loseConnection()

    [row] = journal_rows(gateway)

    assert (row["ack_code"], row["status"], row["sender"], row["control_id"]) == ("AR", "rejected", "", "")
    assert row["raw"] == payload
    assert json.loads(row["errors"])[0]["code"] == 100
