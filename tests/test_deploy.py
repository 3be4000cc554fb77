"""``deploy/hssk-gateway.service`` and the ``Dockerfile``, checked without systemd running or a
Docker daemon: the unit is hardened (its own user, the file system read-only but for the data
dir, no privileges, no capabilities) and ``systemd-analyze verify`` finds nothing to say where it
is installed; the image runs the gateway as a non-root user whose data dir is a volume."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "deploy" / "hssk-gateway.service"
DOCKERFILE = REPO / "Dockerfile"


def unit_settings() -> dict[tuple[str, str], list[str]]:
    """(section, key) → every value given, in order (systemd keys may repeat)."""
    found: dict[tuple[str, str], list[str]] = {}
    section = ""
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault((section, key.strip()), []).append(value.strip())
    return found


def test_the_unit_runs_the_gateway_hardened_with_only_its_data_dir_writable():
    s = {key: values[-1] for (section, key), values in unit_settings().items() if section == "Service"}
    data_dir = dict(e.split("=", 1) for e in unit_settings()[("Service", "Environment")])["HSSK_DATA_DIR"]

    assert re.fullmatch(r"/\S+/hssk-gateway serve --config \S+", s["ExecStart"])
    assert s["DynamicUser"] == "yes" or s.get("User") not in (None, "", "root", "0")
    assert (s["ProtectSystem"], s["NoNewPrivileges"], s["PrivateTmp"], s["ProtectHome"]) == ("strict", "yes", "yes",
                                                                                            "yes")
    assert data_dir in s["ReadWritePaths"].split() and data_dir == f"/var/lib/{s['StateDirectory']}"
    assert s["StateDirectoryMode"] == "0700" and s["UMask"] == "0077"
    assert s["CapabilityBoundingSet"] == "" and s["AmbientCapabilities"] == ""
    assert s["KillSignal"] == "SIGTERM" and s["Restart"] == "on-failure"


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path):
    """Where systemd is installed. Its Debian package is no small tool to install for one test, so
    this is not in the Makefile's TOOLS; the parse above runs everywhere."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the unit is still parsed and checked)")
    executable = shutil.which("hssk-gateway") or str(REPO / ".venv" / "bin" / "hssk-gateway")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/opt/hssk-gateway/bin/hssk-gateway", executable))

    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines() if line.strip()]


def test_the_image_runs_the_gateway_as_a_non_root_user_with_the_data_dir_a_volume():
    steps = dockerfile()
    instructions = [i for i, _ in steps]
    env = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', " ".join(a for i, a in steps if i == "ENV")))
    data_dir = env["HSSK_DATA_DIR"]
    user = [a for i, a in steps if i == "USER"][-1]
    uid = user.split(":")[0]
    owned = re.search(rf"install -d -m 0700 -o (\S+) -g \S+ {re.escape(data_dir)}", " ".join(a for i, a in steps
                                                                                              if i == "RUN"))

    assert uid not in ("root", "0") and owned is not None
    assert re.search(rf"useradd .*--uid {uid} .* {owned[1]}\b", " ".join(a for i, a in steps if i == "RUN"))
    assert json.loads([a for i, a in steps if i == "VOLUME"][-1]) == [data_dir]
    assert instructions.index("VOLUME") > max(n for n, i in enumerate(instructions) if i == "RUN")
    assert instructions.index("USER") > max(n for n, i in enumerate(instructions) if i == "RUN")
    assert json.loads([a for i, a in steps if i == "ENTRYPOINT"][-1]) == ["hssk-gateway"]
    assert json.loads([a for i, a in steps if i == "CMD"][-1])[0] == "serve"
    listening = {int(env[k].strip('"').split(":")[1]) for k in ("HSSK_MLLP__LISTEN", "HSSK_HTTP__LISTEN")}
    assert {int(p) for a in (a for i, a in steps if i == "EXPOSE") for p in a.split()} == listening


def test_every_file_the_image_copies_is_in_the_repository():
    for source in (a.split()[:-1] for i, a in dockerfile() if i == "COPY"):
        assert all((REPO / path).exists() for path in source), source
