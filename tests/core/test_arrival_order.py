"""Invariant 4 from the wire to the store: messages pipelined on one connection are journaled,
queued and delivered in the order they arrived, however long each took to decide."""
from __future__ import annotations

import threading
import time

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gateway.formats.framing import wrap
from tests.core.fault_plugin import fault_message
from tests.core.test_pipeline_processes import start_isolated
from tests.fake_store import start_store, url_of
from tests.support import (TestPlugin, connect_mllp, hl7, journal_rows, msa_codes, outbox_rows, standard_records,
                           start_gateway, wait_until)

PERSON = "PID|1||079085000123^^^BCA^NI||Nguyễn^Văn An||19850412|M"


@pytest_twisted.ensureDeferred
async def test_pipelined_messages_of_one_person_are_journaled_queued_and_delivered_in_arrival_order(tmp_path):
    plugin = TestPlugin()

    def behaviour(message):  # every third message takes a while to decide, so workers finish out of order
        if int(message.control_id[3:]) % 3 == 0:
            time.sleep(0.02)
        return standard_records(message)

    plugin.behaviour = behaviour
    store, listening = start_store(reactor)
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **{
        "pipeline.workers": 3, "destinations.store.kind": "http", "destinations.store.url": url_of(listening)})
    try:
        sent = [f"ORD{n:02d}" for n in range(40)]
        client = await connect_mllp(gw)
        client.transport.write(b"".join(wrap(hl7(PERSON, control_id=c)) for c in sent))
        acks = await client.wait_frames(40)
        await wait_until(lambda: len(store.accepted_keys()) == 40, what="every record to reach the store")

        assert msa_codes(acks) == [("AA", c) for c in sent]
        journal = journal_rows(gw)
        assert [row["control_id"] for row in journal] == sent
        control_id_of = {row["id"]: row["control_id"] for row in journal}
        rows = outbox_rows(gw, destination="store")
        assert [control_id_of[row["message_id"]] for row in rows] == sent
        control_id_of_key = {row["idempotency_key"]: control_id_of[row["message_id"]] for row in rows}
        assert [control_id_of_key[key] for key in store.accepted_keys()] == sent
        client.transport.loseConnection()
    finally:
        await gw.stop()
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_slow_decision_holds_back_only_its_own_connections_later_messages(tmp_path):
    plugin = TestPlugin()
    release_slow = threading.Event()
    fast_decided: Deferred = Deferred()

    def behaviour(message):  # runs on a pipeline worker thread, never on the reactor
        if message.control_id == "SLOW1":
            release_slow.wait(timeout=10)
        elif message.control_id == "FAST1":
            reactor.callFromThread(fast_decided.callback, None)
        return standard_records(message)

    plugin.behaviour = behaviour
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **{"pipeline.workers": 2})
    try:
        client = await connect_mllp(gw)
        client.transport.write(wrap(hl7(control_id="SLOW1")) + wrap(hl7(control_id="FAST1")))
        await fast_decided
        other = await connect_mllp(gw)
        other.send(hl7(control_id="OTHER1"))

        assert msa_codes(await other.wait_frames(1)) == [("AA", "OTHER1")]
        assert [row["control_id"] for row in journal_rows(gw)] == ["OTHER1"]

        release_slow.set()
        frames = await client.wait_frames(2)

        assert msa_codes(frames) == [("AA", "SLOW1"), ("AA", "FAST1")]
        assert [row["control_id"] for row in journal_rows(gw)] == ["OTHER1", "SLOW1", "FAST1"]
        client.transport.loseConnection()
        other.transport.loseConnection()
    finally:
        release_slow.set()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_timed_out_message_lets_the_ones_behind_it_go_in_order(tmp_path):
    """The messages behind a hung one arrive later, so their own deadlines are later: when the
    hung one times out (on the clock) they are decided already, and go to the journal at once."""
    plugin = TestPlugin()
    hanging, release, decided = threading.Event(), threading.Event(), []

    def behaviour(message):
        if message.control_id == "HANG1":
            hanging.set()
            release.wait(timeout=10)
        decided.append(message.control_id)
        return standard_records(message)

    plugin.behaviour = behaviour
    clock = Clock()
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], clock=clock,
                             **{"pipeline.workers": 2, "pipeline.timeout_seconds": 2})
    try:
        client = await connect_mllp(gw)
        client.send(hl7(control_id="HANG1"))
        await wait_until(hanging.is_set, what="the first message in its plugin call")
        clock.advance(1.5)
        after = ["AFTER1", "AFTER2", "AFTER3"]
        client.transport.write(b"".join(wrap(hl7(control_id=c)) for c in after))
        await wait_until(lambda: decided == after, what="the messages behind it decided")
        clock.advance(0.5)
        acks = await client.wait_frames(4)

        assert msa_codes(acks) == [("AR", "HANG1"), ("AA", "AFTER1"), ("AA", "AFTER2"), ("AA", "AFTER3")]
        assert [(row["control_id"], row["ack_code"]) for row in journal_rows(gw)] == [
            ("HANG1", "AR"), ("AFTER1", "AA"), ("AFTER2", "AA"), ("AFTER3", "AA")]
        client.transport.loseConnection()
    finally:
        release.set()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_child_processes_journal_a_connections_messages_in_arrival_order(tmp_path, fault_plugin,
                                                                                monkeypatch):
    monkeypatch.setenv("HSSK_TEST_SLOW", "0.3")
    gw = await start_isolated(tmp_path, **{"pipeline.workers": 2})
    try:
        sent = ["SLOW0", "ORDER1", "ORDER2", "ORDER3", "SLOW4", "ORDER5", "ORDER6"]
        client = await connect_mllp(gw)
        client.transport.write(b"".join(wrap(fault_message(c)) for c in sent))
        acks = await client.wait_frames(len(sent), timeout=30)

        assert msa_codes(acks) == [("AA", c) for c in sent]
        assert [row["control_id"] for row in journal_rows(gw)] == sent
        client.transport.loseConnection()
    finally:
        await gw.stop()
