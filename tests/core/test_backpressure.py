"""Backpressure, staleness and retention of the outbox, with time under test control.

Rows for a destination that cannot be reached stay pending; above ``outbox.max_pending`` the
gateway refuses new work (MLLP AR, HTTP 503 + Retry-After) instead of accepting what it may
not be able to keep; ``/readyz`` turns unready when a destination's oldest row is too old;
delivered rows are pruned after the retention period.
"""
from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater

from tests.support import (TestPlugin, connect_mllp, err_segments, hl7, http_request, metric_value, msa,
                           run_clock_until, select_rows, send_and_receive, start_gateway)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unreachable_destination(**extra) -> dict:
    values = {"destinations.store.kind": "http",
              "destinations.store.url": f"http://127.0.0.1:{closed_port()}/records",
              "destinations.store.backoff_base_seconds": 3600, "destinations.store.backoff_cap_seconds": 3600}
    values.update({f"destinations.store.{k}": v for k, v in extra.items()})
    return values


def rows(gateway, table: str = "outbox") -> list[dict]:
    return select_rows(gateway, f"SELECT * FROM {table}", {})


async def refreshed(gateway, clock: Clock, condition) -> None:
    """Advance past one poll interval and wait for the refresh (a thread-pool read) to land."""
    clock.advance(gateway.config.outbox.poll_interval_seconds)
    await run_clock_until(clock, condition)


def new_clock() -> Clock:
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock


@pytest_twisted.ensureDeferred
async def test_outbox_above_max_pending_refuses_mllp_with_ar_and_http_with_503(tmp_path):
    clock = new_clock()
    gateway = await start_gateway(tmp_path, plugins=[TestPlugin()], clock=clock, **{"outbox.max_pending": 2},
                                  **unreachable_destination())
    client = await connect_mllp(gateway)
    try:
        for n in range(2):
            assert msa(await send_and_receive(client, hl7(control_id=f"Q{n}")))[1] == "AA"
        await refreshed(gateway, clock, lambda: gateway.delivery.pending_total == 2)

        refused = await send_and_receive(client, hl7(control_id="Q2"))
        over_http = await http_request(gateway, "POST", "/hl7", hl7(control_id="Q3"), "application/hl7-v2")

        assert msa(refused)[1:3] == ["AR", "Q2"]
        [err] = err_segments(refused)
        assert err[3].split("^")[0] == "207" and "outbox.max_pending" in err[8]
        assert over_http.code == 503
        assert over_http.headers["retry-after"] == "30"
        assert msa(over_http.body)[1:3] == ["AR", "Q3"]
        assert [r["control_id"] for r in rows(gateway, "messages")] == ["Q0", "Q1"]
        assert metric_value(gateway, "hssk_connections_refused_total", transport="mllp", reason="backpressure") == 1
    finally:
        client.transport.loseConnection()
        await gateway.stop()


@pytest_twisted.ensureDeferred
async def test_readyz_turns_unready_when_the_oldest_pending_row_is_older_than_its_threshold(tmp_path):
    clock = new_clock()
    gateway = await start_gateway(tmp_path, plugins=[TestPlugin()], clock=clock,
                                  **unreachable_destination(alert_pending_age_seconds=600))
    client = await connect_mllp(gateway)
    try:
        await send_and_receive(client, hl7(control_id="S1"))
        await refreshed(gateway, clock, lambda: gateway.delivery.pending_total == 1)
        ready = await http_request(gateway, "GET", "/readyz")

        clock.advance(600)
        await refreshed(gateway, clock, lambda: bool(gateway.delivery.stale_destinations()))
        unready = await http_request(gateway, "GET", "/readyz")

        assert (ready.code, ready.json()["checks"]["outbox"]["ok"]) == (200, True)
        assert unready.code == 503
        outbox_check = unready.json()["checks"]["outbox"]
        assert outbox_check["ok"] is False
        assert list(outbox_check["stale_destinations"]) == ["store"]
        assert outbox_check["stale_destinations"]["store"] > 600
        assert metric_value(gateway, "hssk_outbox_oldest_pending_age_seconds", destination="store") > 600
    finally:
        client.transport.loseConnection()
        await gateway.stop()


@pytest_twisted.ensureDeferred
async def test_delivered_rows_and_their_journal_bodies_are_pruned_after_the_retention(tmp_path):
    clock = new_clock()
    gateway = await start_gateway(tmp_path, plugins=[TestPlugin()], clock=clock, **{
        "outbox.retention_days": 1, "destinations.files.kind": "file",
        "destinations.files.directory": str(tmp_path / "out")})
    client = await connect_mllp(gateway)
    try:
        await send_and_receive(client, hl7(control_id="OLD"))
        await run_clock_until(clock, lambda: [r["state"] for r in rows(gateway)] == ["delivered"])
        clock.advance(3600)
        await deferLater(reactor, 0.1, lambda: None)
        assert len(rows(gateway)) == 1  # within the retention: kept

        clock.advance(86400)
        # The rows are gone once the writer thread commits; the count follows when the reactor
        # gets the commit's result, so wait for both.
        await run_clock_until(clock, lambda: rows(gateway) == []
                              and metric_value(gateway, "hssk_outbox_pruned_rows_total") == 1)

        [message] = rows(gateway, "messages")
        assert (message["control_id"], message["raw"], message["records"]) == ("OLD", b"", None)
        assert len(list((tmp_path / "out").iterdir())) == 1
    finally:
        client.transport.loseConnection()
        await gateway.stop()


@pytest_twisted.ensureDeferred
async def test_rejected_messages_and_those_with_nothing_to_deliver_lose_their_bodies_after_their_retention(tmp_path):
    from gateway.model.outcome import ContentError, Issue

    def missing_cccd(message):
        raise ContentError([Issue(101, "PID-3: CCCD is required", "PID^1^3")])

    clock = new_clock()
    plugin = TestPlugin()
    gateway = await start_gateway(tmp_path, plugins=[plugin], clock=clock, **{
        "outbox.retention_days": 1, "outbox.rejected_retention_days": 3})
    client = await connect_mllp(gateway)
    try:
        assert msa(await send_and_receive(client, hl7(control_id="ROUTED_NOWHERE")))[1] == "AA"
        assert msa(await send_and_receive(client, hl7(control_id="NOBODYS", sending_app="OTHER_HIS")))[1] == "AR"
        plugin.behaviour = missing_cccd
        assert msa(await send_and_receive(client, hl7(control_id="BROKEN")))[1] == "AE"

        def bodies() -> dict[str, bool]:
            return {r["control_id"]: bool(r["raw"]) for r in rows(gateway, "messages")}

        clock.advance(86400 + 60)
        await run_clock_until(clock, lambda: metric_value(gateway, "hssk_journal_bodies_pruned_total",
                                                          status="accepted") == 1)
        assert bodies() == {"ROUTED_NOWHERE": False, "NOBODYS": True, "BROKEN": True}

        clock.advance(2 * 86400)
        await run_clock_until(clock, lambda: metric_value(gateway, "hssk_journal_bodies_pruned_total",
                                                          status="error") == 1)

        assert bodies() == {"ROUTED_NOWHERE": False, "NOBODYS": False, "BROKEN": False}
        assert metric_value(gateway, "hssk_journal_bodies_pruned_total", status="rejected") == 1
        assert [(r["status"], r["records"], bool(r["errors"])) for r in rows(gateway, "messages")] == [
            ("accepted", None, False), ("rejected", None, True), ("error", None, True)]
    finally:
        client.transport.loseConnection()
        await gateway.stop()
