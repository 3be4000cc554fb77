"""Replay: a journaled message's bytes go through today's pipeline again, by the admin API of a
running gateway or by the CLI. The new decision is a new journal row linked to the first attempt,
routed rows are queued once, the sender hears nothing, and a later resend gets the latest answer."""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime

import pytest_twisted
from twisted.internet.threads import deferToThread

from gateway.model.outcome import ContentError, Issue
from tests.support import (REPO, TestPlugin, connect_mllp, err_segments, hl7, http_request, journal_rows, msa,
                           msa_codes, outbox_rows, plugin_sample, run_cli, send_and_receive, standard_records,
                           start_gateway, wait_until)
from tests.conftest import backend_settings
from tests.transports.test_xml_intake import FORM, TestDocumentPlugin, noi_tru, portal_form

FILES = {"destinations.files.kind": "file", "destinations.files.directory": "files"}


def broken(message):
    raise RuntimeError("the plugin has a bug")


def missing_cccd(message):
    raise ContentError([Issue(101, "PID-3: CCCD is required", "PID^1^3")])


async def replay(gateway, query: str):
    return await http_request(gateway, "POST", f"/admin/messages/{query}")


async def failed_then_fixed(gateway, control_id: str, behaviour=broken):
    """Send one message the plugin fails with ``behaviour`` (AE), then fix the plugin; returns
    the sender's connection and the message's journal id."""
    client = await connect_mllp(gateway)
    gateway.test_plugin.behaviour = behaviour
    assert msa(await send_and_receive(client, hl7(control_id=control_id)))[1] == "AE"
    gateway.test_plugin.behaviour = None
    return client, journal_rows(gateway, control_id=control_id)[0]["id"]


@pytest_twisted.async_yield_fixture(params=["sqlite", "postgresql"])
async def gw(tmp_path, request, monkeypatch):
    """A gateway with the test plugin, once on each journal backend: a replay reads and writes the
    one journal every node shares."""
    plugin = TestPlugin()
    gateway = await start_gateway(tmp_path / "data", plugins=[plugin], **FILES,
                                  **backend_settings(request.param, request, monkeypatch))
    gateway.test_plugin = plugin
    yield gateway
    await gateway.stop()


@pytest_twisted.ensureDeferred
async def test_a_message_one_node_answered_ae_is_replayed_by_the_other_and_delivered_once(tmp_path, request,
                                                                                         monkeypatch):
    """Two nodes on one PostgreSQL journal: node B's admin API replays what node A journaled."""
    plugins = TestPlugin(), TestPlugin()
    a = await start_gateway(tmp_path / "a", plugins=[plugins[0]], **FILES,
                            **backend_settings("postgresql", request, monkeypatch, node="node-a"))
    b = await start_gateway(tmp_path / "b", plugins=[plugins[1]], **FILES,
                            **backend_settings("postgresql", request, monkeypatch, node="node-b"))
    try:
        a.test_plugin = plugins[0]
        client, first_id = await failed_then_fixed(a, "ACROSS1")

        response = await replay(b, f"{first_id}/replay")

        assert response.code == 200, response.body
        [replayed] = response.json()["replayed"]
        assert (replayed["was"], replayed["ack_code"], replayed["queued"]) == ("AE", "AA", 1)
        assert [r["replay_of"] for r in journal_rows(a)] == [None, first_id]
        await wait_until(lambda: [r["state"] for r in outbox_rows(a)] == ["delivered"], what="one delivery")
        assert (await replay(b, f"{first_id}/replay")).json()["replayed"][0]["queued"] == 0
        client.transport.loseConnection()
    finally:
        await b.stop()
        await a.stop()


@pytest_twisted.ensureDeferred
async def test_a_replayed_message_is_decided_again_journaled_as_a_new_attempt_and_queued_without_answering(gw):
    client, _ = await failed_then_fixed(gw, "FIXME1")
    [first] = journal_rows(gw)

    response = await replay(gw, f"{first['id']}/replay")

    assert response.code == 200, response.body
    [replayed] = response.json()["replayed"]
    later = journal_rows(gw)[1]
    assert replayed == {"id": first["id"], "control_id": "FIXME1", "sender": "TEST_HIS|79001", "was": "AE",
                        "ack_code": "AA", "status": "accepted", "errors": [], "message_id": later["id"],
                        "queued": 1, "skipped": None}
    assert (later["replay_of"], later["status"], later["raw"], later["acks_sent"]) == (
        first["id"], "accepted", first["raw"], "")
    assert [r["message_id"] for r in outbox_rows(gw)] == [later["id"]]
    await wait_until(lambda: [r["state"] for r in outbox_rows(gw)] == ["delivered"], what="delivery")
    # The sender was not answered again: the next frame on its connection answers its next message.
    assert msa_codes(await client.wait_frames(1)) == [("AE", "FIXME1")]
    assert msa(await send_and_receive(client, hl7(control_id="NEXT1")))[1:3] == ["AA", "NEXT1"]
    assert len(client.frames) == 2
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_replaying_again_queues_nothing_twice_and_a_resend_gets_the_latest_answer(gw):
    client, first_id = await failed_then_fixed(gw, "FIXME2", missing_cccd)
    assert (await replay(gw, f"{first_id}/replay")).json()["replayed"][0]["queued"] == 1

    again = (await replay(gw, f"{first_id}/replay")).json()["replayed"][0]
    gw.test_plugin.behaviour = broken  # a resend decided afresh would be AE
    resent = await send_and_receive(client, hl7(control_id="FIXME2"))

    assert (again["ack_code"], again["queued"]) == ("AA", 0)
    assert msa(resent)[1:3] == ["AA", "FIXME2"]
    rows = journal_rows(gw)
    assert [(r["replay_of"], r["status"], r["repeat_count"]) for r in rows] == [
        (None, "error", 0), (first_id, "accepted", 0), (first_id, "accepted", 1)]
    assert len(outbox_rows(gw)) == 1
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_replay_by_status_takes_the_latest_attempts_with_that_status_in_the_period_in_order(gw):
    client = await connect_mllp(gw)
    gw.test_plugin.behaviour = missing_cccd
    for control_id in ("ERR1", "ERR2", "ERR3"):
        assert msa(await send_and_receive(client, hl7(control_id=control_id)))[1] == "AE"
    gw.test_plugin.behaviour = None
    assert msa(await send_and_receive(client, hl7(control_id="FINE1")))[1] == "AA"
    since = datetime.fromtimestamp(journal_rows(gw)[0]["received_at"] - 60).isoformat()

    def only_err2(message):
        return missing_cccd(message) if message.control_id == "ERR2" else standard_records(message)

    gw.test_plugin.behaviour = only_err2
    first = (await replay(gw, f"replay?status=error&since={since}")).json()
    gw.test_plugin.behaviour = None
    second = (await replay(gw, f"replay?status=error&since={since}")).json()
    third = (await replay(gw, f"replay?status=error&since={since}")).json()

    assert [(r["control_id"], r["ack_code"]) for r in first["replayed"]] == [
        ("ERR1", "AA"), ("ERR2", "AE"), ("ERR3", "AA")]
    assert [(r["control_id"], r["ack_code"]) for r in second["replayed"]] == [("ERR2", "AA")]
    assert third["replayed"] == []
    assert [r["control_id"] for r in journal_rows(gw)] == [
        "ERR1", "ERR2", "ERR3", "FINE1", "ERR1", "ERR2", "ERR3", "ERR2"]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_dry_run_decides_and_says_what_would_be_queued_without_journaling(gw):
    client, message_id = await failed_then_fixed(gw, "DRY1")

    response = await replay(gw, f"{message_id}/replay?dry_run=1")

    [planned] = response.json()["replayed"]
    assert response.json()["dry_run"] is True
    assert (planned["ack_code"], planned["message_id"], planned["queued"]) == ("AA", None, 1)
    assert len(journal_rows(gw)) == 1 and outbox_rows(gw) == []
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_replay_refuses_what_it_cannot_replay_with_a_reason(gw):
    unknown = await replay(gw, "999/replay")
    no_since = await replay(gw, "replay?status=error")
    bad_status = await replay(gw, "replay?status=maybe&since=2025-01-01")

    assert (unknown.code, no_since.code, bad_status.code) == (404, 400, 400)
    assert "no message with id 999" in unknown.json()["error"]
    assert "since" in no_since.json()["error"]
    assert "status" in bad_status.json()["error"]


@pytest_twisted.ensureDeferred
async def test_a_portal_file_is_replayed_with_the_form_fields_it_came_with(tmp_path):
    gw = await start_gateway(tmp_path / "data", plugins=[TestDocumentPlugin()], **FILES)
    try:
        wrong = await http_request(gw, "POST", "/api/qd130/guiHoSoXmlQD4750", portal_form(noi_tru(), "01001"), FORM)
        [first] = journal_rows(gw)

        [replayed] = (await replay(gw, f"{first['id']}/replay")).json()["replayed"]

        assert wrong.json()["maKetQua"] == "205"
        assert (replayed["ack_code"], replayed["errors"][0]["location"]) == ("AR", "maCSKCB")
        assert json.loads(journal_rows(gw)[1]["request"]) == {"document": "GIAMDINHHS", "facility": "01001"}
        assert outbox_rows(gw) == []
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_the_cli_replays_a_stopped_gateways_message_with_todays_config(tmp_path):
    """The CLI runs the pipeline itself (plugins from the entry points, as installed): a message
    rejected while its plugin was disabled is accepted once it is enabled again."""
    data_dir = tmp_path / "data"
    sample = plugin_sample(REPO / "plugins" / "viettel_his", "adt_a04.hl7")
    config = tmp_path / "gateway.toml"
    config.write_text('[destinations.files]\nkind = "file"\ndirectory = "files"\n')
    await _journal_while_disabled(data_dir, sample)
    [first] = _rows(data_dir)

    def cli(*flags):
        return deferToThread(run_cli, "messages", "replay", first["id"], *flags, "--config", config,
                             "--data-dir", data_dir)

    dry = await cli("--dry-run", "--json")
    done = await cli("--json")
    text = await cli()

    assert dry.returncode == done.returncode == text.returncode == 0, (dry.stderr, done.stderr, text.stderr)
    [planned] = json.loads(dry.stdout)["replayed"]
    [replayed] = json.loads(done.stdout)["replayed"]
    assert (first["status"], planned["ack_code"], planned["message_id"], planned["queued"]) == (
        "rejected", "AA", None, 1)
    rows = _rows(data_dir)
    assert (replayed["ack_code"], replayed["message_id"], replayed["queued"]) == ("AA", rows[1]["id"], 1)
    assert [(r["replay_of"], r["status"]) for r in rows] == [(None, "rejected"), (first["id"], "accepted"),
                                                            (first["id"], "accepted")]
    assert f"{first['id']}" in text.stdout.decode() and "AA" in text.stdout.decode()
    conn = sqlite3.connect(data_dir / "gateway.db")
    assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1
    conn.close()


async def _journal_while_disabled(data_dir, sample: bytes) -> None:
    from twisted.internet import reactor

    from gateway.app import Gateway
    from tests.support import gateway_config

    gw = Gateway(gateway_config(data_dir, **{"plugins.disabled": ["viettel_his"]}), reactor)
    await gw.start()
    try:
        client = await connect_mllp(gw)
        assert msa(await send_and_receive(client, sample))[1] == "CR"  # the sample asks for enhanced mode
        client.transport.loseConnection()
    finally:
        await gw.stop()


def _rows(data_dir) -> list[dict]:
    conn = sqlite3.connect(data_dir / "gateway.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT id, replay_of, status FROM messages ORDER BY id")]
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_the_cli_with_url_asks_the_running_gateway_to_replay(gw):
    client, message_id = await failed_then_fixed(gw, "VIAURL1")
    host, port = gw.address("http")

    result = await deferToThread(run_cli, "messages", "replay", message_id, "--json", "--url",
                                 f"http://{host}:{port}")

    assert result.returncode == 0, result.stderr
    [replayed] = json.loads(result.stdout)["replayed"]
    assert (replayed["ack_code"], replayed["queued"]) == ("AA", 1)
    assert [r["replay_of"] for r in journal_rows(gw)] == [None, message_id]
    assert err_segments(client.frames[0])[0][3].startswith("207")
    client.transport.loseConnection()
