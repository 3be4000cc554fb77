"""Which records are one person's for per-person delivery order: keyed on the identifier that
changes least, so a renewed insurance card does not make the same person a stranger."""
from __future__ import annotations

import pytest
import pytest_twisted

from tests.support import TestPlugin, connect_mllp, hl7, msa, select_rows, send_and_receive, start_gateway


@pytest_twisted.async_yield_fixture
async def gateway(tmp_path):
    """A gateway whose file destination queues every accepted record set."""
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], **{
        "destinations.files.kind": "file", "destinations.files.directory": "files"})
    yield gw
    await gw.stop()


def ordering_keys(gateway) -> dict[str, str]:
    """control id → the ordering key of its outbox row."""
    rows = select_rows(gateway, "SELECT m.control_id, o.ordering_key FROM outbox o JOIN messages m "
                                "ON m.id = o.message_id", {}, alias="o.")
    return {row["control_id"]: row["ordering_key"] for row in rows}


async def send_all(gateway, messages: dict[str, str]) -> None:
    client = await connect_mllp(gateway)
    for control_id, pid in messages.items():
        assert msa(await send_and_receive(client, hl7(pid, control_id=control_id)))[1] == "AA"
    client.transport.loseConnection()


@pytest.mark.parametrize("messages", [
    pytest.param({"OLDCARD1": "PID|1||DN4797912345678^^^BHXH^HC||Nguyễn^Văn An||19850412|M",
                  "NEWCARD1": "PID|1||HC4797912345678^^^BHXH^HC||Nguyễn^Văn An||19850412|M",
                  "NUMBER1": "PID|1||7912345678^^^BHXH^SS||Nguyễn^Văn An||19850412|M"},
                 id="a renewed card with the same BHXH number keeps the key"),
    pytest.param({"WITHCARD1": "PID|1||079085000123^^^BCA^NI~DN4797912345678^^^BHXH^HC||Nguyễn^Văn An||19850412|M",
                  "OTHERCARD1": "PID|1||079085000123^^^BCA^NI~GD4790000000001^^^BHXH^HC||Nguyễn^Văn An||19850412|M",
                  "ALONE1": "PID|1||079085000123^^^BCA^NI||Nguyễn^Văn An||19850412|M"},
                 id="the CCCD outranks the BHXH number and the card"),
])
@pytest_twisted.ensureDeferred
async def test_one_persons_records_share_an_ordering_key_whichever_card_they_carry(gateway, messages):
    await send_all(gateway, messages)

    assert len(set(ordering_keys(gateway).values())) == 1
