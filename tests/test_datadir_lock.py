"""One gateway per data directory (issue 15, item 4).

Two gateways on one journal would both reset the rows left in flight and both deliver the same
outbox. The first to start holds an exclusive lock on ``DATA_DIR/gateway.lock``; a second one
exits with status 1 before it touches the journal, naming the holder's PID.
"""
from __future__ import annotations

import os
import subprocess
import sys

from gateway.core.datadir_lock import holder_pid
from tests.crash_client import REPO, SAMPLE, GatewayProcess, Tally, message_with_control_id, send_all


def serve(data_dir) -> subprocess.CompletedProcess:
    """A second ``hssk-gateway serve`` on ``data_dir``, run until it exits."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", "config/gateway.toml",
                           "--data-dir", str(data_dir), "--mllp-listen", "tcp:0:interface=127.0.0.1",
                           "--http-listen", "tcp:0:interface=127.0.0.1"],
                          cwd=REPO, env=dict(os.environ), stdin=subprocess.DEVNULL, capture_output=True, timeout=30)


def accepts_a_message(gateway: GatewayProcess, control_id: str) -> bool:
    tally = Tally()
    send_all(gateway.port, [(control_id, message_with_control_id(SAMPLE.read_bytes(), control_id))], tally)
    return control_id in tally.acked


def test_a_second_gateway_on_the_same_data_dir_exits_non_zero_naming_the_holder(tmp_path):
    first = GatewayProcess(tmp_path / "data")
    try:
        second = serve(tmp_path / "data")

        assert second.returncode == 1
        assert f"PID {first.pid}" in second.stderr.decode()
        assert "gateway.lock" in second.stderr.decode()
        assert holder_pid(tmp_path / "data") == first.pid
        assert accepts_a_message(first, "STILL1")
    finally:
        first.terminate()
        first.ensure_dead()


def test_the_data_dir_is_free_again_once_its_gateway_stopped_or_was_killed(tmp_path):
    first = GatewayProcess(tmp_path / "data")
    first.terminate()
    first.ensure_dead()
    assert holder_pid(tmp_path / "data") is None

    second = GatewayProcess(tmp_path / "data")
    try:
        assert holder_pid(tmp_path / "data") == second.pid
        second.kill()
        assert holder_pid(tmp_path / "data") is None

        third = GatewayProcess(tmp_path / "data")
        try:
            assert holder_pid(tmp_path / "data") == third.pid
            assert accepts_a_message(third, "AFTERKILL1")
        finally:
            third.terminate()
            third.ensure_dead()
    finally:
        second.ensure_dead()


def test_a_data_dir_no_gateway_ever_used_has_no_holder(tmp_path):
    assert holder_pid(tmp_path / "nothing") is None
