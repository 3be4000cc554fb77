"""Helpers for the crash test: the gateway as a real subprocess, and blocking MLLP senders.

Nothing here runs a Twisted reactor: the gateway is ``python -m gateway.cli serve`` in its own
process, and the senders are plain sockets on threads, one connection each, window 1 (send one
frame, wait for its ACK, send the next) — the way most hospital interface engines behave.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "messages" / "adt_a04.hl7"

START, END = b"\x0b", b"\x1c\r"
#: Accepting answers: AA (original mode) or CA (enhanced-mode commit accept, which the sample
#: asks for with MSH-15=AL, MSH-16=NE). Both are sent only after the journal commit (invariant 1).
ACCEPTING = frozenset({"AA", "CA"})

_LISTENING = re.compile(r"\[hssk\.app#info\] (mllp|http) listening on ([0-9.]+):(\d+)")


def message_with_control_id(template: bytes, control_id: str) -> bytes:
    """The sample with MSH-10 replaced; segments end in CR, as on the wire."""
    text = template.decode("utf-8").replace("\r\n", "\r").replace("\n", "\r").rstrip("\r") + "\r"
    msh, rest = text.split("\r", 1)
    fields = msh.split("|")
    fields[9] = control_id  # fields[0] is "MSH", fields[1] is MSH-2, so fields[9] is MSH-10
    return ("|".join(fields) + "\r" + rest).encode("utf-8")


class GatewayProcess:
    """``hssk-gateway serve`` on 127.0.0.1 port 0 with a config (the shipped one by default) and a data dir."""

    def __init__(self, data_dir: Path, start_timeout: float = 20.0, config: str = "config/gateway.toml",
                 extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.port: int | None = None
        self.http_port: int | None = None
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", config,
             "--data-dir", str(data_dir), "--mllp-listen", "tcp:0:interface=127.0.0.1",
             "--http-listen", "tcp:0:interface=127.0.0.1", *extra_args],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, name="gateway-log-reader", daemon=True)
        self._reader.start()
        if not self._ready.wait(start_timeout) or self.port is None:
            self.kill()
            raise AssertionError(f"gateway did not report its MLLP port within {start_timeout}s; log:\n{self.log()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for raw in self.proc.stdout:  # ends at EOF, i.e. when the process is gone
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            match = _LISTENING.search(line)
            if match and match.group(1) == "http":
                self.http_port = int(match.group(3))
            elif match and self.port is None:
                self.port = int(match.group(3))
            if self.port is not None and self.http_port is not None:
                self._ready.set()
        self._ready.set()  # the process died before listening: wake start() at once

    def log(self) -> str:
        return "\n".join(self.lines[-40:])

    def kill(self, timeout: float = 10.0) -> int:
        """SIGKILL: no shutdown hook, no final commit, no flush — a crash."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(timeout)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the clean shutdown (listeners closed, in-flight answered, writer stopped)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"gateway did not stop within {timeout}s of SIGTERM; log:\n{self.log()}")

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._reader.join(5)
        if self.proc.stdout:
            self.proc.stdout.close()


@dataclass
class Tally:
    """What every sender thread saw, shared under one lock."""

    acked: dict[str, str] = field(default_factory=dict)        # control id -> accepting MSA-1
    refused: dict[str, str] = field(default_factory=dict)      # control id -> other MSA-1 (AE/AR/...)
    problems: list[str] = field(default_factory=list)          # protocol errors: must stay empty
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted_count(self) -> int:
        with self.lock:
            return len(self.acked)


def _read_frame(sock: socket.socket, buffer: bytearray) -> bytes | None:
    """One ACK frame, or None when the peer closed (or reset) the connection."""
    while True:
        end = buffer.find(END)
        if end >= 0:
            frame = bytes(buffer[:end])
            del buffer[:end + len(END)]
            start = frame.find(START)
            return frame[start + 1:] if start >= 0 else frame
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk


def msa_of(frame: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK."""
    for segment in frame.decode("utf-8", "replace").split("\r"):
        if segment.startswith("MSA|"):
            fields = segment.split("|")
            return fields[1], (fields[2] if len(fields) > 2 else "")
    return "", ""


def send_all(port: int, messages: list[tuple[str, bytes]], tally: Tally, ack_timeout: float = 15.0) -> int:
    """Send ``messages`` in order on one connection, window 1. Returns how many got any answer.

    A closed or reset connection (the gateway was killed) ends the run quietly: the message in
    flight and all after it stay unacknowledged. A timeout waiting for an ACK is a problem, not a
    crash, and is recorded as such.
    """
    answered = 0
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    except OSError as e:
        with tally.lock:
            tally.problems.append(f"connect to 127.0.0.1:{port} failed: {e}")
        return 0
    sock.settimeout(ack_timeout)
    buffer = bytearray()
    try:
        for control_id, payload in messages:
            try:
                sock.sendall(START + payload + END)
                frame = _read_frame(sock, buffer)
            except socket.timeout:
                with tally.lock:
                    tally.problems.append(f"{control_id}: no ACK within {ack_timeout}s")
                return answered
            except OSError:  # ECONNRESET / EPIPE: the gateway died under us
                return answered
            if frame is None:
                return answered
            answered += 1
            code, acked_id = msa_of(frame)
            with tally.lock:
                if acked_id != control_id:
                    tally.problems.append(f"sent {control_id}, ACK names {acked_id!r} ({code})")
                elif code in ACCEPTING:
                    tally.acked[control_id] = code
                else:
                    tally.refused[control_id] = code
        return answered
    finally:
        sock.close()


def run_senders(port: int, batches: list[list[tuple[str, bytes]]], tally: Tally) -> list[threading.Thread]:
    threads = [threading.Thread(target=send_all, args=(port, batch, tally), name=f"mllp-sender-{n}", daemon=True)
               for n, batch in enumerate(batches)]
    for thread in threads:
        thread.start()
    return threads


def join_all(threads: list[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"sender threads still running after {timeout}s: {stuck}"
