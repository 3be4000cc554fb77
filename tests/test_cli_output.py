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
