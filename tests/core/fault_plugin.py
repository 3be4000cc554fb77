"""The misbehaving plugin of the pipeline process tests, installed the way an integrator's is:
through the entry-point group, as a module and a ``.dist-info`` in a temporary directory on
``sys.path`` (this process) and on ``PYTHONPATH`` (the children). Its adapter writes its process
id to a file before it decides, so tests can see which process decided and that a killed one is
gone. Behaviours are chosen by the control id's prefix: CRASH, HANG, SLOW (``HSSK_TEST_SLOW``
seconds), LAST, HELPER, FORK, ODD; anything else is decided normally.
"""
import os
from pathlib import Path

from tests.support import (connect_mllp, gateway_config, hl7, install_plugin_module, metric_value, send_and_receive,
                           wait_until)

FAULT_PLUGIN = '''
import os
import subprocess
import sys
import threading
import time

from gateway.plugin import Issue, PluginDescription, hookimpl, records_from_hl7

hssk_contract = "1.0"


class Adapter:
    name = "fault_his"

    def normalize(self, message):
        with open(os.environ["HSSK_TEST_PID_FILE"], "a") as f:
            f.write(f"{message.control_id} {os.getpid()}\\n")
        if message.control_id.startswith("CRASH"):
            os._exit(3)
        if message.control_id.startswith("HANG"):
            time.sleep(600)
        if message.control_id.startswith("SLOW"):
            time.sleep(float(os.environ.get("HSSK_TEST_SLOW", "2")))
        if message.control_id.startswith("LAST"):  # dies as soon as its decision is written
            threading.Thread(target=exit_once_waiting_for_input, daemon=True).start()
        if message.control_id.startswith("HELPER"):  # a helper program that outlives its parent
            subprocess.Popen(["sleep", "5"])
            os._exit(3)
        if message.control_id.startswith("FORK"):  # a forked copy holds every descriptor for a while
            if os.fork() == 0:
                time.sleep(5)
                os._exit(0)
            os._exit(3)
        return records_from_hl7(message)


def exit_once_waiting_for_input():
    main = threading.main_thread().ident
    while sys._current_frames()[main].f_code.co_name != "<lambda>":  # the child's read of the next question
        time.sleep(0.0005)
    os._exit(0)


@hookimpl
def hssk_configure(config):
    # A plugin that kills its process soon after loading (only in a child, not in the test's own).
    if os.environ.get("HSSK_TEST_DIE_AFTER") and "pipeline_process" in sys.argv[0]:
        threading.Timer(float(os.environ["HSSK_TEST_DIE_AFTER"]), os._exit, (4,)).start()


@hookimpl
def hssk_check(message, records):
    if message is not None and message.control_id.startswith("ODD"):
        class LocalIssue(Issue):  # defined here, so it cannot be pickled
            pass
        return [LocalIssue(0, "a warning of a class only this function knows", "PID^1", "W")]
    return None


@hookimpl
def hssk_describe():
    return PluginDescription("fault_his", "MSH-3 FAULT_HIS")


@hookimpl
def hssk_identify(message):
    return Adapter() if message.sending_application == "FAULT_HIS" else None
'''


def install_fault_plugin(tmp_path: Path, monkeypatch) -> Path:
    """Installs ``fault_his`` for this process and its children; returns the pid file."""
    site = tmp_path / "site"
    install_plugin_module(site, "hssk_fault_plugin", FAULT_PLUGIN, "fault_his", "hssk-fault-plugin")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    pid_file = tmp_path / "deciders.txt"
    pid_file.touch()
    monkeypatch.setenv("HSSK_TEST_PID_FILE", str(pid_file))
    return pid_file


def decided_by(pid_file: Path) -> dict[str, int]:
    """control id → the process id that decided it."""
    return {cid: int(pid) for cid, pid in (line.split() for line in pid_file.read_text().splitlines())}


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie no one has reaped yet (an orphan in a container
    whose first process does not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def fault_message(control_id: str) -> bytes:
    return hl7(control_id=control_id, sending_app="FAULT_HIS")


async def fault_then_fine(gw, fault_id: str, fine_id: str) -> tuple[bytes, bytes]:
    """Send a misbehaving message, then a good one, on one connection; return both ACKs."""
    client = await connect_mllp(gw)
    try:
        return (await send_and_receive(client, fault_message(fault_id)),
                await send_and_receive(client, fault_message(fine_id)))
    finally:
        client.transport.loseConnection()


async def start_isolated(tmp_path, **overrides):
    from twisted.internet import reactor

    from gateway.app import Gateway

    config = gateway_config(tmp_path / "data", **{"pipeline.isolation": "processes", "pipeline.workers": 1,
                                                  **overrides})
    gateway = Gateway(config, reactor)
    await gateway.start()
    await wait_until(lambda: metric_value(gateway, "hssk_pipeline_processes_ready") == config.pipeline.workers,
                     timeout=60, what="the pipeline processes to be ready")
    return gateway
