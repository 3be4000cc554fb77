"""``hssk_commands``: a plugin adds ``hssk-gateway PLUGIN COMMAND``, loaded from the entry-point
group before the command line is parsed, run with the configuration and the plugins loaded as
``serve`` loads them; a plugin that cannot load loses only its own commands, and ``--help``
names it.

The plugins are ``tests/hooks/person_links.py`` and ``tests/hooks/broken_import.py``, installed
through the entry-point group; nothing under ``gateway/`` knows them."""
from __future__ import annotations

import json

import pytest

from tests.hooks.support import installed, run_gateway_cli

PERSON_LINKS = {"person_links": "tests.hooks.person_links"}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text('[plugins.person_links]\nsystems = ["CCCD"]\n')
    return path


def test_the_plugins_commands_are_listed_under_its_name(tmp_path):
    env = installed(tmp_path, PERSON_LINKS)

    top = run_gateway_cli(env, "--help")
    own = run_gateway_cli(env, "person_links", "--help")

    assert top.returncode == 0 and "person_links" in top.stdout and "commands of plugin person_links" in top.stdout
    assert own.returncode == 0 and "settings" in own.stdout and "show what person_links links" in own.stdout


def test_a_plugin_command_runs_with_the_configuration_given(tmp_path, config):
    env = installed(tmp_path, PERSON_LINKS)

    ran = run_gateway_cli(env, "person_links", "settings", "--config", config, "--data-dir", tmp_path / "data")

    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"plugin": "person_links", "data_dir": str(tmp_path / "data"),
                                      "systems": ["CCCD"]}


def test_a_plugin_commands_refusal_is_said_without_a_traceback(tmp_path, config):
    env = installed(tmp_path, PERSON_LINKS)

    ran = run_gateway_cli(env, "person_links", "settings", "--config", config, "--system", "PASSPORT")

    assert ran.returncode == 1
    assert ran.stderr == "hssk-gateway: person_links does not link PASSPORT identifiers (systems: CCCD)\n"


def test_a_disabled_plugins_commands_are_refused(tmp_path):
    env = installed(tmp_path, PERSON_LINKS)
    config = tmp_path / "disabled.toml"
    config.write_text('[plugins]\ndisabled = ["person_links"]\n')

    ran = run_gateway_cli(env, "person_links", "settings", "--config", config)

    assert ran.returncode == 2
    assert "plugins.disabled: names 'person_links'" in ran.stderr


def test_a_plugin_that_cannot_load_is_named_in_help_and_breaks_no_other_command(tmp_path):
    env = installed(tmp_path, {**PERSON_LINKS, "broken_import": "tests.hooks.broken_import"})

    top = run_gateway_cli(env, "--help")
    others = run_gateway_cli(env, "person_links", "--help")

    assert top.returncode == 0, top.stderr
    assert ("broken_import: ModuleNotFoundError: No module named 'hssk_dependency_nobody_installed'"
            in top.stdout)
    assert "commands of plugin person_links" in top.stdout
    assert others.returncode == 0 and "settings" in others.stdout
