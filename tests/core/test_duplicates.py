"""A repeated message (same sender, control id and content) gets the stored answer and is
journaled once (DESIGN.md §4); anything else with a reused control id is not a repeat."""
import json

import pytest
import pytest_twisted

from gateway.model.outcome import ContentError, Issue
from tests.support import connect_mllp, err_segments, hl7, journal_rows, metric_value, msa, replace_msh_field, \
    send_and_receive


@pytest.fixture
def gateway(gateway_on_each_backend):
    """Every test here runs on each journal backend."""
    return gateway_on_each_backend


def missing_cccd(message):
    raise ContentError([Issue(101, "PID-3: CCCD is required", "PID^1^3")])


def broken(message):
    raise RuntimeError("the plugin changed its mind")


@pytest_twisted.ensureDeferred
async def test_repeated_message_gets_the_stored_answer_and_one_journal_row(gateway, plugin):
    payload = hl7(control_id="DUP1")
    client = await connect_mllp(gateway)
    first = await send_and_receive(client, payload)
    plugin.behaviour = broken  # would answer AE if the repeat were decided afresh

    second = await send_and_receive(client, payload)

    assert msa(first)[1:3] == msa(second)[1:3] == ["AA", "DUP1"]
    [row] = journal_rows(gateway)
    assert row["repeat_count"] == 1 and row["last_repeat_at"] is not None
    assert metric_value(gateway, "hssk_duplicates_suppressed_total", transport="mllp") == 1
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_repeat_with_lf_segment_ends_is_still_the_same_message(gateway):
    payload = hl7(control_id="DUPLF")
    client = await connect_mllp(gateway)

    await send_and_receive(client, payload)
    second = await send_and_receive(client, payload.replace(b"\r", b"\n"))

    assert msa(second)[1:3] == ["AA", "DUPLF"]
    [row] = journal_rows(gateway)
    assert row["repeat_count"] == 1
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_repeated_message_answered_ae_gets_the_same_ae_and_err_again(gateway, plugin):
    plugin.behaviour = missing_cccd
    payload = hl7(control_id="DUPAE")
    client = await connect_mllp(gateway)
    first = await send_and_receive(client, payload)
    plugin.behaviour = None  # would answer AA if the repeat were decided afresh

    second = await send_and_receive(client, payload)

    assert msa(first) == msa(second) == ["MSA", "AE", "DUPAE", "PID-3: CCCD is required"]
    assert err_segments(second) == err_segments(first) == [
        ["ERR", "", "PID^1^3", "101^Required field missing^HL70357", "E", "", "", "", "PID-3: CCCD is required"]]
    [row] = journal_rows(gateway)
    assert (row["status"], row["repeat_count"]) == ("error", 1)
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_same_control_id_different_content_gets_ae_205_and_a_second_row(gateway):
    client = await connect_mllp(gateway)
    await send_and_receive(client, hl7(control_id="REUSED1"))

    ack = await send_and_receive(client, hl7("PID|1||079085000999^^^BCA^NI||Trần^Thị Hoa||19900101|F",
                                             control_id="REUSED1"))

    assert msa(ack)[1:3] == ["AE", "REUSED1"]
    [err] = err_segments(ack)
    assert err[2:5] == ["MSH^1^10", "205^Duplicate key identifier^HL70357", "E"]
    assert "REUSED1" in err[8]
    first, second = journal_rows(gateway)
    assert (first["status"], first["repeat_count"]) == ("accepted", 0)
    assert (second["status"], second["ack_code"]) == ("error", "AE")
    assert json.loads(second["errors"])[0]["code"] == 205
    assert metric_value(gateway, "hssk_duplicates_suppressed_total", transport="mllp") == 0
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_message_rejected_ar_is_processed_again_when_resent_after_the_fix(gateway, plugin):
    payload = hl7(control_id="RETRY1", sending_app="NEW_HIS")
    client = await connect_mllp(gateway)
    refused = await send_and_receive(client, payload)
    plugin.senders = plugin.senders | {"NEW_HIS"}  # the operator installs the plugin for NEW_HIS

    accepted = await send_and_receive(client, payload)

    assert msa(refused)[1] == "AR"
    assert msa(accepted)[1:3] == ["AA", "RETRY1"]
    assert [(r["status"], r["repeat_count"]) for r in journal_rows(gateway)] == [("rejected", 0), ("accepted", 0)]
    assert metric_value(gateway, "hssk_duplicates_suppressed_total", transport="mllp") == 0
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_same_control_id_from_another_facility_is_not_a_duplicate(gateway):
    payload = hl7(control_id="SHARED1")
    other_facility = replace_msh_field(payload, 4, "79002")
    client = await connect_mllp(gateway)

    first = await send_and_receive(client, payload)
    second = await send_and_receive(client, other_facility)

    assert msa(first)[1:3] == msa(second)[1:3] == ["AA", "SHARED1"]
    assert [(r["sender"], r["repeat_count"]) for r in journal_rows(gateway)] == [
        ("TEST_HIS|79001", 0), ("TEST_HIS|79002", 0)]
    assert metric_value(gateway, "hssk_duplicates_suppressed_total", transport="mllp") == 0
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_repeat_on_another_connection_is_answered_from_the_journal(gateway):
    payload = hl7(control_id="DUPCONN")
    first_client, second_client = await connect_mllp(gateway), await connect_mllp(gateway)

    first = await send_and_receive(first_client, payload)
    second = await send_and_receive(second_client, payload)

    assert msa(first)[1:3] == msa(second)[1:3] == ["AA", "DUPCONN"]
    assert [r["repeat_count"] for r in journal_rows(gateway)] == [1]
    first_client.transport.loseConnection()
    second_client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_two_copies_sent_at_once_are_journaled_once(gateway):
    payload = hl7(control_id="DUPRACE")
    first_client, second_client = await connect_mllp(gateway), await connect_mllp(gateway)

    first_client.send(payload)
    second_client.send(payload)
    [first] = await first_client.wait_frames(1)
    [second] = await second_client.wait_frames(1)

    assert msa(first)[1:3] == msa(second)[1:3] == ["AA", "DUPRACE"]
    assert [r["repeat_count"] for r in journal_rows(gateway)] == [1]
    assert metric_value(gateway, "hssk_duplicates_suppressed_total", transport="mllp") == 1
    first_client.transport.loseConnection()
    second_client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_resent_conflicting_message_is_a_repeat_of_its_own_ae_205_row(gateway):
    other_content = hl7("PID|1||079085000999^^^BCA^NI||Trần^Thị Hoa||19900101|F", control_id="REUSED2")
    client = await connect_mllp(gateway)
    await send_and_receive(client, hl7(control_id="REUSED2"))
    conflict = await send_and_receive(client, other_content)

    again = await send_and_receive(client, other_content)

    assert msa(again)[1:3] == msa(conflict)[1:3] == ["AE", "REUSED2"]
    assert err_segments(again) == err_segments(conflict)
    assert [(r["status"], r["repeat_count"]) for r in journal_rows(gateway)] == [("accepted", 0), ("error", 1)]
    assert metric_value(gateway, "hssk_duplicates_suppressed_total", transport="mllp") == 1
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_resend_with_only_a_new_message_time_msh7_is_a_repeat(gateway, plugin):
    payload = hl7(control_id="REBUILT1")
    client = await connect_mllp(gateway)
    first = await send_and_receive(client, payload)
    plugin.behaviour = broken  # would answer AE if the resend were decided afresh

    second = await send_and_receive(client, replace_msh_field(payload, 7, "20250315083507"))

    assert msa(first)[1:3] == msa(second)[1:3] == ["AA", "REBUILT1"]
    [row] = journal_rows(gateway)
    assert row["repeat_count"] == 1
    assert metric_value(gateway, "hssk_duplicates_suppressed_total", transport="mllp") == 1
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_resend_with_another_msh_field_changed_is_still_a_conflict(gateway):
    payload = hl7(control_id="REBUILT2")
    client = await connect_mllp(gateway)
    await send_and_receive(client, payload)

    second = await send_and_receive(client, replace_msh_field(payload, 11, "T"))

    assert msa(second)[1:3] == ["AE", "REBUILT2"]
    assert err_segments(second)[0][3] == "205^Duplicate key identifier^HL70357"
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_message_journaled_before_msh7_was_ignored_is_still_a_repeat_after_the_upgrade(tmp_path, plugin):
    import hashlib
    import sqlite3

    from gateway.core.store import CONTENT_DIGEST_STEP
    from tests.support import start_gateway

    payload = hl7(control_id="BEFORE1")
    gw = await start_gateway(tmp_path / "data", plugins=[plugin])
    client = await connect_mllp(gw)
    await send_and_receive(client, payload)
    client.transport.loseConnection()
    await gw.stop()
    # What the journal held before the upgrade: the digest of the whole decoded text, MSH-7 included.
    conn = sqlite3.connect(gw.config.database_path)
    with conn:
        conn.execute("UPDATE messages SET content_sha256 = ?",
                     (hashlib.sha256(payload.decode("utf-8").rstrip("\r").encode("utf-8")).hexdigest(),))
        conn.execute("DELETE FROM _migrations WHERE name = ?", (CONTENT_DIGEST_STEP,))
    conn.close()

    gw = await start_gateway(tmp_path / "data", plugins=[plugin])
    try:
        client = await connect_mllp(gw)
        plugin.behaviour = broken
        again = await send_and_receive(client, replace_msh_field(payload, 7, "20250315090000"))

        assert msa(again)[1:3] == ["AA", "BEFORE1"]
        assert [r["repeat_count"] for r in journal_rows(gw)] == [1]
        client.transport.loseConnection()
    finally:
        await gw.stop()
