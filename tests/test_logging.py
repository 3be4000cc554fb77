"""What the gateway logs: a start-up summary, one line per decided message (identifiers masked),
the HTTP access log without Prometheus scrapes, text or flat JSON lines at a configured level;
and the top-level settings behind it taken from the environment like every other key."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
import pytest_twisted
from twisted.logger import formatEvent

from gateway.config import ConfigError, load_config
from tests.crash_client import END, REPO, START, _read_frame, msa_of
from tests.support import (TestPlugin, connect_mllp, free_port, hl7, http_request, plugin_sample, send_and_receive,
                           start_gateway)

#: An MSH-10 shaped like an identifier (a CCCD): logged masked, like every identifier.
CCCD_SHAPED_CONTROL_ID = "079085000123"


def test_top_level_keys_come_from_the_environment_like_section_keys():
    config = load_config(environ={"HSSK_DATA_DIR": "/srv/hssk", "HSSK_LOG_FORMAT": "json",
                                  "HSSK_LOG_LEVEL": "warn", "HSSK_TRACE_STAGES": "/tmp/x", "HSSK_ADMIN_TOKEN": "t"})

    assert (config.data_dir, config.log_format, config.log_level) == ("/srv/hssk", "json", "warn")


def test_log_level_is_checked_and_the_error_names_the_key():
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"HSSK_LOG_LEVEL": "verbose"})

    assert str(caught.value) == ("log_level: must be one of debug, info, warn, error, critical, got 'verbose'")


def decided_lines(log_events: list[dict]) -> list[str]:
    return [formatEvent(e) for e in log_events if e.get("log_namespace") == "hssk.intake"
            and formatEvent(e).startswith("decided ")]


@pytest_twisted.ensureDeferred
async def test_each_decided_message_is_logged_once_with_its_identifiers_masked(tmp_path, log_events):
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin()])
    try:
        client = await connect_mllp(gateway)
        accepted = hl7(control_id=CCCD_SHAPED_CONTROL_ID)
        for raw in (accepted, hl7(control_id="MSG-ORPHAN", sending_app="NOBODY_HIS"), accepted):
            await send_and_receive(client, raw)
        await http_request(gateway, "POST", "/hl7", hl7(control_id="HTTP-1"), content_type="application/hl7-v2")
        client.transport.loseConnection()
        await client.closed
    finally:
        await gateway.stop()

    assert decided_lines(log_events) == [
        "decided message 1: mllp from TEST_HIS|79001, control id 0790*****123, ADT^A04, plugin test_his: AA",
        "decided message 2: mllp from NOBODY_HIS|79001, control id MSG-ORPHAN, ADT^A04, plugin -: AR",
        "decided message 1: mllp from TEST_HIS|79001, control id 0790*****123, ADT^A04, plugin test_his: AA (repeat)",
        "decided message 3: http from TEST_HIS|79001, control id HTTP-1, ADT^A04, plugin test_his: AA",
    ]
    assert not [e for e in log_events if CCCD_SHAPED_CONTROL_ID in formatEvent(e)
                or any(CCCD_SHAPED_CONTROL_ID in str(v) for v in e.values())]


@pytest_twisted.ensureDeferred
async def test_the_access_log_leaves_out_metrics_scrapes(tmp_path, log_events):
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin()])
    try:
        for _ in range(3):
            assert (await http_request(gateway, "GET", "/metrics")).code == 200
        assert (await http_request(gateway, "GET", "/healthz")).code == 200
    finally:
        await gateway.stop()

    access = [formatEvent(e) for e in log_events if e.get("log_namespace") == "hssk.http.access"]
    assert len(access) == 1 and '"GET /healthz HTTP/1.1" 200' in access[0]


class LoggingGateway:
    """``hssk-gateway serve`` on config/gateway.toml, configured from the environment only (data
    dir, log format and level), its output kept line by line."""

    def __init__(self, data_dir: Path, **environment: str) -> None:
        self.mllp, self.http = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
        env.update(PYTHONUNBUFFERED="1", HSSK_DATA_DIR=str(data_dir), **environment,
                   HSSK_MLLP__LISTEN=f"tcp:{self.mllp}:interface=127.0.0.1",
                   HSSK_HTTP__LISTEN=f"tcp:{self.http}:interface=127.0.0.1")
        self.process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", "config/gateway.toml"],
                                        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def wait_listening(self) -> None:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.http), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        raise AssertionError(f"gateway did not listen: {self.stop()}")

    def send(self, raw: bytes) -> str:
        with socket.create_connection(("127.0.0.1", self.mllp), timeout=15) as sock:
            sock.sendall(START + raw + END)
            return msa_of(_read_frame(sock, bytearray()))[0]

    def get(self, path: str) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=15) as response:
            return response.status

    def stop(self) -> list[str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=30)
        return output.decode("utf-8").splitlines()


def test_json_log_is_one_flat_object_per_line_with_a_start_up_summary(tmp_path):
    data_dir = tmp_path / "from-environment"
    gateway = LoggingGateway(data_dir, HSSK_LOG_FORMAT="json", HSSK_LOG_LEVEL="info")
    try:
        gateway.wait_listening()
        raw = plugin_sample(REPO / "plugins" / "viettel_his", "adt_a04.hl7")
        code = gateway.send(raw.replace(b"|VT20250315000001|", f"|{CCCD_SHAPED_CONTROL_ID}|".encode()))
        scrapes = [gateway.get("/metrics") for _ in range(3)]
    finally:
        lines = gateway.stop()

    assert code == "CA" and scrapes == [200] * 3
    assert (data_dir / "gateway.db").exists()
    records = [json.loads(line) for line in lines]
    for record in records:
        assert set(record) <= {"time", "level", "logger", "message", "traceback"}, record
        assert all(isinstance(value, str) for value in record.values()), record
        assert datetime.fromisoformat(record["time"]).utcoffset() is not None
    messages = {(r["logger"], r["level"]): r["message"] for r in records}
    summary = messages[("hssk.app", "info")]
    assert summary.startswith("started hssk-gateway 0.1.0")
    for expected in (f"data dir {data_dir}",
                     "plugins bhxh 0.1.0, dhg_his 0.1.0, immunization 0.1.0, viettel_his 0.1.0, vnpt_his 0.1.0",
                     "destinations local_files (file, json, privacy filtered)",
                     "auth: senders that are no client let in, no clients, admin API from loopback only",
                     f"mllp 127.0.0.1:{gateway.mllp}", f"http 127.0.0.1:{gateway.http}"):
        assert expected in summary, summary
    decided = [r["message"] for r in records if r["logger"] == "hssk.intake"]
    assert decided == ["decided message 1: mllp from VIETTEL_HIS|79001, control id 0790*****123, ADT^A04, "
                       "plugin viettel_his: AA"]  # the journal's code; the wire answer is its enhanced form, CA
    assert not [line for line in lines if "/metrics" in line or CCCD_SHAPED_CONTROL_ID in line]


def test_log_level_warn_leaves_out_the_info_lines(tmp_path):
    gateway = LoggingGateway(tmp_path / "data", HSSK_LOG_LEVEL="warn")
    try:
        gateway.wait_listening()
        code = gateway.send(plugin_sample(REPO / "plugins" / "viettel_his", "adt_a04.hl7"))
    finally:
        lines = gateway.stop()

    assert code == "CA"
    assert not [line for line in lines if re.search(r"#info\]", line)], lines
