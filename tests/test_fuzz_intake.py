"""Fuzzing the MLLP intake of a real gateway process (issue 22).

Hypothesis writes frames a hostile or broken sender could send: any text in the MSH fields that
decide routing and decoding (MSH-3/4/9/10/12/15/16/18, NUL and control characters included),
any bytes after the header, and frames that are no HL7 at all. Two clients send them, each known
by its own loopback address. After every fuzzed frame the same client sends a good message and
must get its accepting ACK: intake keeps answering. At the end, no pipeline worker has died and a
good message from every client is still accepted.

The frames themselves are well formed (start block, end block): the frame decoder has property
tests of its own (``tests/formats/test_framing.py``).
"""
from __future__ import annotations

import itertools
import socket
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.formats.charsets import codec_for
from tests.crash_client import ACCEPTING, END, SAMPLE, START, GatewayProcess, message_with_control_id, msa_of

CLIENTS = {"a": ("127.0.0.1", "79001"), "b": ("127.0.0.2", "79002")}
ANSWER_TIMEOUT = 10.0

CONFIG = """
[auth]
required = true

[pipeline]
timeout_seconds = 3

[plugins.viettel_his]
sending_applications = ["HIS_THU_NGHIEM"]

[clients.a]
facilities = ["79001"]
addresses = ["127.0.0.1/32"]

[clients.b]
facilities = ["79002"]
addresses = ["127.0.0.2/32"]
"""


class Sender:
    """One blocking MLLP connection from a given loopback address."""

    def __init__(self, port: int, source: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT, source_address=(source, 0))
        self.buffer = bytearray()

    def send(self, payload: bytes) -> None:
        self.sock.sendall(START + payload + END)

    def frames_until(self, control_id: str) -> list[bytes]:
        """Every answer up to and including the one for ``control_id``."""
        frames = []
        while True:
            end = self.buffer.find(END)
            if end < 0:
                chunk = self.sock.recv(65536)
                assert chunk, f"the gateway closed the connection before answering {control_id}"
                self.buffer += chunk
                continue
            frame = bytes(self.buffer[:end]).lstrip(START)
            del self.buffer[:end + len(END)]
            frames.append(frame)
            if msa_of(frame)[1] == control_id:
                return frames


def good_message(control_id: str, facility: str) -> bytes:
    return message_with_control_id(SAMPLE.read_bytes(), control_id).replace(b"|79001^", f"|{facility}^".encode())


@pytest.fixture(scope="module")
def fuzzed_gateway(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    config = directory / "gateway.toml"
    config.write_text(CONFIG, encoding="utf-8")
    gateway = GatewayProcess(directory / "data", config=str(config))
    senders = {name: Sender(gateway.port, address) for name, (address, _) in CLIENTS.items()}
    try:
        yield gateway, senders
    finally:
        gateway.ensure_dead()


_counter = itertools.count()
FIELD = st.text(st.characters(exclude_characters="\r\n|\x0b\x1c"), max_size=10)
CHARSET = st.one_of(FIELD, st.sampled_from(["UTF-8\x00", "undefined", "idna", "utf-7", "hex", "UNICODE UTF-16",
                                            "8859/1", "WINDOWS-1258", "UNICODE UTF-8", ""]))
BODY = st.binary(max_size=300).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))


@st.composite
def hostile_frames(draw) -> bytes:
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(BODY)  # no MSH at all
    app = draw(st.one_of(FIELD, st.just("HIS_THU_NGHIEM")))
    facility = draw(st.one_of(FIELD, st.sampled_from(["79001", "79002", "01001"])))
    kind = draw(st.one_of(FIELD, st.sampled_from(["ADT^A04^ADT_A01", "ADT^A08", "ORU^R01", "ACK", "VXU^V04"])))
    control_id, version, accept, application, charset = (draw(FIELD), draw(st.one_of(FIELD, st.just("2.5"))),
                                                         draw(FIELD), draw(FIELD), draw(CHARSET))
    header = (f"MSH|^~\\&|{app}|{facility}|HSSK_GW|SYT_79|20250315083000||{kind}|{control_id}|P|{version}|||"
              f"{accept}|{application}|VNM|{charset}")
    return header.encode("utf-8", "surrogatepass") + b"\r" + draw(BODY)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=hostile_frames(), client=st.sampled_from(sorted(CLIENTS)))
def test_intake_answers_a_good_message_after_any_frame(fuzzed_gateway, frame, client):
    gateway, senders = fuzzed_gateway
    sender = senders[client]
    probe = f"PROBE{next(_counter):06d}"

    sender.send(frame)
    sender.send(good_message(probe, CLIENTS[client][1]))
    answers = sender.frames_until(probe)

    assert msa_of(answers[-1])[0] in ACCEPTING, (frame, answers)
    for answer in answers:
        header = answer.split(b"\r")[0].split(b"|")
        charset = header[17].decode("latin-1").strip() if len(header) > 17 else ""
        assert header[0] == b"MSH" and (not charset or codec_for(charset)), answer


def test_after_the_fuzzing_every_client_is_still_served_and_no_worker_died(fuzzed_gateway):
    gateway, senders = fuzzed_gateway
    for name, (_, facility) in CLIENTS.items():
        control_id = f"AFTER{name.upper()}"
        senders[name].send(good_message(control_id, facility))
        assert msa_of(senders[name].frames_until(control_id)[-1])[0] in ACCEPTING

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{gateway.http_port}/metrics", timeout=10).read().decode()
    assert "hssk_pipeline_worker_deaths_total 0.0" in metrics
    assert gateway.proc.poll() is None
