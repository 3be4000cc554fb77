"""``hssk_ack_profile``: a plugin gives a message's ACK extra MSH fields and a rule mapping issue
severities to AA/AE/AR; the gateway applies it wherever that message's ACK is built (the
worker, a pipeline child, the journal writer answering a resend) and journals the code it gives.

The plugin is ``tests/hooks/iis_vxu.py`` (CDC IIS: Z22 asked, Z23 answered, warnings AE);
nothing under ``gateway/`` knows it."""
from __future__ import annotations

import pytest
import pytest_twisted

from gateway.core.ack import build_ack
from gateway.formats.hl7v2 import Hl7Message
from gateway.plugin import AckProfile
from tests.core.fault_plugin import start_isolated
from tests.hooks import iis_vxu
from tests.hooks.support import installed
from tests.support import (TestPlugin, connect_mllp, err_segments, hl7, journal_rows, metric_value, msa, outbox_rows,
                           replace_msh_field, sample, segments_of, start_gateway)

FILES = {"files": {"kind": "file", "directory": "files"}}


def vxu(control_id: str, lot_number: bool = True, profile: str = "Z22^CDCPHINVS") -> bytes:
    """The shared VXU^V04 sample (MSH-15 ER, MSH-16 AL), its first dose without RXA-15 when asked."""
    raw = replace_msh_field(replace_msh_field(sample("vxu_v04.hl7"), 10, control_id), 21, profile)
    return raw if lot_number else raw.replace(b"|HB250101|", b"||")


def msh(frame: bytes) -> list[str]:
    return segments_of(frame)["MSH"][0]


@pytest_twisted.async_yield_fixture
async def gateway(tmp_path):
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), iis_vxu], destinations=FILES)
    yield gw
    await gw.stop()


async def exchange(gateway, payload: bytes, acks: int) -> list[bytes]:
    client = await connect_mllp(gateway)
    client.send(payload)
    frames = await client.wait_frames(acks)
    client.transport.loseConnection()
    return frames


@pytest_twisted.ensureDeferred
async def test_a_warning_under_the_z23_profile_is_answered_ae_naming_the_profile_and_queues_nothing(gateway):
    accept, application = await exchange(gateway, vxu("VXU1", lot_number=False), acks=2)

    assert [msa(f)[1] for f in (accept, application)] == ["CE", "AE"]
    assert [msh(f)[20] for f in (accept, application)] == ["Z23^CDCPHINVS"] * 2
    [err] = err_segments(application)
    assert (err[2], err[4], err[8]) == ("RXA^1^15", "W", "RXA-15: dose 1 has no lot number")
    [row] = journal_rows(gateway, control_id="VXU1")
    assert (row["ack_code"], row["status"], row["acks_sent"]) == ("AE", "error", "CE,AE")
    assert outbox_rows(gateway) == []


@pytest_twisted.ensureDeferred
async def test_a_clean_vxu_is_accepted_under_the_profile_and_queued(gateway):
    [application] = await exchange(gateway, vxu("VXU2"), acks=1)

    assert (msa(application)[1], msh(application)[20]) == ("AA", "Z23^CDCPHINVS")
    assert [r["destination"] for r in outbox_rows(gateway)] == ["files"]


@pytest_twisted.ensureDeferred
async def test_a_vxu_that_asks_for_no_profile_and_other_messages_get_the_base_ack(gateway):
    [unprofiled] = await exchange(gateway, vxu("VXU3", lot_number=False, profile=""), acks=1)
    [adt] = await exchange(gateway, hl7(control_id="ADT1"), acks=1)

    assert msa(unprofiled)[1] == "AA" and len(msh(unprofiled)) == 18
    assert msa(adt)[1] == "AA" and len(msh(adt)) == 18


@pytest_twisted.ensureDeferred
async def test_a_resend_gets_the_stored_answer_in_the_profiles_ack(gateway):
    first = await exchange(gateway, vxu("VXU4", lot_number=False), acks=2)
    again = await exchange(gateway, vxu("VXU4", lot_number=False), acks=2)

    assert [(msa(f)[1], msh(f)[20]) for f in again] == [(msa(f)[1], msh(f)[20]) for f in first]
    assert metric_value(gateway, "hssk_duplicates_suppressed_total", transport="mllp") == 1


@pytest_twisted.ensureDeferred
async def test_a_pipeline_child_process_applies_the_profile_too(tmp_path, monkeypatch):
    env = installed(tmp_path, {"iis_vxu": "tests.hooks.iis_vxu"})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    gw = await start_isolated(tmp_path, destinations=FILES)
    try:
        accept, application = await exchange(gw, vxu("VXU5", lot_number=False), acks=2)
    finally:
        await gw.stop()

    assert [(msa(f)[1], msh(f)[20]) for f in (accept, application)] == [("CE", "Z23^CDCPHINVS"),
                                                                         ("AE", "Z23^CDCPHINVS")]
    assert journal_rows(gw, control_id="VXU5")[0]["plugin"] == "iis_vxu"


class BrokenProfile:
    def hssk_ack_profile(self, message, envelope):
        raise KeyError("MSH-21")


@pytest_twisted.ensureDeferred
async def test_a_profile_hook_that_raises_costs_the_message_ae_207(tmp_path):
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), BrokenProfile()], destinations=FILES)
    try:
        [ack] = await exchange(gw, hl7(control_id="BROKEN1"), acks=1)
    finally:
        await gw.stop()

    assert msa(ack)[1] == "AE"
    assert err_segments(ack)[0][3] == "207^Application internal error^HL70357"
    assert metric_value(gw, "hssk_plugin_exceptions_total", plugin="test_his", stage="ack_profile") == 1
    assert outbox_rows(gw) == []


def test_profile_fields_are_written_with_the_senders_encoding_characters():
    message = Hl7Message("MSH|$~\\&|APP|FAC|GW|SYT|20250101||ADT$A04|C1|P|2.5\r", "UTF-8")

    ack = build_ack(message, "AA", (), 0.0, profile=AckProfile(msh_fields={21: "Z23^CDCPHINVS~X^Y"}))

    assert ack.split("\r")[0].split("|")[20] == "Z23$CDCPHINVS~X$Y"


@pytest.mark.parametrize("arguments,says", [
    ({"msh_fields": {10: "X"}}, "MSH-10 cannot be set by a profile"),
    ({"msh_fields": {18: "UNICODE UTF-8"}}, "MSH-18 cannot be set by a profile"),
    ({"msh_fields": {21: "A|B"}}, "MSH-21: a profile's value is text without '|'"),
    ({"severity_codes": {"E": "AA"}}, "maps E, W or I to AE or AR"),
])
def test_a_profile_that_would_break_the_ack_is_refused(arguments, says):
    with pytest.raises(ValueError, match=says):
        AckProfile(**arguments)
