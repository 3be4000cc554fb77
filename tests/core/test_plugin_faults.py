"""Faults stay small (DESIGN.md §3.5): a plugin that raises costs one message an AE/207, a plugin
that hangs costs one message an AR/207 at pipeline.timeout_seconds; other messages go on."""
import json
import sys
import threading

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.task import Clock, deferLater

from gateway.model.hooks import hookimpl
from tests.support import connect_mllp, err_segments, hl7, journal_rows, metric_value, msa, send_and_receive, \
    standard_records, start_gateway, wait_until

TIMEOUT = 5.0


def explode(message):
    raise RuntimeError("normalize blew up on PID-3 079085000123")


@pytest_twisted.ensureDeferred
async def test_plugin_exception_gets_ae_207_naming_plugin_and_stage(gateway, plugin):
    plugin.behaviour = explode
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, hl7(control_id="BOOM1"))

    assert msa(ack)[1:3] == ["AE", "BOOM1"]
    [err] = err_segments(ack)
    assert err[3] == "207^Application internal error^HL70357"
    assert "test_his" in err[8] and "normalize" in err[8] and "RuntimeError" in err[8]
    assert "079085000123" not in err[8]
    assert metric_value(gateway, "hssk_plugin_exceptions_total", plugin="test_his", stage="normalize") == 1
    [row] = journal_rows(gateway)
    assert (row["status"], row["plugin"]) == ("error", "test_his")
    assert json.loads(row["errors"])[0]["code"] == 207
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_plugin_exception_does_not_stop_other_connections_or_the_same_one(gateway, plugin):
    plugin.behaviour = lambda message: explode(message) if message.control_id == "BOOM2" else standard_records(message)
    failing, other = await connect_mllp(gateway), await connect_mllp(gateway)

    failed = await send_and_receive(failing, hl7(control_id="BOOM2"))
    elsewhere = await send_and_receive(other, hl7(control_id="FINE1"))
    afterwards = await send_and_receive(failing, hl7(control_id="FINE2"))

    assert [msa(a)[1:3] for a in (failed, elsewhere, afterwards)] == [["AE", "BOOM2"], ["AA", "FINE1"], ["AA", "FINE2"]]
    failing.transport.loseConnection()
    other.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_plugin_calling_sys_exit_costs_one_message_not_a_worker(tmp_path, plugin):
    plugin.behaviour = lambda message: sys.exit(3) if message.control_id.startswith("EXIT") else standard_records(message)
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **{"pipeline.workers": 1})
    client = await connect_mllp(gw)

    exits = [await send_and_receive(client, hl7(control_id=f"EXIT{n}")) for n in (1, 2)]
    fine = await send_and_receive(client, hl7(control_id="FINE1"))

    assert [msa(a)[1] for a in exits] == ["AE", "AE"] and "SystemExit" in err_segments(exits[0])[0][8]
    assert msa(fine)[1:3] == ["AA", "FINE1"]
    client.transport.loseConnection()
    await gw.stop()


class ExplodingIdentify:
    @hookimpl(tryfirst=True)
    def hssk_identify(self, message):
        raise ValueError("identify blew up")


@pytest_twisted.ensureDeferred
async def test_exception_in_identify_gets_ae_207_counted_for_unknown_plugin(tmp_path, plugin):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin, ExplodingIdentify()])
    try:
        client = await connect_mllp(gw)
        ack = await send_and_receive(client, hl7(control_id="IDBOOM"))
        client.transport.loseConnection()
    finally:
        await gw.stop()

    assert msa(ack)[1:3] == ["AE", "IDBOOM"]
    [err] = err_segments(ack)
    assert err[3].startswith("207^") and "identify" in err[8]
    assert metric_value(gw, "hssk_plugin_exceptions_total", plugin="unknown", stage="identify") == 1


class Gate:
    """Makes the test plugin hang on chosen control ids until released (bounded, so a failing test
    cannot leave a worker thread stuck), and tells the reactor when a worker has entered it."""

    def __init__(self, control_ids):
        self.control_ids = set(control_ids)
        self.release = threading.Event()
        self.entered: Deferred = Deferred()

    def __call__(self, message):
        if message.control_id in self.control_ids:
            reactor.callFromThread(lambda: self.entered.called or self.entered.callback(message.control_id))
            self.release.wait(30)
        return standard_records(message)


@pytest_twisted.async_yield_fixture
async def slow_gateway(tmp_path, plugin):
    """A gateway whose pipeline timeout runs on a task.Clock, with the plugin hanging on SLOW1."""
    gate = Gate({"SLOW1"})
    plugin.behaviour = gate
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], clock=Clock(),
                             **{"pipeline.timeout_seconds": TIMEOUT})
    yield gw, gate
    gate.release.set()
    gw.clock.advance(TIMEOUT)  # answer anything still waiting, so stop() can drain
    await gw.stop()


@pytest_twisted.ensureDeferred
async def test_hung_plugin_gets_ar_207_at_the_timeout_while_other_senders_get_aa(slow_gateway):
    gw, gate = slow_gateway
    slow, fast = await connect_mllp(gw), await connect_mllp(gw)
    slow.send(hl7(control_id="SLOW1"))
    await gate.entered

    quick = await send_and_receive(fast, hl7(control_id="FAST1", sending_app="LIS_THU_NGHIEM"))
    answered_before_timeout = list(slow.frames)
    gw.clock.advance(TIMEOUT)
    [late] = await slow.wait_frames(1)

    assert msa(quick)[1:3] == ["AA", "FAST1"]
    assert answered_before_timeout == []
    assert msa(late)[1:3] == ["AR", "SLOW1"]
    [err] = err_segments(late)
    assert err[3].startswith("207^") and "did not answer within" in err[8] and "test_his" in err[8]
    assert metric_value(gw, "hssk_plugin_timeouts_total", plugin="test_his") == 1
    [row] = journal_rows(gw, control_id="SLOW1")
    assert (row["status"], row["ack_code"], row["plugin"]) == ("rejected", "AR", "test_his")
    assert json.loads(row["errors"])[0]["code"] == 207
    gate.release.set()
    slow.transport.loseConnection()
    fast.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_timed_out_message_resent_after_recovery_is_processed_again(slow_gateway):
    gw, gate = slow_gateway
    client = await connect_mllp(gw)
    payload = hl7(control_id="SLOW1")
    client.send(payload)
    await gate.entered
    gw.clock.advance(TIMEOUT)
    [refused] = await client.wait_frames(1)
    gate.control_ids.clear()  # the plugin recovers
    gate.release.set()

    accepted = await send_and_receive(client, payload)

    assert msa(refused)[1] == "AR"
    assert msa(accepted)[1:3] == ["AA", "SLOW1"]
    assert [(r["status"], r["repeat_count"]) for r in journal_rows(gw, control_id="SLOW1")] == [
        ("rejected", 0), ("accepted", 0)]
    client.transport.loseConnection()


class Trap:
    """Holds every message whose control id starts with SLOW until released, and tells the
    reactor each time a worker walks in."""

    def __init__(self):
        self.release = threading.Event()
        self.entered = DeferredQueue()

    def __call__(self, message):
        if message.control_id.startswith("SLOW"):
            reactor.callFromThread(self.entered.put, message.control_id)
            self.release.wait(30)
        return standard_records(message)


def pipeline_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("hssk-pipeline-"))


@pytest_twisted.async_yield_fixture
async def trapped(tmp_path, plugin):
    trap = Trap()
    plugin.behaviour = trap
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], clock=Clock(),
                             **{"pipeline.timeout_seconds": TIMEOUT, "pipeline.workers": 1})
    yield gw, trap
    trap.release.set()
    gw.clock.advance(TIMEOUT)
    await gw.stop()


async def hang_one(gw, trap, client, control_id: str) -> bytes:
    """Send a message the plugin hangs on, wait until a worker is inside, let it time out."""
    expected = len(client.frames) + 1
    client.send(hl7(control_id=control_id))
    assert await trap.entered.get() == control_id
    gw.clock.advance(TIMEOUT)
    return (await client.wait_frames(expected))[-1]


@pytest_twisted.ensureDeferred
async def test_a_worker_stuck_in_a_plugin_is_replaced_so_intake_goes_on(trapped):
    gw, trap = trapped
    client = await connect_mllp(gw)

    refused = [await hang_one(gw, trap, client, f"SLOW{n}") for n in (1, 2)]
    accepted = await send_and_receive(client, hl7(control_id="FAST1"))

    assert [msa(ack)[1:3] for ack in refused] == [["AR", "SLOW1"], ["AR", "SLOW2"]]
    assert msa(accepted)[1:3] == ["AA", "FAST1"]
    assert metric_value(gw, "hssk_pipeline_stuck_workers") == 2
    assert len(pipeline_threads()) == 3

    trap.release.set()  # the plugin calls return; the spare threads leave
    await wait_until(lambda: metric_value(gw, "hssk_pipeline_stuck_workers") == 0 and len(pipeline_threads()) == 1,
                     what="stuck workers back and the pool at pipeline.workers")
    assert msa(await send_and_receive(client, hl7(control_id="FAST2")))[1:3] == ["AA", "FAST2"]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_replacements_stop_at_four_threads_per_worker(trapped):
    gw, trap = trapped
    client = await connect_mllp(gw)
    for n in range(1, 5):
        await hang_one(gw, trap, client, f"SLOW{n}")
    assert len(pipeline_threads()) == 4

    client.send(hl7(control_id="FAST1"))  # no worker is free and none may be added
    await deferLater(reactor, 0.2, lambda: None)
    gw.clock.advance(TIMEOUT)
    [*_, waited] = await client.wait_frames(5)

    assert msa(waited)[1:3] == ["AR", "FAST1"]
    assert metric_value(gw, "hssk_pipeline_stuck_workers") == 4
    trap.release.set()
    await wait_until(lambda: len(pipeline_threads()) == 1, what="the pool back at one worker")
    assert msa(await send_and_receive(client, hl7(control_id="FAST2")))[1:3] == ["AA", "FAST2"]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_replacement_thread_the_system_refuses_costs_no_answer(trapped, monkeypatch):
    gw, trap = trapped
    client = await connect_mllp(gw)
    real_start = threading.Thread.start

    def refuse_pipeline_threads(thread):
        if thread.name.startswith("hssk-pipeline-"):
            raise RuntimeError("can't start new thread")  # what CPython raises at a process limit
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse_pipeline_threads)

    refused = await hang_one(gw, trap, client, "SLOW1")
    trap.release.set()
    await wait_until(lambda: metric_value(gw, "hssk_pipeline_stuck_workers") == 0, what="the stuck worker back")
    accepted = await send_and_receive(client, hl7(control_id="FAST1"))

    assert msa(refused)[1:3] == ["AR", "SLOW1"]
    assert msa(accepted)[1:3] == ["AA", "FAST1"]  # the worker that came back stayed: the pool is not empty
    assert len(pipeline_threads()) == 1
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_message_answered_ar_while_it_waited_for_the_journal_is_journaled_as_that_ar(tmp_path, plugin):
    """The writer is busy for 1.5 s; the message is decided at once but its 1 s runs out while it
    waits to be committed. It is answered AR, so the journal must say AR too, not the AA it was
    decided as, and a resend is decided afresh."""
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **{"pipeline.timeout_seconds": 1})
    try:
        busy = await _hold_the_writer(gw, 1.5)
        client = await connect_mllp(gw)
        late = await send_and_receive(client, hl7(control_id="LATEJ1"))
        await busy
        await wait_until(lambda: journal_rows(gw, control_id="LATEJ1"), what="the row")
        again = await send_and_receive(client, hl7(control_id="LATEJ1"))

        assert msa(late)[1:3] == ["AR", "LATEJ1"]
        assert "the journal did not commit within 1 s" in err_segments(late)[0][8]
        first, second = journal_rows(gw, control_id="LATEJ1")
        assert (first["status"], first["ack_code"]) == ("rejected", "AR")
        assert "the journal did not commit within 1 s" in json.loads(first["errors"])[0]["text"]
        assert msa(again)[1:3] == ["AA", "LATEJ1"] and (second["status"], second["ack_code"]) == ("accepted", "AA")
        client.transport.loseConnection()
    finally:
        await gw.stop()


async def _hold_the_writer(gw, seconds: float) -> Deferred:
    """Make the journal writer sleep ``seconds`` inside a commit, and return once it has begun:
    a message sent after that waits for the next commit instead of joining this one."""
    import time

    begun = threading.Event()

    def hold(conn, now):
        begun.set()
        time.sleep(seconds)

    done = gw.writer.run(hold)
    await wait_until(begun.is_set, what="the writer to be held")
    return done


async def _commit_straddling_the_deadline(gw, control_id: str, commit_seconds: float) -> bytes:
    """Hold the writer 0.5 s, let the message be decided behind it, then make the commit that
    holds the message last ``commit_seconds`` (a task in the same transaction): with a 1 s
    timeout, the message's deadline falls while its commit is under way."""
    import time

    first = await _hold_the_writer(gw, 0.5)
    client = await connect_mllp(gw)
    client.send(hl7(control_id=control_id))
    await deferLater(reactor, 0.2, lambda: None)
    second = gw.writer.run(lambda conn, now: time.sleep(commit_seconds))
    [ack] = await client.wait_frames(1)
    await first
    await second
    client.transport.loseConnection()
    return ack


@pytest_twisted.ensureDeferred
async def test_a_commit_under_way_at_the_deadline_gives_the_answer(tmp_path, plugin):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **{"pipeline.timeout_seconds": 1})
    try:
        ack = await _commit_straddling_the_deadline(gw, "STRADDLE1", 1.2)

        assert msa(ack)[1:3] == ["AA", "STRADDLE1"]
        [row] = journal_rows(gw, control_id="STRADDLE1")
        assert (row["status"], row["ack_code"]) == ("accepted", "AA")
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_commit_stalled_a_second_timeout_is_answered_ar(tmp_path, plugin):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **{"pipeline.timeout_seconds": 1})
    try:
        ack = await _commit_straddling_the_deadline(gw, "STALLED1", 2.5)

        assert msa(ack)[1:3] == ["AR", "STALLED1"]
        assert "the journal did not commit within 2 s" in err_segments(ack)[0][8]
        assert metric_value(gw, "hssk_connections_refused_total", transport="mllp", reason="store") == 1
    finally:
        await gw.stop()
