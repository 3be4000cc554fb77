"""Bounds on the MLLP listener: frame size, connection count, idle time. At a bound the sender
hears AR with the reason (when its MSH is readable) and the connection is closed."""
from __future__ import annotations

import base64
import os

import pytest_twisted
from twisted.internet.task import Clock

from gateway.formats.framing import wrap
from gateway.transports.mllp import REFUSAL_GRACE_SECONDS
from tests.support import (TestPlugin, connect_mllp, err_segments, hl7, journal_rows, metric_value, msa_codes,
                           start_gateway, wait_until)

REFUSED = "hssk_connections_refused_total"
MiB = 1024 * 1024


def oru_with_pdf(control_id: str, pdf_bytes: int) -> bytes:
    """An ORU^R01 whose OBX-5 is an ED value carrying ``pdf_bytes`` of base64-encoded report."""
    report = base64.b64encode(os.urandom(pdf_bytes)).decode("ascii")
    return hl7("PID|1||079085000123^^^BCA^NI||Nguyễn^Văn Thử||19850412|M",
               "OBR|1|CD1|XN1|PDF^Kết quả xét nghiệm^L",
               f"OBX|1|ED|PDF^Kết quả xét nghiệm^L||^AP^PDF^Base64^{report}||||||F",
               control_id=control_id, message_type="ORU^R01^ORU_R01")


async def start_limited(tmp_path, clock=None, **limits):
    return await start_gateway(tmp_path / "data", plugins=[TestPlugin()], clock=clock, **limits)


@pytest_twisted.ensureDeferred
async def test_two_mib_oru_passes_default_limits_and_gets_aa(gateway):
    client = await connect_mllp(gateway)
    message = oru_with_pdf("BIGORU1", 3 * MiB // 2)
    assert len(message) > 2 * MiB

    client.send(message)

    [ack] = await client.wait_frames(1, timeout=20)
    assert msa_codes([ack]) == [("AA", "BIGORU1")]
    [row] = journal_rows(gateway, control_id="BIGORU1")
    assert row["raw"] == message
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_frame_over_max_frame_bytes_gets_ar_207_then_the_connection_is_closed(tmp_path):
    gw = await start_limited(tmp_path, **{"mllp.max_frame_bytes": 1000})
    try:
        client = await connect_mllp(gw)
        message = hl7("PID|1||079085000123^^^BCA^NI||Nguyễn^Văn Thử||19850412|M", "NTE|1||" + "x" * 2000,
                      control_id="TOOBIG1")

        client.send(message)
        await client.closed

        [ack] = client.frames
        assert msa_codes([ack]) == [("AR", "TOOBIG1")]
        [err] = err_segments(ack)
        assert err[3].split("^")[0] == "207"
        assert "mllp.max_frame_bytes" in err[8]
        assert metric_value(gw, "hssk_mllp_framing_violations_total", kind="frame_too_large") == 1
        assert metric_value(gw, REFUSED, transport="mllp", reason="frame_too_large") == 1
        assert journal_rows(gw) == []
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_frame_of_max_frame_bytes_exactly_is_accepted(tmp_path):
    message = hl7(control_id="EXACT1")
    gw = await start_limited(tmp_path, **{"mllp.max_frame_bytes": len(message)})
    try:
        client = await connect_mllp(gw)

        client.send(message)

        [ack] = await client.wait_frames(1)
        assert msa_codes([ack]) == [("AA", "EXACT1")]
        client.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_oversized_frame_after_a_good_one_is_refused_only_after_the_good_one_is_answered(tmp_path):
    gw = await start_limited(tmp_path, **{"mllp.max_frame_bytes": 1000})
    try:
        client = await connect_mllp(gw)
        big = hl7("NTE|1||" + "x" * 2000, control_id="TOOBIG2")

        client.transport.write(wrap(hl7(control_id="GOOD1")) + wrap(big))
        await client.closed

        # GOOD1 was taken in before the refusal: its AA is owed, and answers go back in arrival order.
        assert msa_codes(client.frames) == [("AA", "GOOD1"), ("AR", "TOOBIG2")]
        assert [row["control_id"] for row in journal_rows(gw)] == ["GOOD1"]
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_connection_over_max_connections_gets_ar_then_close_and_the_first_keeps_working(tmp_path):
    gw = await start_limited(tmp_path, **{"mllp.max_connections": 1})
    try:
        first = await connect_mllp(gw)
        first.send(hl7(control_id="FIRST1"))
        assert msa_codes(await first.wait_frames(1)) == [("AA", "FIRST1")]

        second = await connect_mllp(gw)
        second.send(hl7(control_id="SECOND1"))
        await second.closed

        [refusal] = second.frames
        assert msa_codes([refusal]) == [("AR", "SECOND1")]
        [err] = err_segments(refusal)
        assert err[3].split("^")[0] == "207"
        assert "mllp.max_connections" in err[8]
        assert metric_value(gw, REFUSED, transport="mllp", reason="max_connections") == 1
        assert [row["control_id"] for row in journal_rows(gw)] == ["FIRST1"]

        first.send(hl7(control_id="FIRST2"))
        frames = await first.wait_frames(2)
        assert msa_codes(frames) == [("AA", "FIRST1"), ("AA", "FIRST2")]
        first.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_connection_over_max_connections_that_sends_nothing_is_closed_after_the_grace(tmp_path):
    clock = Clock()
    gw = await start_limited(tmp_path, clock=clock, **{"mllp.max_connections": 1, "mllp.idle_timeout_seconds": 300})
    try:
        first = await connect_mllp(gw)
        second = await connect_mllp(gw)
        await wait_until(lambda: (len(gw.mllp_factory.connections), len(gw.mllp_factory.refusing)) == (1, 1),
                         what="both connections seen")

        clock.advance(REFUSAL_GRACE_SECONDS - 1)
        assert not second.closed.called
        clock.advance(1)
        await second.closed

        assert second.frames == [] and not first.closed.called
        assert metric_value(gw, REFUSED, transport="mllp", reason="max_connections") == 1
        first.transport.loseConnection()
    finally:
        await gw.stop()


def cut_after_msh(message: bytes) -> bytes:
    """The message cut short a few bytes into the segment after MSH."""
    return message[:message.index(b"\r") + 8]


def server_side(gw):
    [protocol] = gw.mllp_factory.connections
    return protocol


@pytest_twisted.ensureDeferred
async def test_idle_timeout_with_a_partial_frame_answers_ar_then_closes(tmp_path):
    clock = Clock()
    gw = await start_limited(tmp_path, clock=clock, **{"mllp.idle_timeout_seconds": 30})
    try:
        client = await connect_mllp(gw)
        partial = cut_after_msh(hl7(control_id="HALF1"))
        # One write: once FULL1 is answered the server has read the partial frame behind it too.
        client.transport.write(wrap(hl7(control_id="FULL1")) + b"\x0b" + partial)
        assert msa_codes(await client.wait_frames(1)) == [("AA", "FULL1")]
        assert server_side(gw).decoder.pending == partial

        clock.advance(30)
        await client.closed

        assert msa_codes(client.frames) == [("AA", "FULL1"), ("AR", "HALF1")]
        [err] = err_segments(client.frames[1])
        assert err[3].split("^")[0] == "207"
        assert "mllp.idle_timeout_seconds" in err[8]
        assert metric_value(gw, "hssk_mllp_framing_violations_total", kind="incomplete_frame_at_timeout") == 1
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_idle_timeout_with_nothing_pending_just_closes(tmp_path):
    clock = Clock()
    gw = await start_limited(tmp_path, clock=clock, **{"mllp.idle_timeout_seconds": 30})
    try:
        client = await connect_mllp(gw)
        client.send(hl7(control_id="IDLE1"))
        assert msa_codes(await client.wait_frames(1)) == [("AA", "IDLE1")]
        server = server_side(gw)

        clock.advance(29)
        assert not server.transport.disconnecting
        clock.advance(1)
        await client.closed

        assert msa_codes(client.frames) == [("AA", "IDLE1")]
        assert metric_value(gw, "hssk_mllp_framing_violations_total", kind="incomplete_frame_at_timeout") == 0
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_idle_timeout_with_a_partial_frame_counts_one_refusal(tmp_path):
    clock = Clock()
    gw = await start_limited(tmp_path, clock=clock, **{"mllp.idle_timeout_seconds": 30})
    try:
        client = await connect_mllp(gw)
        client.transport.write(wrap(hl7(control_id="FULL2")) + b"\x0b" + cut_after_msh(hl7(control_id="HALF2")))
        await client.wait_frames(1)
        assert server_side(gw).decoder.pending

        clock.advance(30)
        await client.closed

        assert metric_value(gw, REFUSED, transport="mllp", reason="idle_timeout") == 1
    finally:
        await gw.stop()


# --- issue 23, item 4: strangers and one greedy peer cannot lock clients out ----------------------


def loopback_client(**limits) -> dict[str, object]:
    """A client known by 127.0.0.1; every other loopback address is a stranger."""
    return {"auth.required": True, "clients.his.facilities": ["79001"], "clients.his.addresses": ["127.0.0.1/32"],
            **limits}


@pytest_twisted.ensureDeferred
async def test_idle_strangers_do_not_take_the_places_of_clients(tmp_path):
    gw = await start_limited(tmp_path, **loopback_client(**{"mllp.max_connections": 4}))
    try:
        strangers = [await connect_mllp(gw, source="127.0.0.2") for _ in range(12)]
        await wait_until(lambda: len(gw.mllp_factory.refusing) == 4, what="the strangers seen")
        client = await connect_mllp(gw)
        client.send(hl7(control_id="CLIENT1"))

        assert msa_codes(await client.wait_frames(1)) == [("AA", "CLIENT1")]
        closed_at_once = [s for s in strangers if s.closed.called]
        assert len(closed_at_once) == 8 and all(s.frames == [] for s in closed_at_once)
        assert metric_value(gw, REFUSED, transport="mllp", reason="max_connections") == 8
        client.transport.loseConnection()
        for stranger in strangers:
            stranger.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_one_address_holds_at_most_max_connections_per_peer(tmp_path):
    gw = await start_limited(tmp_path, **{"mllp.max_connections_per_peer": 3})
    try:
        greedy = [await connect_mllp(gw, source="127.0.0.3") for _ in range(4)]
        for n, connection in enumerate(greedy):
            connection.send(hl7(control_id=f"GREEDY{n}"))
        await greedy[3].closed
        other = await connect_mllp(gw, source="127.0.0.4")
        other.send(hl7(control_id="OTHER1"))

        assert [msa_codes(await c.wait_frames(1)) for c in greedy[:3]] == [[("AA", f"GREEDY{n}")] for n in range(3)]
        [refusal] = greedy[3].frames
        assert msa_codes([refusal]) == [("AR", "GREEDY3")]
        assert "127.0.0.3 already has 3 connections" in err_segments(refusal)[0][8]
        assert "mllp.max_connections_per_peer" in err_segments(refusal)[0][8]
        assert metric_value(gw, REFUSED, transport="mllp", reason="max_connections_per_peer") == 1
        assert msa_codes(await other.wait_frames(1)) == [("AA", "OTHER1")]
        for connection in (*greedy[:3], other):
            connection.transport.loseConnection()
    finally:
        await gw.stop()
