"""``hssk-gateway backup DEST`` of a gateway taking messages on four connections: every message
acknowledged before the backup began is in the copy, the copy restores into a new data dir, and a
gateway started there has the messages (and answers a resend from the journal)."""
import os
import shutil
import sqlite3
import stat

import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from gateway.cli import main
from gateway.core.store import Store
from tests.support import TestPlugin, connect_mllp, hl7, msa, send_and_receive, start_gateway, wait_until


async def sender(gateway, prefix: str, count: int, acked: list[str]) -> None:
    client = await connect_mllp(gateway)
    for n in range(count):
        control_id = f"{prefix}-{n}"
        assert msa(await send_and_receive(client, hl7(control_id=control_id)))[1] == "AA"
        acked.append(control_id)
    client.transport.loseConnection()
    await client.closed


def control_ids(database) -> set[str]:
    conn = sqlite3.connect(database)
    try:
        return {c for (c,) in conn.execute("SELECT control_id FROM messages")}
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_a_backup_under_load_restores_into_a_new_data_dir_with_the_messages(tmp_path, capsys):
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin()])
    acked: list[str] = []
    try:
        await sender(gateway, "BEFORE", 20, acked)
        load = defer.gatherResults([defer.ensureDeferred(sender(gateway, f"LOAD{i}", 40, acked)) for i in range(4)])
        await wait_until(lambda: len(acked) >= 60, what="the load under way")
        before_backup = set(acked)
        status = await deferToThread(main, ["backup", str(tmp_path / "backup"), "--data-dir", str(tmp_path / "data")])
        await load
    finally:
        await gateway.stop()
    backup = tmp_path / "backup"
    copied = control_ids(backup / "gateway.db")

    assert status == 0 and "backed up" in capsys.readouterr().out
    assert before_backup <= copied <= set(acked)
    assert len(before_backup) < len(acked) == 180  # the backup began while the senders were still sending
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(backup / "gateway.db").st_mode) == 0o600

    restored = tmp_path / "restored"
    restored.mkdir(mode=0o700)
    for name in ("gateway.db", "gateway.db.id"):
        shutil.copy2(backup / name, restored / name)
    again = await start_gateway(restored, plugins=[TestPlugin()])
    try:
        client = await connect_mllp(again)
        resend = await send_and_receive(client, hl7(control_id="BEFORE-3"))
        client.transport.loseConnection()
        await client.closed
        conn = sqlite3.connect(again.store.path)
        repeats = conn.execute("SELECT repeat_count FROM messages WHERE control_id = 'BEFORE-3'").fetchall()
        conn.close()
    finally:
        await again.stop()
    assert msa(resend)[1] == "AA" and repeats == [(1,)]  # the journal's answer: a repeat, not a new message
    assert control_ids(restored / "gateway.db") == copied


def test_a_backup_refuses_a_directory_that_holds_a_journal(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    Store(data / "gateway.db").migrate()

    assert main(["backup", str(data), "--data-dir", str(data)]) == 1
    assert "already holds a journal" in capsys.readouterr().err
