"""``pipeline.isolation = "processes"``: child processes decide, and a plugin that crashes or hangs
its interpreter costs one message and one child, never the gateway.

The misbehaving plugin (``tests/core/fault_plugin.py``, fixture ``fault_plugin``) is installed
through the entry-point group, as an integrator's would be.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.task import deferLater

from gateway.config import ConfigError
from gateway.formats.framing import wrap
from tests.core.fault_plugin import alive, decided_by, fault_message, fault_then_fine, start_isolated
from tests.support import (TestPlugin, connect_mllp, err_segments, free_port, gateway_config, hl7, http_request,
                           journal_rows, metric_value, msa, segments_of, send_and_receive, start_gateway, wait_until)

@pytest_twisted.ensureDeferred
async def test_a_child_process_decides_and_the_gateway_journals_and_answers(tmp_path, fault_plugin):
    gw = await start_isolated(tmp_path)
    try:
        client = await connect_mllp(gw)
        ack = await send_and_receive(client, fault_message("OK1"))

        assert msa(ack)[1:3] == ["AA", "OK1"]
        [row] = journal_rows(gw, control_id="OK1")
        assert (row["status"], row["plugin"]) == ("accepted", "fault_his")
        assert json.loads(row["records"])["person"]["family"] == "Nguyễn"
        pid = decided_by(fault_plugin)["OK1"]
        assert pid != os.getpid() and alive(pid)
        ready = await http_request(gw, "GET", "/readyz")
        assert json.loads(ready.body)["checks"]["pipeline"] == {"ok": True, "isolation": "processes",
                                                                "ready_processes": 1, "processes": 1, "waiting": 0}
        client.transport.loseConnection()
    finally:
        await gw.stop()
    await wait_until(lambda: not alive(pid), what="the child to end when the gateway stops")


@pytest_twisted.ensureDeferred
async def test_a_gateway_folder_in_the_working_directory_does_not_replace_the_childs_code(tmp_path, fault_plugin,
                                                                                          monkeypatch):
    shadow = tmp_path / "cwd" / "gateway" / "core"
    shadow.mkdir(parents=True)
    (shadow.parent / "__init__.py").write_text("")
    (shadow / "__init__.py").write_text("")
    (shadow / "pipeline_process.py").write_text("raise SystemExit('a gateway/ folder in the working directory ran')\n")
    monkeypatch.chdir(tmp_path / "cwd")
    gw = await start_isolated(tmp_path)
    try:
        client = await connect_mllp(gw)
        ack = await send_and_receive(client, fault_message("CWD1"))
        assert msa(ack)[1:3] == ["AA", "CWD1"]
        client.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_time_a_message_waited_for_a_child_does_not_get_the_child_killed(tmp_path, fault_plugin, monkeypatch):
    """SLOWB waits 0.6 s behind SLOWA, so its second runs out 0.4 s after the child took it: it
    is answered AR, but the child, 0.6 s per message, is healthy and keeps working."""
    monkeypatch.setenv("HSSK_TEST_SLOW", "0.6")
    gw = await start_isolated(tmp_path, **{"pipeline.timeout_seconds": 1})
    try:
        client = await connect_mllp(gw)
        client.send(fault_message("SLOWA"))
        client.send(fault_message("SLOWB"))
        first, second = await client.wait_frames(2)
        afterwards = await send_and_receive(client, fault_message("OK7"))

        assert msa(first)[1:3] == ["AA", "SLOWA"]
        assert msa(second)[1:3] == ["AR", "SLOWB"] and "did not answer within 1 s" in err_segments(second)[0][8]
        assert msa(afterwards)[1:3] == ["AA", "OK7"]
        pids = decided_by(fault_plugin)
        assert pids["SLOWA"] == pids["SLOWB"] == pids["OK7"]
        assert metric_value(gw, "hssk_pipeline_process_restarts_total", reason="timeout") == 0
        client.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_plugin_that_kills_its_process_costs_one_message_ae_207(tmp_path, fault_plugin):
    gw = await start_isolated(tmp_path)
    try:
        crashed, afterwards = await fault_then_fine(gw, "CRASH1", "OK2")

        assert msa(crashed)[1:3] == ["AE", "CRASH1"]
        [err] = err_segments(crashed)
        assert err[3] == "207^Application internal error^HL70357"
        assert "pipeline process" in err[8] and "fault_his" in err[8]
        assert msa(afterwards)[1:3] == ["AA", "OK2"]
        pids = decided_by(fault_plugin)
        assert not alive(pids["CRASH1"]) and pids["OK2"] != pids["CRASH1"]
        assert metric_value(gw, "hssk_plugin_exceptions_total", plugin="fault_his", stage="process") == 1
        assert metric_value(gw, "hssk_pipeline_process_restarts_total", reason="crash") == 1
        [row] = journal_rows(gw, control_id="CRASH1")
        assert (row["status"], row["plugin"]) == ("error", "fault_his")
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_hung_plugin_is_answered_ar_and_its_process_killed(tmp_path, fault_plugin):
    gw = await start_isolated(tmp_path, **{"pipeline.timeout_seconds": 1})
    try:
        client = await connect_mllp(gw)

        hung = await send_and_receive(client, fault_message("HANG1"))
        await wait_until(lambda: metric_value(gw, "hssk_pipeline_processes_ready") == 1, timeout=60,
                         what="a new pipeline process")
        afterwards = await send_and_receive(client, fault_message("OK3"))

        assert msa(hung)[1:3] == ["AR", "HANG1"]
        [err] = err_segments(hung)
        assert err[3].startswith("207^") and "plugin fault_his did not answer within 1 s" in err[8]
        pids = decided_by(fault_plugin)
        await wait_until(lambda: not alive(pids["HANG1"]), what="the hung process to be killed")
        assert msa(afterwards)[1:3] == ["AA", "OK3"] and pids["OK3"] != pids["HANG1"]
        assert metric_value(gw, "hssk_pipeline_process_restarts_total", reason="timeout") == 1
        assert metric_value(gw, "hssk_plugin_timeouts_total", plugin="fault_his") == 1
        client.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("control_id", ["HELPER1", "FORK1"])
async def test_a_child_that_dies_leaving_a_process_behind_still_costs_one_message(tmp_path, fault_plugin,
                                                                                  control_id):
    """A program the plugin started (``subprocess``) or a forked copy outlives the child; it must
    not keep the gateway waiting for pipes it holds: the message is still AE, a new child decides
    the next one, and the gateway stops. The timeout is generous so that a loaded machine's slow
    start of the next child is not taken for a wait on those pipes, which would be AR too."""
    gw = await start_isolated(tmp_path, **{"pipeline.timeout_seconds": 15})
    try:
        crashed, afterwards = await fault_then_fine(gw, control_id, "OK5")

        assert msa(crashed)[1:3] == ["AE", control_id]
        assert "pipeline process" in err_segments(crashed)[0][8]
        assert msa(afterwards)[1:3] == ["AA", "OK5"]
        assert metric_value(gw, "hssk_pipeline_processes_ready") == 1
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_decision_that_cannot_be_pickled_is_ae_207_and_the_child_lives(tmp_path, fault_plugin):
    gw = await start_isolated(tmp_path)
    try:
        odd, afterwards = await fault_then_fine(gw, "ODD1", "OK6")

        assert msa(odd)[1:3] == ["AE", "ODD1"]
        [err] = err_segments(odd)
        assert err[3].startswith("207^") and "plugin fault_his returned data the gateway cannot carry" in err[8]
        assert msa(afterwards)[1:3] == ["AA", "OK6"]
        pids = decided_by(fault_plugin)
        assert pids["ODD1"] == pids["OK6"]
        assert metric_value(gw, "hssk_plugin_exceptions_total", plugin="fault_his", stage="serialize") == 1
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_acks_are_timed_by_the_injected_clock(tmp_path, fault_plugin):
    from twisted.internet import reactor
    from twisted.internet.task import Clock

    from gateway.app import Gateway

    clock = Clock()
    clock.advance(300_000_000)  # July 1979
    gw = Gateway(gateway_config(tmp_path / "data", **{"pipeline.isolation": "processes", "pipeline.workers": 1}),
                 reactor, clock=clock)
    await gw.start()
    try:
        await wait_until(lambda: metric_value(gw, "hssk_pipeline_processes_ready") == 1, timeout=60,
                         what="the pipeline process")
        client = await connect_mllp(gw)
        ack = await send_and_receive(client, fault_message("CLOCK1"))

        assert msa(ack)[1:3] == ["AA", "CLOCK1"]
        assert segments_of(ack)["MSH"][0][6].startswith("1979")
        client.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_child_that_dies_soon_after_it_is_ready_is_restarted_with_a_growing_delay(tmp_path, fault_plugin,
                                                                                         monkeypatch):
    monkeypatch.setenv("HSSK_TEST_DIE_AFTER", "0.05")
    from twisted.internet import reactor

    from gateway.app import Gateway

    gw = Gateway(gateway_config(tmp_path / "data", **{"pipeline.isolation": "processes", "pipeline.workers": 1}),
                 reactor)
    await gw.start()
    try:
        await wait_until(lambda: metric_value(gw, "hssk_pipeline_process_restarts_total", reason="idle") >= 2,
                         timeout=30, what="two restarts")
        await deferLater(reactor, 3.0, lambda: None)
        # Without the delay a child dying 50 ms after it is ready would be restarted tens of times.
        assert metric_value(gw, "hssk_pipeline_process_restarts_total", reason="idle") <= 4
    finally:
        await gw.stop()
    assert not [call for call in reactor.getDelayedCalls() if "ProcessPool" in call.func.__qualname__]


@pytest_twisted.ensureDeferred
async def test_a_message_sent_to_a_child_that_just_died_goes_to_another_idle_child(tmp_path, fault_plugin):
    """The child died idle, unnoticed, as the message was written to it; no plugin claimed the
    message, so it goes to the other child, which is idle, rather than waiting for a new one."""
    from gateway.model.envelope import Envelope

    gw = await start_isolated(tmp_path, **{"pipeline.workers": 2, "pipeline.timeout_seconds": 5})
    try:
        first, second = list(gw.intake._pool._idle)
        os.kill(first.pid, signal.SIGKILL)
        # In the same reactor turn, so the pool cannot yet know: the message is written to the dead child.
        outcome = await gw.intake.submit(Envelope(fault_message("RESENT1"), "mllp", "127.0.0.1:1", time.time()))

        assert (outcome.ack_code, outcome.plugin) == ("AA", "fault_his")
        assert decided_by(fault_plugin)["RESENT1"] == second.pid
        # Answered before the dead child's replacement, started a second later, was ready.
        assert metric_value(gw, "hssk_pipeline_processes_ready") == 1
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_decision_written_just_before_the_child_died_still_counts(tmp_path, fault_plugin):
    """Twisted hands over a pipe's data a piece per reactor turn, so the child's exit can be
    seen while the end of its last, large decision is still in the pipe; a busy reactor makes
    that likely. The decision must stand (AA), not become 'the process ended' (AE)."""
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    busy = LoopingCall(time.sleep, 0.001)
    gw = await start_isolated(tmp_path, **{"pipeline.workers": 2})
    busy.start(0, now=False)
    try:
        client = await connect_mllp(gw)
        big_note = "OBX|1|TX|NOTE^Note||" + "x" * 600_000
        ack = await send_and_receive(client, hl7("PID|1||079085000123^^^BCA^NI||Nguyễn^Văn Thử||19850412|M",
                                                 big_note, control_id="LAST1", sending_app="FAULT_HIS"))
        # The busy reactor reads the 600 kB decision a piece per turn; on a loaded machine that
        # alone can take seconds, so the wait is long (the point is the answer, not the time).
        await wait_until(lambda: metric_value(gw, "hssk_pipeline_process_restarts_total", reason="idle") == 1,
                         timeout=40, what="the child's exit to be seen")
        await deferLater(reactor, 0.2, lambda: None)

        assert msa(ack)[1:3] == ["AA", "LAST1"]
        assert metric_value(gw, "hssk_pipeline_processes_ready") == len(gw.intake._pool._idle) <= 2
        client.transport.loseConnection()
    finally:
        busy.stop()
        await gw.stop()
    assert metric_value(gw, "hssk_pipeline_processes_ready") == 0


@pytest_twisted.ensureDeferred
async def test_messages_wait_for_a_free_process_and_keep_their_order(tmp_path, fault_plugin):
    gw = await start_isolated(tmp_path, **{"pipeline.workers": 2})
    try:
        client = await connect_mllp(gw)
        for n in range(20):
            client.send(fault_message(f"ORDER{n}"))
        acks = await client.wait_frames(20, timeout=30)

        assert [msa(a)[1:3] for a in acks] == [["AA", f"ORDER{n}"] for n in range(20)]
        assert len(set(decided_by(fault_plugin).values())) == 2
        client.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_without_a_ready_process_the_gateway_is_not_ready_and_answers_ar(tmp_path, monkeypatch):
    """A child that cannot even import the gateway (here a broken ``gateway`` package first on
    its path) is started again with a growing delay; meanwhile /readyz says why and messages get
    AR rather than waiting for ever."""
    broken = tmp_path / "broken" / "gateway"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('this gateway cannot start')\n")
    monkeypatch.setenv("PYTHONPATH", str(broken.parent))
    monkeypatch.chdir(tmp_path)  # ``python -m`` puts the working directory first on the path
    from twisted.internet import reactor

    from gateway.app import Gateway

    gw = Gateway(gateway_config(tmp_path / "data", **{"pipeline.isolation": "processes", "pipeline.workers": 1,
                                                      "pipeline.timeout_seconds": 1}), reactor)
    await gw.start()
    try:
        await wait_until(lambda: metric_value(gw, "hssk_pipeline_process_restarts_total", reason="start") >= 1,
                         timeout=30, what="the failed start to be counted")
        ready = await http_request(gw, "GET", "/readyz")
        client = await connect_mllp(gw)
        ack = await send_and_receive(client, hl7(control_id="NOPROC1", sending_app="FAULT_HIS"))

        assert ready.code == 503
        assert json.loads(ready.body)["checks"]["pipeline"] == {"ok": False, "isolation": "processes",
                                                                "ready_processes": 0, "processes": 1, "waiting": 0}
        assert msa(ack)[1:3] == ["AR", "NOPROC1"]
        [err] = err_segments(ack)
        assert "no pipeline worker was free within 1 s" in err[8]
        assert metric_value(gw, "hssk_pipeline_processes_ready") == 0
        assert gw.intake.pipeline_status()["waiting"] == 0  # the timed-out message left the queue
        client.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_children_run_on_the_cpus_named_in_process_cpus(tmp_path, fault_plugin):
    cpu = max(os.sched_getaffinity(0))
    gw = await start_isolated(tmp_path, **{"pipeline.process_cpus": [cpu]})
    try:
        client = await connect_mllp(gw)
        ack = await send_and_receive(client, fault_message("CPU1"))
        client.transport.loseConnection()

        assert msa(ack)[1:3] == ["AA", "CPU1"]
        assert os.sched_getaffinity(decided_by(fault_plugin)["CPU1"]) == {cpu}
    finally:
        await gw.stop()


def test_process_cpus_must_be_cpus_of_this_machine(tmp_path):
    for wrong in ([os.cpu_count()], [-1], ["0"]):
        with pytest.raises(ConfigError) as raised:
            gateway_config(tmp_path, **{"pipeline.process_cpus": wrong})
        assert raised.value.key == "pipeline.process_cpus"


def test_isolation_must_be_threads_or_processes(tmp_path):
    with pytest.raises(ConfigError) as raised:
        gateway_config(tmp_path, **{"pipeline.isolation": "fork"})
    assert raised.value.key == "pipeline.isolation"


@pytest_twisted.ensureDeferred
async def test_processes_refuse_plugins_registered_in_process(tmp_path):
    with pytest.raises(ConfigError) as raised:
        await start_gateway(tmp_path / "data", plugins=[TestPlugin()], **{"pipeline.isolation": "processes"})
    assert raised.value.key == "pipeline.isolation" and "entry-point group" in raised.value.rule


def test_children_end_when_the_gateway_is_killed(tmp_path, fault_plugin):
    """SIGKILL gives the gateway no chance to stop its children: an idle one ends because its
    input closes, one stuck in a plugin because the kernel kills it with its parent."""
    port = free_port()
    env = {**os.environ, "HSSK_PIPELINE__ISOLATION": "processes", "HSSK_PIPELINE__WORKERS": "2"}
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp_path / "data"),
         "--mllp-listen", f"tcp:{port}:interface=127.0.0.1", "--http-listen", "tcp:0:interface=127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        children: list[int] = []
        deadline = time.monotonic() + 60
        while len(children) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            children = _children_of(gateway.pid)
        assert len(children) == 2, "the gateway did not start its two pipeline processes"
        sender = _connect(port, deadline)
        sender.sendall(wrap(fault_message("HANG9")))
        deadline = time.monotonic() + 30
        while "HANG9" not in decided_by(fault_plugin) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert decided_by(fault_plugin)["HANG9"] in children
    finally:
        gateway.send_signal(signal.SIGKILL)
        gateway.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    sender.close()
    assert not any(alive(pid) for pid in children)


def test_sigterm_to_the_process_group_lets_children_finish_what_they_hold(tmp_path, fault_plugin):
    """systemd (KillMode=control-group) and Ctrl-C signal every process of the gateway: a child
    in the middle of a decision must finish it, as a thread would, so the sender gets AA."""
    port = free_port()
    env = {**os.environ, "HSSK_PIPELINE__ISOLATION": "processes", "HSSK_PIPELINE__WORKERS": "1"}
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp_path / "data"),
         "--mllp-listen", f"tcp:{port}:interface=127.0.0.1", "--http-listen", "tcp:0:interface=127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _children_of(gateway.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        sender = _connect(port, deadline)
        sender.sendall(wrap(fault_message("SLOW1")))
        while "SLOW1" not in decided_by(fault_plugin) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(gateway.pid, signal.SIGTERM)
        answer = b""
        while not answer.endswith(b"\x1c\r"):
            chunk = sender.recv(65536)
            assert chunk, f"the connection closed after {answer!r}"
            answer += chunk
        sender.close()
        assert gateway.wait(30) == 0
    finally:
        if gateway.poll() is None:
            os.killpg(gateway.pid, signal.SIGKILL)
            gateway.wait()

    assert msa(answer.strip(b"\x0b\x1c\r"))[1:3] == ["AA", "SLOW1"]


def _connect(port: int, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=30)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found
