"""What comes back on an MLLP connection: no answer to an ACK, and the accept/application ACKs
that MSH-15/16 ask for. Answers in arrival order: ``tests/core/test_arrival_order.py``."""
from __future__ import annotations

import pytest
import pytest_twisted

from tests.support import connect_mllp, hl7, journal_rows, msa_codes


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
