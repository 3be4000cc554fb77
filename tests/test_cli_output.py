"""How the CLI's output behaves where operators send it: into a pipe that closes early
(``| head``), and which gateway a description is of."""
import json
import os
import subprocess

import pytest

from tests.support import CLI, REPO, run_cli


def run_into_closed_pipe(*args) -> subprocess.CompletedProcess:
    """``hssk-gateway ARGS | head -0``: stdout is a pipe whose reader is gone before anything is written."""
    read_end, write_end = os.pipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    try:
        process = subprocess.Popen([str(CLI), *args], cwd=REPO, env=env, stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
        os.close(read_end)
    _, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, b"", stderr)


@pytest.mark.parametrize("args", [("plugins", "--json"), ("plugins",), ("clients", "list", "--json"), ("check-config",)])
def test_output_into_a_closed_pipe_ends_quietly(args):
    result = run_into_closed_pipe(*args, "--config", "config/gateway.toml")

    assert result.stderr == b""
    assert result.returncode == 141  # 128 + SIGPIPE, what a shell reports for a writer the pipe ended


@pytest.mark.parametrize("command", [("plugins",), ("clients", "list")])
def test_descriptions_say_they_are_of_the_built_in_defaults_without_config(command):
    result = run_cli(*command)

    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines()[0] == (
        "configuration: built-in defaults and HSSK_* environment (no --config: pass the gateway's own "
        "--config to describe it)")


@pytest.mark.parametrize("command", [("plugins",), ("clients", "list")])
def test_descriptions_name_the_config_file_they_describe(command, tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('[plugins.viettel_his]\nsending_applications = ["BV_SITE_HIS"]\n'
                    '[clients.bv_site]\nfacilities = ["79001"]\naddresses = ["10.79.1.0/24"]\n', encoding="utf-8")

    result = run_cli(*command, "--config", path)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == f"configuration: {path}"
    assert any("BV_SITE_HIS" in line or line.startswith("bv_site ") for line in lines[1:])


@pytest.mark.parametrize("command", [("plugins",), ("clients", "list")])
def test_json_descriptions_of_the_defaults_warn_on_stderr_and_stay_json(command):
    on_defaults = run_cli(*command, "--json")
    configured = run_cli(*command, "--json", "--config", "config/gateway.toml")

    assert json.loads(on_defaults.stdout) and json.loads(configured.stdout)
    assert b"configuration: built-in defaults" in on_defaults.stderr
    assert configured.stderr == b""


@pytest.fixture(scope="module")
def journaled(tmp_path_factory):
    """(data dir, the bytes of the one message a real gateway journaled)."""
    import pytest_twisted
    from twisted.internet.defer import ensureDeferred

    from tests.support import TestPlugin, connect_mllp, hl7, send_and_receive, start_gateway

    data_dir = tmp_path_factory.mktemp("tty") / "data"
    raw = hl7("PID|1||079085000123^^^BCA^NI||Nguyễn^Văn Thử||19850412|M", "PV1|1|O", control_id="TTY-1")

    async def journal_one():
        gateway = await start_gateway(data_dir, plugins=[TestPlugin()])
        try:
            client = await connect_mllp(gateway)
            await send_and_receive(client, raw)
            client.transport.loseConnection()
            await client.closed
        finally:
            await gateway.stop()

    pytest_twisted.blockon(ensureDeferred(journal_one()))
    return data_dir, raw


def run_on_terminal(*args) -> bytes:
    """``hssk-gateway ARGS`` with stdout on a pseudo-terminal, and what the terminal received."""
    import pty

    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    try:
        process = subprocess.Popen([str(CLI), *map(str, args)], cwd=REPO, env=env, stdout=terminal,
                                   stderr=subprocess.PIPE)
    finally:
        os.close(terminal)
    received = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        received += chunk
    os.close(controller)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    return received


def test_raw_message_on_a_terminal_shows_one_segment_per_line(journaled):
    data_dir, raw = journaled

    shown = run_on_terminal("messages", "show", "1", "--raw", "--data-dir", data_dir)

    # The terminal writes each new line as CR LF; a CR of its own would send the cursor back over the segment.
    assert b"\r" not in shown.replace(b"\r\n", b"")
    assert shown.replace(b"\r\n", b"\n") == raw.replace(b"\r", b"\n")


def test_raw_message_into_a_pipe_is_the_bytes_received(journaled):
    data_dir, raw = journaled

    result = run_cli("messages", "show", "1", "--raw", "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr
    assert result.stdout == raw


def test_readme_examples_that_print_an_ack_show_its_segments_on_lines_of_their_own():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    senders = [line for line in readme.splitlines()
               if line.startswith(("printf", "curl")) and ("nc " in line or "/hl7" in line)]

    assert len(senders) >= 2
    assert all(line.endswith("| tr '\\r' '\\n'") for line in senders), senders
