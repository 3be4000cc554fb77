import pytest_twisted

from tests.support import connect_mllp, hl7, segments_of


@pytest_twisted.ensureDeferred
async def test_accepted_message_gets_aa_after_commit(gateway):
    client = await connect_mllp(gateway)
    client.send(hl7(control_id="SMOKE1"))
    [ack] = await client.wait_frames(1)
    msa = segments_of(ack)["MSA"][0]
    assert msa[1:3] == ["AA", "SMOKE1"]
    client.transport.loseConnection()
