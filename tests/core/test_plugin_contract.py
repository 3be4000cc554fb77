"""The plugin contract a plugin can rely on (issue 16): it declares the contract version it was
written for, the gateway refuses one it cannot serve, and a hook name the contract does not know
(a misspelling) stops start-up instead of never being called. Each plugin here is installed the
way an integrator's is, a module and a ``.dist-info`` on ``PYTHONPATH``, and the real CLI starts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.crash_client import REPO
from tests.support import install_plugin_module

GOOD_HOOK = '''
from gateway.plugin import PluginDescription, hookimpl

@hookimpl
def hssk_describe():
    return PluginDescription("contract_probe", "nothing")
'''


def install(tmp_path: Path, source: str) -> dict[str, str]:
    site = tmp_path / "site"
    install_plugin_module(site, "contract_probe", source, "contract_probe", "contract-probe")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))


def check_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", "--config", "config/gateway.toml"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_a_plugin_of_this_contract_or_an_earlier_minor_one_loads(tmp_path, version):
    checked = check_config(install(tmp_path, f'hssk_contract = "{version}"\n' + GOOD_HOOK))

    assert checked.returncode == 0, checked.stderr
    assert "contract_probe" in checked.stdout


@pytest.mark.parametrize("declaration,says", [
    ("", 'declares no contract version: add hssk_contract = "1.2"'),
    ('hssk_contract = "2.0"\n', "was written for plugin contract 2.0, and this gateway offers 1.2"),
    ('hssk_contract = "1.9"\n', "was written for plugin contract 1.9, and this gateway offers 1.2"),
    ("hssk_contract = 1.0\n", "declares contract 1.0, which is not a version like '1.2'"),
], ids=["none", "next_major", "later_minor", "not_a_string"])
def test_a_plugin_of_another_contract_is_refused_at_start_up(tmp_path, declaration, says):
    checked = check_config(install(tmp_path, declaration + GOOD_HOOK))

    assert checked.returncode == 2
    assert "plugin 'contract_probe' (contract-probe 1.0)" in checked.stderr and says in checked.stderr


@pytest.mark.parametrize("marked", ["@hookimpl\n", ""], ids=["marked", "unmarked"])
def test_a_misspelt_hook_is_refused_at_start_up(tmp_path, marked):
    misspelt = f'hssk_contract = "1.0"\n{GOOD_HOOK}\n{marked}def hssk_chek(message, records):\n    return None\n'

    checked = check_config(install(tmp_path, misspelt))

    assert checked.returncode == 2
    assert "plugin 'contract_probe' has a hook the contract does not know" in checked.stderr
    assert "hssk_chek" in checked.stderr
