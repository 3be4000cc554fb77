"""Per-connection flow control: a sender pipelining faster than the gateway decides is no longer
read once it has ``mllp.max_in_flight_per_connection`` messages unanswered, so its backlog waits
in its own socket, not in the queue every other connection shares."""
from __future__ import annotations

import time

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import LoopingCall

from gateway.formats.framing import wrap
from tests.support import TestPlugin, connect_mllp, hl7, metric_value, msa_codes, start_gateway

FLOOD = 2000
STEADY = 20
#: The one-at-a-time sender's p99 must stay under this while the other connection floods. With
#: the flood's whole backlog queued ahead of it (no flow control) it waits for hundreds of
#: decisions and commits, far above this; behind at most a few it waits a few ms.
P99_BOUND_SECONDS = 0.15


@pytest_twisted.ensureDeferred
async def test_flooding_connection_is_paused_and_does_not_raise_another_connections_p99(tmp_path):
    bound = 4
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()],
                             **{"mllp.max_in_flight_per_connection": bound})
    highest_in_flight = 0

    def sample() -> None:
        nonlocal highest_in_flight
        highest_in_flight = max(highest_in_flight, gw.intake.in_flight)

    sampler = LoopingCall(sample)
    sampler.clock = reactor
    try:
        flood, steady = await connect_mllp(gw), await connect_mllp(gw)
        flood_ids = [f"FLOOD{n:04d}" for n in range(FLOOD)]
        sampler.start(0.002)
        flood.transport.write(b"".join(wrap(hl7(control_id=c)) for c in flood_ids))

        latencies = []
        for n in range(STEADY):
            started = time.perf_counter()
            steady.send(hl7(control_id=f"STEADY{n:02d}"))
            await steady.wait_frames(n + 1)
            latencies.append(time.perf_counter() - started)
        flood_acks = await flood.wait_frames(FLOOD, timeout=60)
        sampler.stop()

        assert msa_codes(steady.frames) == [("AA", f"STEADY{n:02d}") for n in range(STEADY)]
        assert msa_codes(flood_acks) == [("AA", c) for c in flood_ids]
        assert sorted(latencies)[int(0.99 * STEADY)] < P99_BOUND_SECONDS, latencies
        assert highest_in_flight <= bound + 1  # the flood's bound plus the steady sender's one
        assert metric_value(gw, "hssk_connections_paused_total", transport="mllp") >= 1
        flood.transport.loseConnection()
        steady.transport.loseConnection()
    finally:
        if sampler.running:
            sampler.stop()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_frames_waiting_behind_the_bound_are_answered_in_order_after_a_half_close(tmp_path):
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()],
                             **{"mllp.max_in_flight_per_connection": 1})
    try:
        client = await connect_mllp(gw)
        ids = [f"HALF{n:02d}" for n in range(30)]

        client.transport.write(b"".join(wrap(hl7(control_id=c)) for c in ids))
        client.transport.loseWriteConnection()
        await client.closed

        assert msa_codes(client.frames) == [("AA", c) for c in ids]
    finally:
        await gw.stop()
