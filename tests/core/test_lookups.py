"""Remote lookups before a decision: a BHYT card checked at a stand-in for the BHXH portal, a real
HTTP server on 127.0.0.1 (``tests/core/card_check.py``). The lookup runs on the reactor, bounded
by its timeout and its service's concurrency cap; no pipeline worker waits for it; what a failed
or silent portal means is the plugin's choice."""
import os

import pytest_twisted
from twisted.internet.task import Clock

from gateway.plugin import Lookup
from tests.core.card_check import CARD_PID, SERVICE, CardCheck, CardPortal
from tests.core.fault_plugin import start_isolated
from tests.support import (
    REPO,
    TestPlugin,
    connect_mllp,
    err_segments,
    hl7,
    journal_rows,
    metric_value,
    msa,
    run_clock_until,
    send_and_receive,
    start_gateway,
    wait_until,
)

CARD_A, CARD_B, CARD_C = "DN4790123456789", "DN4790123456780", "DN4790123456781"


def with_card(control_id: str, card: str) -> bytes:
    return hl7(CARD_PID.format(card=card), control_id=control_id)


async def portal_and_gateway(tmp_path, clock=None, **check):
    portal = CardPortal()
    url = await portal.listen()
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), CardCheck(url, **check)], clock=clock,
                             **{"pipeline.workers": 1})
    return portal, gw


async def stop(portal, gw):
    await gw.stop()
    await portal.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_message_waiting_for_its_lookup_holds_no_worker(tmp_path):
    portal, gw = await portal_and_gateway(tmp_path)
    portal.answers[CARD_A] = "hang"
    try:
        waiting, other = await connect_mllp(gw), await connect_mllp(gw)
        waiting.send(with_card("LOOKUP-A", CARD_A))
        await wait_until(lambda: CARD_A in portal.hanging, what="the portal to be asked about card A")

        # The only worker is free: a message without a card is decided and answered meanwhile.
        assert msa(await send_and_receive(other, hl7(control_id="NO-CARD")))[1:3] == ["AA", "NO-CARD"]
        assert waiting.frames == []

        portal.release(CARD_A, "valid")
        [ack] = await waiting.wait_frames(1)
        assert msa(ack)[1:3] == ["AA", "LOOKUP-A"] and err_segments(ack) == []
        assert [(r["control_id"], r["ack_code"]) for r in journal_rows(gw)] == [("NO-CARD", "AA"), ("LOOKUP-A", "AA")]
        assert metric_value(gw, "hssk_lookups_total", service="bhxh_card", outcome="answered") == 1
        for client in (waiting, other):
            client.transport.loseConnection()
    finally:
        await stop(portal, gw)


@pytest_twisted.ensureDeferred
async def test_a_card_the_portal_does_not_know_is_answered_ae_by_the_plugins_judgement(tmp_path):
    portal, gw = await portal_and_gateway(tmp_path)
    portal.answers[CARD_A] = "expired"
    try:
        client = await connect_mllp(gw)
        ack = await send_and_receive(client, with_card("EXPIRED", CARD_A))

        assert msa(ack)[1] == "AE"
        assert [(e[2], e[3].split("^")[0]) for e in err_segments(ack)] == [("IN1^1^36", "103")]
        assert journal_rows(gw)[0]["status"] == "error"
        client.transport.loseConnection()
    finally:
        await stop(portal, gw)


@pytest_twisted.ensureDeferred
async def test_a_portal_that_fails_is_what_the_plugin_says_here_aa_with_a_warning(tmp_path):
    portal, gw = await portal_and_gateway(tmp_path, on_silence="warn")
    portal.answers[CARD_A] = "500"
    try:
        client = await connect_mllp(gw)
        ack = await send_and_receive(client, with_card("PORTAL-DOWN", CARD_A))

        assert msa(ack)[1] == "AA"
        [err] = err_segments(ack)
        assert err[4] == "W" and "card not checked at the BHXH portal (failed)" in err[8]
        assert metric_value(gw, "hssk_lookups_total", service="bhxh_card", outcome="failed") == 1
        client.transport.loseConnection()
    finally:
        await stop(portal, gw)


@pytest_twisted.ensureDeferred
async def test_a_silent_portal_is_answered_ar_after_the_lookup_timeout_and_the_resend_is_decided_afresh(tmp_path):
    clock = Clock()
    portal, gw = await portal_and_gateway(tmp_path, clock, on_silence="reject", timeout=2.0)
    portal.answers[CARD_A] = "hang"
    try:
        client = await connect_mllp(gw)
        message = with_card("SILENT", CARD_A)
        client.send(message)
        await run_clock_until(clock, lambda: CARD_A in portal.hanging)

        clock.advance(2.5)  # the lookup's own timeout; the message's (pipeline.timeout_seconds, 10 s) is far
        await run_clock_until(clock, lambda: client.frames)

        [ack] = client.frames
        assert msa(ack)[1] == "AR"
        assert [(e[2], e[3].split("^")[0]) for e in err_segments(ack)] == [("IN1^1^36", "207")]
        assert "did not check the card (timeout)" in err_segments(ack)[0][8]
        assert metric_value(gw, "hssk_lookups_total", service="bhxh_card", outcome="timeout") == 1
        await run_clock_until(clock, lambda: CARD_A in portal.cancelled)  # the request was given up, not left open

        portal.answers[CARD_A] = "valid"
        client.send(message)
        await run_clock_until(clock, lambda: len(client.frames) == 2)
        assert msa(client.frames[1])[1] == "AA"
        assert [r["status"] for r in journal_rows(gw)] == ["rejected", "accepted"]
        client.transport.loseConnection()
    finally:
        await stop(portal, gw)


@pytest_twisted.ensureDeferred
async def test_lookups_of_one_service_wait_for_a_place_under_its_concurrency_cap(tmp_path):
    portal, gw = await portal_and_gateway(tmp_path, max_concurrent=1)
    portal.answers[CARD_A] = "hang"
    try:
        first, second = await connect_mllp(gw), await connect_mllp(gw)
        first.send(with_card("CAPPED-A", CARD_A))
        await wait_until(lambda: CARD_A in portal.hanging, what="the portal to be asked about card A")
        second.send(with_card("CAPPED-B", CARD_B))
        await wait_until(lambda: metric_value(gw, "hssk_lookups_waiting", service="bhxh_card") == 1,
                         what="the second lookup to wait for a place")
        assert portal.log == [("asked", CARD_A)]

        portal.release(CARD_A)
        await first.wait_frames(1)
        await second.wait_frames(1)

        assert portal.log == [("asked", CARD_A), ("answered", CARD_A), ("asked", CARD_B), ("answered", CARD_B)]
        assert metric_value(gw, "hssk_lookups_waiting", service="bhxh_card") == 0
        for client in (first, second):
            client.transport.loseConnection()
    finally:
        await stop(portal, gw)


@pytest_twisted.ensureDeferred
async def test_a_message_whose_lookup_outlasts_its_deadline_is_answered_ar_and_the_lookup_gives_its_place_back(tmp_path):
    clock = Clock()
    portal, gw = await portal_and_gateway(tmp_path, clock, timeout=30.0, max_concurrent=1)
    portal.answers[CARD_A] = "hang"
    try:
        client = await connect_mllp(gw)
        client.send(with_card("TOO-LONG", CARD_A))
        await run_clock_until(clock, lambda: CARD_A in portal.hanging)

        clock.advance(gw.config.pipeline.timeout_seconds + 0.5)
        await run_clock_until(clock, lambda: client.frames and CARD_A in portal.cancelled)

        assert msa(client.frames[0])[1] == "AR"
        assert "waited for remote lookups longer than" in err_segments(client.frames[0])[0][8]
        client.send(with_card("NEXT", CARD_C))  # the cap is 1: only a released place lets this one be asked
        await run_clock_until(clock, lambda: len(client.frames) == 2)
        assert msa(client.frames[1])[1:3] == ["AA", "NEXT"]
        assert ("asked", CARD_C) in portal.log
        client.transport.loseConnection()
    finally:
        await stop(portal, gw)


class AlwaysAsking(CardCheck):
    """A plugin bug: every round it asks about another card, so the answers never suffice."""

    asked = 0

    def hssk_lookups(self, records):
        self.asked += 1
        return [Lookup(SERVICE, f"DN47901234{self.asked:05d}")]


@pytest_twisted.ensureDeferred
async def test_a_plugin_that_keeps_asking_for_lookups_costs_its_message_ae_207_not_a_loop(tmp_path):
    portal = CardPortal()
    plugin = AlwaysAsking(await portal.listen())
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), plugin])
    try:
        client = await connect_mllp(gw)
        ack = await send_and_receive(client, hl7(control_id="ASKING"))

        assert msa(ack)[1] == "AE"
        assert "asked for remote lookups 4 times for this message (hssk_lookups), more than 3" in err_segments(ack)[0][8]
        assert len([event for event in portal.log if event[0] == "asked"]) == 3
        # Counted under the plugin that claimed the message: which plugin asked, pluggy does not say.
        assert metric_value(gw, "hssk_plugin_exceptions_total", plugin="test_his", stage="lookup") == 1
        client.transport.loseConnection()
    finally:
        await stop(portal, gw)


@pytest_twisted.ensureDeferred
async def test_with_pipeline_processes_the_child_is_free_while_the_lookup_waits_and_decides_with_its_answer(
        tmp_path, fault_plugin, monkeypatch):
    portal = CardPortal()
    monkeypatch.setenv("HSSK_TEST_PORTAL", await portal.listen())
    site = tmp_path / "site" / "hssk_card_check-1.0.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text("Metadata-Version: 2.1\nName: hssk-card-check\nVersion: 1.0\n")
    (site / "entry_points.txt").write_text("[hssk_gateway.plugins]\ncard_check = tests.core.card_check:plugin\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(tmp_path / "site"), os.environ["PYTHONPATH"]]))
    portal.answers[CARD_A] = "hang"
    gw = await start_isolated(tmp_path)
    try:
        waiting, other = await connect_mllp(gw), await connect_mllp(gw)
        waiting.send(hl7(CARD_PID.format(card=CARD_A), control_id="CHILD-A", sending_app="FAULT_HIS"))
        await wait_until(lambda: CARD_A in portal.hanging, timeout=30, what="the portal to be asked about card A")

        assert msa(await send_and_receive(other, hl7(control_id="CHILD-B", sending_app="FAULT_HIS")))[1] == "AA"

        portal.release(CARD_A, "expired")
        [ack] = await waiting.wait_frames(1)
        assert msa(ack)[1] == "AE" and err_segments(ack)[0][3].startswith("103")
        for client in (waiting, other):
            client.transport.loseConnection()
    finally:
        await gw.stop()
        await portal.port.stopListening()
