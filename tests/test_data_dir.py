"""The data dir of a real ``hssk-gateway serve`` process (issue 23, items 3 and 6).

- A journal that was created there and is now empty, unreadable or another one stops the start
  with a message saying so; ``--fresh-journal`` keeps it aside and starts an empty one.
- The data dir is 0700 and every file the gateway writes there is 0600, file drops included.
"""
from __future__ import annotations

import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.crash_client import ACCEPTING, END, REPO, SAMPLE, START, GatewayProcess, message_with_control_id, msa_of


def send(port: int, control_id: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(START + message_with_control_id(SAMPLE.read_bytes(), control_id) + END)
        answer = b""
        while END not in answer:
            answer += sock.recv(65536)
    return msa_of(answer[:answer.index(END)].lstrip(START))[0]


def run_once(data_dir: Path, control_id: str, *extra: str) -> None:
    """Start the gateway, get one message accepted, stop it cleanly."""
    gateway = GatewayProcess(data_dir, extra_args=extra)
    try:
        assert send(gateway.port, control_id) in ACCEPTING
        assert gateway.terminate() == 0
    finally:
        gateway.ensure_dead()


def refused_start(data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", "config/gateway.toml",
                           "--data-dir", str(data_dir), "--mllp-listen", "tcp:0:interface=127.0.0.1",
                           "--http-listen", "tcp:0:interface=127.0.0.1"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def journal_of(data_dir: Path) -> Path:
    return data_dir / "gateway.db"


@pytest.mark.parametrize("damage,says", [
    (lambda db, other: db.write_bytes(b""), "is empty (0 bytes)"),
    (lambda db, other: db.unlink(), "is missing"),
    (lambda db, other: db.write_bytes(b"not a database at all" * 200), "cannot be read"),
    (lambda db, other: shutil.copy(journal_of(other), db), "another journal than the one created here"),
], ids=["truncated", "deleted", "garbage", "replaced"])
def test_a_lost_journal_stops_the_start_instead_of_becoming_an_empty_one(tmp_path, damage, says):
    data_dir, other = tmp_path / "data", tmp_path / "other"
    run_once(data_dir, "BEFORE1")
    run_once(other, "ELSEWHERE1")
    for leftover in data_dir.glob("gateway.db-*"):
        leftover.unlink()

    damage(journal_of(data_dir), other)
    started = refused_start(data_dir)

    assert started.returncode != 0
    assert says in started.stderr and "--fresh-journal" in started.stderr, started.stderr
    assert "listening" not in started.stdout


def test_fresh_journal_keeps_the_lost_one_aside_and_starts_empty(tmp_path):
    data_dir = tmp_path / "data"
    run_once(data_dir, "BEFORE2")
    journal_of(data_dir).write_bytes(b"")

    run_once(data_dir, "AFTER2", "--fresh-journal")
    run_once(data_dir, "AFTER3")

    [kept] = data_dir.glob("gateway.db.lost-*")
    assert kept.stat().st_size == 0


def test_the_data_dir_is_private_and_so_is_every_file_the_gateway_writes(tmp_path):
    data_dir = tmp_path / "data"
    gateway = GatewayProcess(data_dir)
    try:
        assert send(gateway.port, "PRIVATE1") in ACCEPTING
        deadline = time.monotonic() + 10
        while not list((data_dir / "outbox").rglob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        modes = {path.relative_to(data_dir).as_posix(): stat.S_IMODE(path.stat().st_mode)
                 for path in data_dir.rglob("*")}
    finally:
        gateway.ensure_dead()

    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    files = {name: mode for name, mode in modes.items() if not (data_dir / name).is_dir()}
    assert {"gateway.db", "gateway.db-wal", "gateway.db-shm", "gateway.db.id"} <= set(files)
    assert any(name.startswith("outbox/") for name in files)
    assert {name: mode for name, mode in files.items() if mode != 0o600} == {}
    assert {name: mode for name, mode in modes.items() if (data_dir / name).is_dir() and mode != 0o700} == {}
