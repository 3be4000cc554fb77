"""Which records are one person's for per-person delivery order: keyed on the identifier that
changes least, so a renewed insurance card does not make the same person a stranger."""
from __future__ import annotations

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


@pytest_twisted.ensureDeferred
async def test_a_renewed_card_with_the_same_bhxh_number_keeps_the_persons_ordering_key(gateway):
    await send_all(gateway, {
        "OLDCARD1": "PID|1||DN4797912345678^^^BHXH^HC||Nguyễn^Văn An||19850412|M",
        "NEWCARD1": "PID|1||HC4797912345678^^^BHXH^HC||Nguyễn^Văn An||19850412|M",
        "NUMBER1": "PID|1||7912345678^^^BHXH^SS||Nguyễn^Văn An||19850412|M",
    })

    keys = ordering_keys(gateway)
    assert keys["OLDCARD1"] == keys["NEWCARD1"] == keys["NUMBER1"]


@pytest_twisted.ensureDeferred
async def test_the_cccd_outranks_the_bhxh_number_and_the_card(gateway):
    await send_all(gateway, {
        "WITHCARD1": "PID|1||079085000123^^^BCA^NI~DN4797912345678^^^BHXH^HC||Nguyễn^Văn An||19850412|M",
        "OTHERCARD1": "PID|1||079085000123^^^BCA^NI~GD4790000000001^^^BHXH^HC||Nguyễn^Văn An||19850412|M",
        "ALONE1": "PID|1||079085000123^^^BCA^NI||Nguyễn^Văn An||19850412|M",
    })

    keys = ordering_keys(gateway)
    assert keys["WITHCARD1"] == keys["OTHERCARD1"] == keys["ALONE1"]
