"""``hssk-gateway plugin new``: the package it writes installs and passes its own tests, including
the conformance suite, in a fresh virtualenv holding nothing but the gateway built from this
repository and what the two packages declare."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest

from tests.support import REPO, run_cli


def _run(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSSK_", "PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _copy_sources(target: Path) -> Path:
    """The repository's files as git sees them (tracked, and new ones not ignored), so the build
    in the fresh virtualenv is of this work tree and leaves no build/ folder in it."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_a_new_plugin_installs_in_a_fresh_virtualenv_and_passes_its_tests(tmp_path):
    sources = _copy_sources(tmp_path / "gateway-src")
    venv.create(tmp_path / "venv", with_pip=True)
    python, cli = tmp_path / "venv" / "bin" / "python", tmp_path / "venv" / "bin" / "hssk-gateway"
    installed = _run(python, "-m", "pip", "install", "-q", sources)
    assert installed.returncode == 0, installed.stderr

    made = _run(cli, "plugin", "new", "my_lab", "--directory", tmp_path / "work")
    assert made.returncode == 0, made.stderr
    package = tmp_path / "work" / "my_lab"
    installed = _run(python, "-m", "pip", "install", "-q", f"{package}[test]")
    assert installed.returncode == 0, installed.stderr
    tested = _run(python, "-m", "pytest", "-q", "-rs", cwd=package)
    listed = _run(cli, "plugins")

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.splitlines()[-1].startswith("11 passed"), tested.stdout
    assert "my_lab" in listed.stdout and "MY_LAB" in listed.stdout, listed.stdout


def test_the_new_plugin_imports_only_the_public_plugin_surface(tmp_path):
    made = run_cli("plugin", "new", "my_lab", "--directory", tmp_path)
    source = (tmp_path / "my_lab" / "my_lab" / "plugin.py").read_text()

    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    assert made.returncode == 0, made.stderr
    assert {m for m in imported if m.startswith("gateway")} == {"gateway.plugin"}
    assert 'hssk_contract = "1.2"' in source


def test_the_new_plugin_registers_its_entry_point_and_says_what_to_edit(tmp_path):
    run_cli("plugin", "new", "my_lab", "--directory", tmp_path)
    root = tmp_path / "my_lab"

    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["hssk_gateway.plugins"] == {"my_lab": "my_lab.plugin:plugin"}
    assert "## What to edit" in (root / "README.md").read_text()
    assert "PluginConformance" in (root / "tests" / "test_conformance.py").read_text()


@pytest.mark.parametrize("name, said", [("My-Lab", "lower-case letters"), ("class", "lower-case letters")])
def test_a_name_that_cannot_be_a_package_is_refused(tmp_path, name, said):
    result = run_cli("plugin", "new", name, "--directory", tmp_path)

    assert result.returncode == 1 and said in result.stderr.decode()
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_never_overwritten(tmp_path):
    (tmp_path / "my_lab").mkdir()
    (tmp_path / "my_lab" / "notes.txt").write_text("mine")

    result = run_cli("plugin", "new", "my_lab", "--directory", tmp_path)

    assert result.returncode == 1 and "already exists" in result.stderr.decode()
    assert [p.name for p in (tmp_path / "my_lab").iterdir()] == ["notes.txt"]

