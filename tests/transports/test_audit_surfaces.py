"""What the audit log records on a running gateway: each admin API action once, with its outcome;
each CLI operator action and body read once, as the OS user; authentications on every surface
(admin API, HTTP intake, MLLP by network), a success once per window, every failure."""
import getpass
import sqlite3
from datetime import datetime, timedelta

import pytest_twisted

from gateway.cli import main
from gateway.core.clients import token_digest
from tests.support import (
    TestPlugin, connect_mllp_from, hl7, http_request, metric_value, msa, outbox_rows, send_and_receive, start_gateway,
    wait_until,
)
from tests.transports.test_admin import destinations, send_and_settle

ADMIN_TOKEN = "audit-admin-secret"
CLIENT_TOKEN = "bv-q1-token-for-audit"


def entries(gateway, *, actions: bool = True) -> list[tuple]:
    """(surface, actor, action, target, outcome) oldest first: operator actions, or authentications."""
    conn = sqlite3.connect(gateway.store.path)
    try:
        return conn.execute("SELECT surface, actor, action, target, outcome FROM audit_log WHERE "
                            + ("action != 'auth'" if actions else "action = 'auth'") + " ORDER BY id").fetchall()
    finally:
        conn.close()


async def flushed(gateway) -> None:
    await gateway.audit.flush()


@pytest_twisted.async_yield_fixture
async def gw(tmp_path, monkeypatch):
    """The admin tests' destinations (``blocked`` dead-letters at once) and an admin token."""
    monkeypatch.setenv("HSSK_TEST_AUDIT_TOKEN", ADMIN_TOKEN)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is wanted\n")
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], **destinations(blocker),
                                  **{"auth.admin_token_env": "HSSK_TEST_AUDIT_TOKEN"})
    yield gateway
    await gateway.stop()


async def admin(gateway, method: str, path: str, token: str = ADMIN_TOKEN):
    return await http_request(gateway, method, path, headers={"Authorization": f"Bearer {token}"})


@pytest_twisted.ensureDeferred
async def test_every_admin_api_action_is_one_audit_entry_with_its_outcome(gw):
    await send_and_settle(gw, "AUD-1")
    [dead] = outbox_rows(gw, destination="blocked")
    [delivered] = outbox_rows(gw, destination="files")
    tomorrow = (datetime.now() + timedelta(days=1)).isoformat(timespec="seconds")
    actions = [
        ("POST", f"/admin/outbox/rows/{dead['id']}/retry", 200),
        ("POST", f"/admin/outbox/rows/{delivered['id']}/retry", 409),
        ("POST", "/admin/destinations/blocked/retry-dead", 200),
        ("POST", "/admin/destinations/files/pause", 200),
        ("POST", "/admin/destinations/files/resume", 200),
        ("POST", "/admin/destinations/weekly/flush", 200),
        ("POST", f"/admin/outbox/purge?delivered_before={tomorrow}", 200),
        ("POST", "/admin/messages/1/replay?dry_run=1", 200),
        ("POST", f"/admin/messages/replay?status=accepted&since=2020-01-01&until={tomorrow}&dry_run=1", 200),
    ]
    codes = [(await admin(gw, method, path)).code for method, path, _ in actions]
    await admin(gw, "GET", "/admin/outbox")  # a read of no body: no entry
    await flushed(gw)

    recorded = entries(gw)
    assert codes == [code for _, _, code in actions]
    assert [(a, o) for _, _, a, _, o in recorded] == [
        ("outbox.retry", "ok"), ("outbox.retry", "refused"), ("outbox.retry", "ok"), ("outbox.pause", "ok"),
        ("outbox.resume", "ok"), ("outbox.flush", "ok"), ("outbox.purge", "ok"), ("messages.replay", "ok"),
        ("messages.replay", "ok")]
    assert {(s, actor) for s, actor, *_ in recorded} == {("admin", "admin (token)")}
    assert recorded[0][3] == f"row_id={dead['id']}" and recorded[3][3] == "dest=files"
    assert metric_value(gw, "hssk_audit_entries_total", action="outbox.retry", outcome="ok") == 2


@pytest_twisted.ensureDeferred
async def test_admin_authentication_success_once_per_window_and_each_failure(gw):
    for _ in range(3):
        assert (await admin(gw, "GET", "/admin/outbox")).code == 200
    for token in ("wrong", "also-wrong"):
        assert (await admin(gw, "GET", "/admin/outbox", token)).code == 401
    await flushed(gw)

    assert [(s, a, o) for s, a, _, _, o in entries(gw, actions=False)] == [
        ("admin", "admin (token)", "ok"), ("admin", "", "refused"), ("admin", "", "refused")]
    assert metric_value(gw, "hssk_auth_failures_total", surface="admin") == 2


@pytest_twisted.async_yield_fixture
async def clients_gw(tmp_path):
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], **{
        "auth.required": True,
        "clients.bv_q1.facilities": ["79001"], "clients.bv_q1.token_sha256": [token_digest(CLIENT_TOKEN)],
        "clients.bv_q1.addresses": ["127.0.0.1/32"]})
    yield gateway
    await gateway.stop()


@pytest_twisted.ensureDeferred
async def test_http_intake_records_a_client_once_per_window_and_every_refusal(clients_gw):
    for control_id in ("H-1", "H-2", "H-3"):
        answer = await http_request(clients_gw, "POST", "/hl7", hl7(control_id=control_id),
                                    "application/hl7-v2; charset=utf-8", headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
        assert answer.code == 200
    refused = await http_request(clients_gw, "POST", "/hl7", hl7(control_id="H-4"), "application/hl7-v2",
                                 headers={"Authorization": "Bearer not-a-token"})
    stranger = await http_request(clients_gw, "POST", "/hl7", hl7(control_id="H-5"), "application/hl7-v2",
                                  source="127.0.0.2")
    await flushed(clients_gw)

    found = [(s, a, o) for s, a, _, _, o in entries(clients_gw, actions=False)]
    assert (refused.code, stranger.code) == (401, 401)
    assert found == [("http", "bv_q1", "ok"), ("http", "", "refused"), ("http", "", "refused")]
    conn = sqlite3.connect(clients_gw.store.path)
    reasons = [r for (r,) in conn.execute("SELECT reason FROM audit_log WHERE outcome = 'refused' ORDER BY id")]
    peers = [p for (p,) in conn.execute("SELECT peer FROM audit_log ORDER BY id")]
    conn.close()
    assert reasons[0].startswith("bad_credentials") and reasons[1].startswith("unauthenticated")
    assert peers[2].startswith("127.0.0.2")
    assert metric_value(clients_gw, "hssk_auth_failures_total", surface="http") == 2


@pytest_twisted.ensureDeferred
async def test_mllp_records_a_client_known_by_its_network_and_a_refused_stranger(clients_gw):
    known = await connect_mllp_from(clients_gw, "127.0.0.1")
    assert msa(await send_and_receive(known, hl7(control_id="M-1")))[1] == "AA"
    stranger = await connect_mllp_from(clients_gw, "127.0.0.3")
    assert msa(await send_and_receive(stranger, hl7(control_id="M-2")))[1] == "AR"
    for client in (known, stranger):
        client.transport.loseConnection()
    await flushed(clients_gw)

    assert [(s, a, o) for s, a, _, _, o in entries(clients_gw, actions=False)] == [
        ("mllp", "bv_q1", "ok"), ("mllp", "", "refused")]
    assert metric_value(clients_gw, "hssk_auth_failures_total", surface="mllp") == 1


def cli(capsys, *args) -> int:
    status = main([*map(str, args)])
    capsys.readouterr()
    return status


@pytest_twisted.ensureDeferred
async def test_every_cli_operator_action_and_body_read_is_one_audit_entry(gw, capsys):
    await send_and_settle(gw, "AUD-1")
    [dead] = outbox_rows(gw, destination="blocked")
    data_dir = gw.config.data_dir
    person = sqlite3.connect(gw.store.path).execute("SELECT id FROM persons").fetchone()[0]
    conn = sqlite3.connect(gw.store.path)
    with conn:
        conn.execute("INSERT INTO person_reviews (created_at, reason, subject, candidates, state) "
                     "VALUES (0, 'two_candidates', ?, '[]', 'open')", (person,))
    conn.close()
    tomorrow = (datetime.now() + timedelta(days=1)).isoformat(timespec="seconds")
    commands = [
        ("outbox", "retry", dead["id"]), ("outbox", "pause", "files"), ("outbox", "resume", "files"),
        ("outbox", "flush", "nowhere"), ("outbox", "purge", "--delivered-before", tomorrow),
        ("messages", "show", 1), ("messages", "show", 1, "--raw"), ("outbox", "show", dead["id"], "--payload"),
        ("messages", "replay", 1, "--dry-run"), ("persons", "show", person, "--reveal"),
        ("identity", "review", "reject", 1), ("identity", "review", "accept", 99),
    ]
    statuses = [cli(capsys, *command, "--data-dir", data_dir) for command in commands]

    recorded = entries(gw)
    user = getpass.getuser()
    assert statuses == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert [(a, o) for _, _, a, _, o in recorded] == [
        ("outbox.retry", "ok"), ("outbox.pause", "ok"), ("outbox.resume", "ok"), ("outbox.flush", "refused"),
        ("outbox.purge", "ok"), ("messages.read", "ok"), ("messages.read", "ok"), ("outbox.payload_read", "ok"),
        ("messages.replay", "ok"), ("persons.reveal", "ok"), ("identity.review_reject", "ok"),
        ("identity.review_accept", "refused")]
    assert {(s, a) for s, a, *_ in recorded} == {("cli", user)}
    assert recorded[6][3] == "message 1 raw bytes" and recorded[9][3] == f"persons show: {person}"
    await wait_until(lambda: metric_value(gw, "hssk_audit_entries_total", action="outbox.pause", outcome="ok") == 1,
                     what="the gateway counting the CLI's entries")


@pytest_twisted.ensureDeferred
async def test_an_action_sent_through_the_admin_api_is_recorded_once_by_the_gateway(gw, capsys, tmp_path):
    host, port = gw.address("http")
    config = tmp_path / "gateway.toml"
    config.write_text('[auth]\nadmin_token_env = "HSSK_TEST_AUDIT_TOKEN"\n')
    status = await _in_thread(cli, capsys, "messages", "replay", "1", "--dry-run", "--url", f"http://{host}:{port}",
                              "--config", config, "--data-dir", gw.config.data_dir)
    await flushed(gw)

    assert status == 1  # no message 1: the gateway says so, and records the refusal
    assert [(s, a, o) for s, _, a, _, o in entries(gw)] == [("admin", "messages.replay", "refused")]


def _in_thread(function, *args):
    from twisted.internet.threads import deferToThread

    return deferToThread(function, *args)



@pytest_twisted.ensureDeferred
async def test_the_gateway_copies_its_entries_to_a_syslog_collector(tmp_path):
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    class Collector(DatagramProtocol):
        def __init__(self):
            self.frames: list[bytes] = []

        def datagramReceived(self, data, addr):
            self.frames.append(data)

    collector = Collector()
    port = reactor.listenUDP(0, collector, interface="127.0.0.1")
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin()],
                                  **{"audit.syslog": f"udp:127.0.0.1:{port.getHost().port}"})
    try:
        assert (await http_request(gateway, "POST", "/admin/destinations/nowhere/pause")).code == 404
        await wait_until(lambda: len(collector.frames) == 2, what="two datagrams")
    finally:
        await gateway.stop()
        await port.stopListening()
    auth, pause = collector.frames
    assert auth.startswith(b"<86>1 ") and b' auth [audit@32473 id="1" surface="admin" actor="admin (loopback)"' in auth
    assert pause.startswith(b"<85>1 ") and b'action="outbox.pause"' in pause and b'outcome="refused"' in pause
