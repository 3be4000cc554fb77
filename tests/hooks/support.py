"""Installing a test plugin the way an integrator installs theirs: a ``.dist-info`` whose entry
point in ``hssk_gateway.plugins`` names a module under ``tests/hooks``, on ``PYTHONPATH``, so
the real CLI (a subprocess) finds it through the entry-point group and nothing else."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def installed(tmp_path: Path, plugins: dict[str, str]) -> dict[str, str]:
    """The environment of a CLI run with ``plugins`` (entry-point name → module) installed."""
    site = tmp_path / "site"
    for name, module in plugins.items():
        info = site / f"{name}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[hssk_gateway.plugins]\n{name} = {module}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), str(REPO), os.environ.get("PYTHONPATH")]))
    return env


def run_gateway_cli(env: dict[str, str], *args: object, timeout: float = 60) -> subprocess.CompletedProcess:
    """``hssk-gateway ARGS`` as an operator runs it, from the repository root."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
