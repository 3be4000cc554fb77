"""A sender that half-closes after its last frame (``nc -q1``, ``shutdown(SHUT_WR)``) still reads:
every message it sent is answered before the gateway closes the connection (issue 15, item 6)."""
from __future__ import annotations

import pytest_twisted

from gateway.formats.framing import wrap
from tests.support import connect_mllp, err_segments, hl7, journal_rows, metric_value, msa_codes


@pytest_twisted.ensureDeferred
async def test_sender_that_half_closes_after_its_last_frame_gets_every_ack_then_the_close(gateway):
    client = await connect_mllp(gateway)
    ids = ["HALFCLOSE1", "HALFCLOSE2", "HALFCLOSE3"]

    client.transport.write(b"".join(wrap(hl7(control_id=i)) for i in ids))
    client.transport.loseWriteConnection()
    await client.closed

    assert msa_codes(client.frames) == [("AA", i) for i in ids]
    assert [row["control_id"] for row in journal_rows(gateway)] == ids


@pytest_twisted.ensureDeferred
async def test_half_close_with_nothing_owed_closes_the_connection_at_once(gateway):
    client = await connect_mllp(gateway)

    client.transport.loseWriteConnection()
    await client.closed

    assert client.frames == []


@pytest_twisted.ensureDeferred
async def test_half_close_inside_a_frame_answers_the_whole_frames_then_ar_for_the_cut_one(gateway):
    client = await connect_mllp(gateway)
    cut = hl7(control_id="CUT1")

    client.transport.write(wrap(hl7(control_id="WHOLE1")) + b"\x0b" + cut[:cut.index(b"\r")])
    client.transport.loseWriteConnection()
    await client.closed

    assert msa_codes(client.frames) == [("AA", "WHOLE1"), ("AR", "CUT1")]
    [err] = err_segments(client.frames[1])
    assert "closed its side" in err[8]
    assert metric_value(gateway, "hssk_mllp_framing_violations_total", kind="incomplete_frame_at_close") == 1
    assert metric_value(gateway, "hssk_connections_refused_total", transport="mllp", reason="half_closed") == 1
    assert [row["control_id"] for row in journal_rows(gateway)] == ["WHOLE1"]
