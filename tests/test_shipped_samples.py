"""Every sample a plugin ships (``plugins/*/samples``) is accepted by the configuration ``make run``
starts with (config/gateway.toml): a real gateway subprocess, each HL7 sample sent over MLLP and
each XML 130 file posted to ``/xml130``, as a hospital would send them."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.crash_client import ACCEPTING, END, REPO, START, GatewayProcess, _read_frame, msa_of
from tests.support import plugin_sample

SAMPLES = sorted((REPO / "plugins").glob("*/samples/*"))
HL7_SAMPLES = [p for p in SAMPLES if p.suffix == ".hl7"]
XML_SAMPLES = [p for p in SAMPLES if p.suffix == ".xml"]


def sample_id(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.name}"


@pytest.fixture(scope="module")
def shipped_gateway(tmp_path_factory):
    gateway = GatewayProcess(tmp_path_factory.mktemp("samples") / "data")
    try:
        yield gateway
    finally:
        gateway.terminate()


def test_the_plugins_ship_hl7_and_xml_samples():
    assert len(HL7_SAMPLES) >= 9 and len(XML_SAMPLES) >= 4
    assert {p.suffix for p in SAMPLES} <= {".hl7", ".xml", ".md"}


@pytest.mark.parametrize("path", HL7_SAMPLES, ids=sample_id)
def test_shipped_hl7_sample_is_accepted_over_mllp(shipped_gateway, path):
    raw = plugin_sample(path.parent.parent, path.name)

    with socket.create_connection(("127.0.0.1", shipped_gateway.port), timeout=15) as sock:
        sock.sendall(START + raw + END)
        ack = _read_frame(sock, bytearray())

    assert ack is not None, shipped_gateway.log()
    assert msa_of(ack)[0] in ACCEPTING, ack.decode("utf-8", "replace").replace("\r", "\n")


@pytest.mark.parametrize("path", XML_SAMPLES, ids=sample_id)
def test_shipped_xml_sample_is_accepted_over_http(shipped_gateway, path):
    request = urllib.request.Request(f"http://127.0.0.1:{shipped_gateway.http_port}/xml130", data=path.read_bytes(),
                                     headers={"Content-Type": "application/xml"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        status, body = e.code, json.loads(e.read())

    assert (status, body.get("status")) == (200, "accepted"), body
