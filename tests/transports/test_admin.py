"""``/admin/`` on a running gateway, over real HTTP: status with live circuit state, row listing,
pause / resume, retry, purge and flush, the JSON errors, and the loopback-only rule."""
import socket
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from gateway.transports.admin import is_loopback
from tests.support import (
    TestPlugin, connect_mllp, hl7, http_request, metric_value, msa, outbox_rows, send_and_receive, start_gateway,
    wait_until,
)

TOMORROW = (datetime.now() + timedelta(days=1)).isoformat(timespec="seconds")


def destinations(blocker: Path) -> dict[str, object]:
    """``files`` delivers; ``blocked`` wants a folder inside the regular file ``blocker`` (dead at
    once); ``stuck`` wants a folder where ``blocker`` is (retried after an hour, and its circuit
    opens on the first failure); ``weekly`` is a batch into a folder, for ORU messages only."""
    tables = {
        "files": {"kind": "file", "directory": "outbox/files"},
        "blocked": {"kind": "file", "directory": str(blocker / "out"), "message_types": ["ADT^*"]},
        "stuck": {"kind": "file", "directory": str(blocker), "message_types": ["ADT^*"], "circuit_failures": 1,
                  "backoff_base_seconds": 3600, "backoff_cap_seconds": 3600},
        "weekly": {"kind": "batch", "directory": "outbox/weekly", "schedule": "weekly MON 02:00",
                   "message_types": ["ORU^*"]},
    }
    return {f"destinations.{name}.{key}": value for name, table in tables.items() for key, value in table.items()}


@pytest.fixture
def blocker(tmp_path) -> Path:
    path = tmp_path / "blocker"
    path.write_text("a file where a folder is wanted\n")
    return path


@pytest_twisted.async_yield_fixture
async def gw(tmp_path, blocker):
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], **destinations(blocker))
    yield gateway
    await gateway.stop()


def states(gateway, destination: str) -> list[str]:
    return [r["state"] for r in outbox_rows(gateway, destination=destination)]


async def send(gateway, *control_ids: str, message_type: str = "ADT^A04^ADT_A01") -> None:
    client = await connect_mllp(gateway)
    for control_id in control_ids:
        sending_app = "LIS_THU_NGHIEM" if message_type.startswith("ORU") else "TEST_HIS"
        ack = await send_and_receive(client, hl7(control_id=control_id, message_type=message_type,
                                                 sending_app=sending_app))
        assert msa(ack)[1] == "AA"
    client.transport.loseConnection()
    await client.closed


async def send_and_settle(gateway, *control_ids: str) -> None:
    """Send ADT messages (one person) and wait for every file row's outcome: delivered to
    ``files``, dead at ``blocked``, the first tried and backed off at ``stuck``."""
    await send(gateway, *control_ids)
    n = len(control_ids)
    await wait_until(lambda: states(gateway, "files") == ["delivered"] * n
                     and states(gateway, "blocked") == ["dead"] * n
                     and outbox_rows(gateway, destination="stuck")[0]["attempts"] >= 1
                     and "in_flight" not in states(gateway, "stuck"), what="every row's first outcome")


async def commit_barrier(gateway) -> None:
    """Fires after everything already queued on the journal writer is committed, so a claim a
    dispatcher asked for before now is visible in the journal."""
    await gateway.writer.run(lambda conn, now: None)


# --- status and listing ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status_reports_counts_paused_and_the_live_circuit_state(gw):
    await send_and_settle(gw, "ADM-1")

    response = await http_request(gw, "GET", "/admin/outbox")

    assert response.code == 200
    assert response.headers["content-type"].startswith("application/json")
    found = response.json()["destinations"]
    assert set(found) == {"files", "blocked", "stuck", "weekly"}
    files, blocked, stuck = found["files"], found["blocked"], found["stuck"]
    assert (files["delivered"], files["pending"], files["circuit_state"], files["paused"]) == (1, 0, "closed", False)
    assert (blocked["dead"], blocked["circuit_state"]) == (1, "closed")  # a dead letter is not the store being down
    assert (stuck["pending"], stuck["circuit_state"], stuck["deliveries_in_flight"]) == (1, "open", 0)
    assert stuck["oldest_pending_age_seconds"] > 0
    assert (found["weekly"]["kind"], found["weekly"]["circuit_state"]) == ("batch", None)
    assert response.json()["pending_total"] == 1


@pytest_twisted.ensureDeferred
async def test_rows_lists_dead_rows_of_a_destination_without_payload(gw):
    await send_and_settle(gw, "ADM-1", "ADM-2")

    response = await http_request(gw, "GET", "/admin/outbox/rows?dest=blocked&state=dead")

    assert response.code == 200
    listed = response.json()["rows"]
    assert [r["id"] for r in listed] == [r["id"] for r in outbox_rows(gw, destination="blocked")]
    assert {(r["state"], r["last_result"]) for r in listed} == {("dead", "io_error")}
    assert all("cannot write into" in r["last_error"] and "payload" not in r for r in listed)


@pytest_twisted.ensureDeferred
async def test_rows_limit_keeps_the_oldest(gw):
    await send_and_settle(gw, "ADM-1", "ADM-2")

    listed = (await http_request(gw, "GET", "/admin/outbox/rows?limit=2")).json()["rows"]

    assert [r["id"] for r in listed] == [r["id"] for r in outbox_rows(gw)][:2]


@pytest_twisted.ensureDeferred
async def test_one_row_by_id_without_payload(gw):
    await send_and_settle(gw, "ADM-1")
    [dead] = outbox_rows(gw, destination="blocked")

    response = await http_request(gw, "GET", f"/admin/outbox/rows/{dead['id']}")

    assert response.code == 200
    assert (response.json()["id"], response.json()["state"]) == (dead["id"], "dead")
    assert "payload" not in response.json()


@pytest.mark.parametrize(("method", "path", "code", "error"), [
    ("GET", "/admin/outbox/rows?state=lost", 400, "state='lost' is not one of pending, waiting, in_flight, delivered, dead"),
    ("GET", "/admin/outbox/rows?limit=0", 400, "limit='0' must be an integer from 1 to 1000"),
    ("GET", "/admin/outbox/rows?limit=many", 400, "limit='many' must be an integer from 1 to 1000"),
    ("GET", "/admin/outbox/rows?destination=files", 400, "unknown parameter destination; this endpoint takes dest"),
    ("GET", "/admin/outbox/rows?dest=files&dest=stuck", 400, "parameter dest given more than once"),
    ("GET", "/admin/outbox/rows?dest=nowhere", 404, "unknown destination 'nowhere'; known: blocked, files, stuck"),
    ("GET", "/admin/outbox/rows/abc", 400, "'abc' is not an outbox row id"),
    ("GET", "/admin/outbox/rows/999999", 404, "no outbox row with id 999999"),
    ("POST", "/admin/outbox/rows/999999/retry", 404, "no outbox row with id 999999"),
    ("POST", "/admin/outbox/rows/-1/retry", 400, "'-1' is not an outbox row id"),
    ("POST", "/admin/destinations/nowhere/pause", 404, "unknown destination 'nowhere'"),
    ("POST", "/admin/destinations/nowhere/retry-dead", 404, "unknown destination 'nowhere'"),
    ("POST", "/admin/destinations/files/flush", 400, "files is a file destination; flush runs a configured batch"),
    ("POST", "/admin/outbox/purge", 400, "delivered_before is required"),
    ("POST", "/admin/outbox/purge?delivered_before=16/03/2025", 400, "delivered_before='16/03/2025' is not an ISO"),
    ("GET", "/admin/destinations/files/pause", 405, "GET is not allowed on /admin/destinations/files/pause; use POST"),
    ("POST", "/admin/outbox", 405, "POST is not allowed on /admin/outbox; use GET"),
    ("GET", "/admin/queues", 404, "no admin endpoint /admin/queues"),
    ("GET", "/admin/", 404, "no admin endpoint /admin/"),
])
@pytest_twisted.ensureDeferred
async def test_bad_requests_get_a_json_error_that_says_what_was_wrong(gw, method, path, code, error):
    response = await http_request(gw, method, path)

    assert response.code == code
    assert response.headers["content-type"].startswith("application/json")
    assert error in response.json()["error"]


@pytest_twisted.ensureDeferred
async def test_wrong_method_names_the_allowed_one_in_the_allow_header(gw):
    response = await http_request(gw, "GET", "/admin/outbox/rows/1/retry")

    assert response.code == 405
    assert response.headers["allow"] == "POST"


@pytest_twisted.ensureDeferred
async def test_unknown_endpoint_lists_the_endpoints(gw):
    response = await http_request(gw, "GET", "/admin/nothing")

    assert "POST /admin/destinations/{dest}/pause" in response.json()["endpoints"]


# --- pause and resume -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pause_stops_claiming_and_sets_the_paused_metric(gw):
    response = await http_request(gw, "POST", "/admin/destinations/files/pause")
    await send(gw, "ADM-PAUSED")
    await commit_barrier(gw)

    assert (response.code, response.json()) == (200, {"destination": "files", "paused": True})
    assert [(r["state"], r["attempts"]) for r in outbox_rows(gw, destination="files")] == [("pending", 0)]
    assert not (Path(gw.config.data_dir) / "outbox" / "files").exists()
    assert metric_value(gw, "hssk_destination_paused", destination="files") == 1
    assert (await http_request(gw, "GET", "/admin/outbox")).json()["destinations"]["files"]["paused"] is True


@pytest_twisted.ensureDeferred
async def test_resume_delivers_the_rows_held_while_paused(gw):
    await http_request(gw, "POST", "/admin/destinations/files/pause")
    await send(gw, "ADM-HELD")

    response = await http_request(gw, "POST", "/admin/destinations/files/resume")
    await wait_until(lambda: states(gw, "files") == ["delivered"], what="the held row delivered")

    assert (response.code, response.json()) == (200, {"destination": "files", "paused": False})
    assert metric_value(gw, "hssk_destination_paused", destination="files") == 0
    assert len(list((Path(gw.config.data_dir) / "outbox" / "files").iterdir())) == 1


# --- retry ----------------------------------------------------------------------------------------


def clear_the_fault(blocker: Path) -> None:
    """Replace the file in the way with a folder: ``blocked`` can now write."""
    blocker.unlink()
    blocker.mkdir()


@pytest_twisted.ensureDeferred
async def test_retry_of_a_dead_row_delivers_it_once_the_fault_is_fixed(gw, blocker):
    await send_and_settle(gw, "ADM-1")
    [dead] = outbox_rows(gw, destination="blocked")
    clear_the_fault(blocker)

    response = await http_request(gw, "POST", f"/admin/outbox/rows/{dead['id']}/retry")
    await wait_until(lambda: states(gw, "blocked") == ["delivered"], what="the retried row delivered")

    assert (response.code, response.json()) == (200, {"row": dead["id"], "state": "pending"})
    assert [(r["state"], r["attempts"]) for r in outbox_rows(gw, destination="blocked")] == [("delivered", 1)]
    assert len(list((blocker / "out").iterdir())) == 1


@pytest_twisted.ensureDeferred
async def test_retry_of_a_row_that_is_not_dead_is_a_conflict(gw):
    await send_and_settle(gw, "ADM-1")
    [delivered] = outbox_rows(gw, destination="files")

    response = await http_request(gw, "POST", f"/admin/outbox/rows/{delivered['id']}/retry")

    assert response.code == 409
    assert response.json()["error"] == f"outbox row {delivered['id']} is delivered, not dead; only dead rows are retried"
    assert states(gw, "files") == ["delivered"]


@pytest_twisted.ensureDeferred
async def test_retry_dead_of_a_destination_sends_all_its_dead_rows_again(gw, blocker):
    await send_and_settle(gw, "ADM-1", "ADM-2")
    clear_the_fault(blocker)

    response = await http_request(gw, "POST", "/admin/destinations/blocked/retry-dead")
    await wait_until(lambda: states(gw, "blocked") == ["delivered", "delivered"], what="both rows delivered")

    assert (response.code, response.json()) == (200, {"destination": "blocked", "retried": 2})
    assert states(gw, "files") == ["delivered", "delivered"]


# --- purge ----------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_purge_deletes_only_rows_delivered_before_the_date(gw):
    await send_and_settle(gw, "ADM-1", "ADM-2")

    too_early = await http_request(gw, "POST", "/admin/outbox/purge?delivered_before=2000-01-01")
    response = await http_request(gw, "POST", f"/admin/outbox/purge?delivered_before={TOMORROW}")

    assert (too_early.code, too_early.json()["purged"]) == (200, 0)
    assert (response.code, response.json()["purged"]) == (200, 2)
    assert states(gw, "files") == []
    assert states(gw, "blocked") == ["dead", "dead"]
    status = (await http_request(gw, "GET", "/admin/outbox")).json()["destinations"]
    assert status["files"]["delivered"] == 0


@pytest_twisted.ensureDeferred
async def test_purge_blanks_journal_bodies_only_of_messages_with_nothing_left_to_deliver(gw):
    await send_and_settle(gw, "ADM-ADT")
    await send(gw, "ADM-ORU", message_type="ORU^R01^ORU_R01")
    await wait_until(lambda: states(gw, "files") == ["delivered", "delivered"], what="the ORU delivered")
    flushed = await http_request(gw, "POST", "/admin/destinations/weekly/flush")  # its batch row too

    await http_request(gw, "POST", f"/admin/outbox/purge?delivered_before={TOMORROW}")

    conn = sqlite3.connect(gw.config.database_path)
    sizes = dict(conn.execute("SELECT control_id, length(raw) FROM messages"))
    conn.close()
    assert flushed.json()["rows"] == 1
    assert sizes["ADM-ORU"] == 0  # every row delivered and purged
    assert sizes["ADM-ADT"] > 0  # still has dead and pending rows


# --- flush ----------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_flush_runs_the_batch_now_and_answers_with_its_rows(gw):
    await send(gw, "ADM-ORU-1", "ADM-ORU-2", message_type="ORU^R01^ORU_R01")

    response = await http_request(gw, "POST", "/admin/destinations/weekly/flush")

    assert (response.code, response.json()) == (200, {"destination": "weekly", "rows": 2})
    assert states(gw, "weekly") == ["delivered", "delivered"]
    assert len(list((Path(gw.config.data_dir) / "outbox" / "weekly").iterdir())) == 1


@pytest_twisted.ensureDeferred
async def test_flush_of_a_paused_batch_is_a_conflict(gw):
    await http_request(gw, "POST", "/admin/destinations/weekly/pause")

    response = await http_request(gw, "POST", "/admin/destinations/weekly/flush")

    assert (response.code, response.json()["error"]) == (409, "weekly is paused; resume it first")


# --- loopback only --------------------------------------------------------------------------------


def non_loopback_address() -> str | None:
    """This host's address on its default route (a UDP connect sends nothing), if it has one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


@pytest_twisted.ensureDeferred
async def test_a_client_that_is_not_on_loopback_is_refused_with_403(tmp_path):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address to connect from")
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin()],
                                  **{"http.listen": f"tcp:0:interface={address}"})
    try:
        refused = await http_request(gateway, "GET", "/admin/outbox")
        pause = await http_request(gateway, "POST", "/admin/destinations/anything/pause")
        health = await http_request(gateway, "GET", "/healthz")
    finally:
        await gateway.stop()

    assert refused.code == 403
    assert "only loopback clients" in refused.json()["error"]
    assert pause.code == 403  # refused before the destination is even looked up
    assert health.code == 200  # the rest of the HTTP listener is not affected


@pytest.mark.parametrize(("address", "loopback"), [
    (IPv4Address("TCP", "127.0.0.1", 5000), True),
    (IPv4Address("TCP", "127.8.9.10", 5000), True),
    (IPv6Address("TCP", "::1", 5000), True),
    (IPv6Address("TCP", "::ffff:127.0.0.1", 5000), True),
    (IPv4Address("TCP", "10.0.0.7", 5000), False),
    (IPv4Address("TCP", "192.0.2.2", 5000), False),
    (IPv4Address("TCP", "0.0.0.0", 5000), False),
    (IPv6Address("TCP", "::ffff:10.0.0.7", 5000), False),
    (IPv6Address("TCP", "fe80::1%eth0", 5000), False),
    (IPv4Address("TCP", "localhost", 5000), False),
    (UNIXAddress(b"/run/hssk.sock"), False),
    (None, False),
])
def test_only_loopback_peers_count_as_loopback(address, loopback):
    assert is_loopback(address) is loopback
