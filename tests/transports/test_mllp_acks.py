"""What comes back on an MLLP connection: answers in arrival order, no answer to an ACK, and the
accept/application ACKs that MSH-15/16 ask for."""
from __future__ import annotations

import threading

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from gateway.transports.framing import wrap
from tests.support import TestPlugin, connect_mllp, hl7, journal_rows, msa_codes, standard_records, start_gateway


@pytest_twisted.ensureDeferred
async def test_acks_follow_arrival_order_when_the_second_message_commits_first(tmp_path):
    plugin = TestPlugin()
    release_slow = threading.Event()
    fast_decided: Deferred = Deferred()

    def behaviour(message):  # runs on a pipeline worker thread, never on the reactor
        if message.control_id == "SLOW1":
            release_slow.wait(timeout=10)
        elif message.control_id == "FAST1":
            reactor.callFromThread(fast_decided.callback, None)
        return standard_records(message)

    plugin.behaviour = behaviour
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **{"pipeline.workers": 2})
    try:
        client = await connect_mllp(gw)
        client.transport.write(wrap(hl7(control_id="SLOW1")) + wrap(hl7(control_id="FAST1")))
        await fast_decided
        # PROBE1 reaches the free worker after FAST1 went to the journal writer, so its AA means
        # FAST1 is committed and its answer has been handed to the connection.
        probe = await connect_mllp(gw)
        probe.send(hl7(control_id="PROBE1"))
        assert msa_codes(await probe.wait_frames(1)) == [("AA", "PROBE1")]
        assert [row["control_id"] for row in journal_rows(gw)] == ["FAST1", "PROBE1"]
        assert client.frames == []

        release_slow.set()

        frames = await client.wait_frames(2)
        assert msa_codes(frames) == [("AA", "SLOW1"), ("AA", "FAST1")]
        client.transport.loseConnection()
        probe.transport.loseConnection()
    finally:
        release_slow.set()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_inbound_ack_gets_no_reply_and_is_journaled_as_ignored(gateway):
    client = await connect_mllp(gateway)

    client.send(hl7("MSA|AA|OUR0001", message_type="ACK", control_id="THEIRACK1"))
    client.send(hl7(control_id="AFTERACK1"))

    # Answers keep arrival order, so AFTERACK1's answer comes only after THEIRACK1 is settled.
    await client.wait_frames(1)
    assert msa_codes(client.frames) == [("AA", "AFTERACK1")]
    [row] = journal_rows(gateway, control_id="THEIRACK1")
    assert (row["status"], row["ack_code"]) == ("ignored", None)
    client.transport.loseConnection()


@pytest.mark.parametrize(("accept_ack", "app_ack", "expected"), [
    ("AL", "NE", ["CA"]),
    ("NE", "AL", ["AA"]),
    ("ER", "AL", ["AA"]),
    ("AL", "AL", ["CA", "AA"]),
    ("NE", "NE", []),
])
@pytest_twisted.ensureDeferred
async def test_enhanced_mode_sends_exactly_the_acks_msh15_and_msh16_ask_for(gateway, accept_ack, app_ack, expected):
    client = await connect_mllp(gateway)

    client.send(hl7(control_id="ENH1", accept_ack=accept_ack, app_ack=app_ack))
    client.send(hl7(control_id="SENTINEL1"))

    # The original-mode sentinel is answered after every ACK owed to ENH1, so whatever precedes it
    # is all ENH1 will ever get.
    frames = await client.wait_frames(len(expected) + 1)
    assert msa_codes(frames) == [(code, "ENH1") for code in expected] + [("AA", "SENTINEL1")]
    client.transport.loseConnection()
