"""Test support: a real gateway on 127.0.0.1 port 0, and a real MLLP client.

Nothing here stands in for a gateway component; the client is a plain Twisted protocol that
speaks MLLP over a real socket, so every test goes through framing, pipeline, journal and ACK.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from gateway.app import Gateway
from gateway.config import GatewayConfig, load_config
from gateway.core.metrics import Metrics
from gateway.core.plugins import PluginInfo, build_plugin_manager, describe_plugins
from gateway.core.render import render_xml130
from gateway.formats.framing import FrameDecoder, Violation, wrap
from gateway.formats.hl7_model import encounter_from_pv1, observations_from_obx, person_from_pid
from gateway.formats.xml130 import ClaimFile, read_xml130, write_xml130
from gateway.model.hooks import PluginDescription, hookimpl
from gateway.model.records import RecordSet
from gateway.testing.gateway import read_body

SAMPLES = Path(__file__).resolve().parent / "messages"


def sample(name: str) -> bytes:
    """A sample message from tests/messages (copies of ../shared/bench/messages), segments ending in CR."""
    return (SAMPLES / name).read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r") + b"\r"


def hl7(*segments: str, charset: str = "UNICODE UTF-8", control_id: str = "MSG00001", sending_app: str = "TEST_HIS",
        message_type: str = "ADT^A04^ADT_A01", version: str = "2.5", accept_ack: str = "", app_ack: str = "") -> bytes:
    """A small message built from segments, encoded in ``charset`` (its MSH-18)."""
    from gateway.formats.charsets import codec_for

    msh = (f"MSH|^~\\&|{sending_app}|79001|HSSK_GW|SYT_79|20250315083000||{message_type}|{control_id}|P|{version}"
           f"|||{accept_ack}|{app_ack}||{charset}")
    body = segments or ("PID|1||079085000123^^^BCA^NI||Nguyễn^Văn Thử||19850412|M",)
    text = "\r".join((msh,) + tuple(body)) + "\r"
    return text.encode(codec_for(charset) or "utf-8")


class RecordingAdapter:
    """A test adapter: normalises with the shared HL7 mappers and can be told to misbehave."""

    name = "test_his"

    def __init__(self, plugin: TestPlugin) -> None:
        self.plugin = plugin

    def normalize(self, message):
        behaviour = self.plugin.behaviour
        if behaviour is not None:
            return behaviour(message)
        return RecordSet(kind=message.message_type, person=person_from_pid(message),
                         encounter=encounter_from_pv1(message), observations=observations_from_obx(message))


class TestPlugin:
    """Claims MSH-3 TEST_HIS (and the sample senders); ``behaviour`` replaces normalize when set."""

    __test__ = False
    senders = frozenset({"TEST_HIS", "HIS_THU_NGHIEM", "LIS_THU_NGHIEM"})

    def __init__(self) -> None:
        self.behaviour = None
        self.adapter = RecordingAdapter(self)

    @hookimpl
    def hssk_describe(self):
        return PluginDescription("test_his", "MSH-3 TEST_HIS")

    @hookimpl
    def hssk_identify(self, message):
        return self.adapter if message.sending_application in self.senders else None


def gateway_config(data_dir: Path, **overrides):
    """Defaults with both listeners on 127.0.0.1 port 0 and the journal under ``data_dir``."""
    values = {"data_dir": str(data_dir), "mllp.listen": "tcp:0:interface=127.0.0.1",
              "http.listen": "tcp:0:interface=127.0.0.1", "store.min_free_disk_bytes": 0}
    values.update(overrides)
    return load_config(environ={}, overrides=values)


async def start_gateway(data_dir: Path, plugins=(), clock=None, **overrides) -> Gateway:
    config = gateway_config(data_dir, **overrides)
    manager = build_plugin_manager(config, extra=plugins, load_entry_points=False)
    gateway = Gateway(config, reactor, clock=clock, plugins=manager)
    await gateway.start()
    return gateway


class MLLPClient(Protocol):
    """Sends raw bytes and collects the ACK frames that come back, in order."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder(64 * 1024 * 1024)
        self.frames: list[bytes] = []
        self.violations: list[Violation] = []
        self._waiters: list[tuple[int, Deferred]] = []
        self.closed = Deferred()

    def dataReceived(self, data: bytes) -> None:
        for item in self.decoder.feed(data):
            (self.violations if isinstance(item, Violation) else self.frames).append(item)
        self._wake()

    def connectionLost(self, reason=None) -> None:
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(ConnectionError(f"connection closed with {len(self.frames)} frames received"))
        self.closed.callback(None)

    def _wake(self) -> None:
        # Take the ready waiters off the list before firing any: a callback may resume a test that
        # sends again and waits (re-entering here), and must not see a waiter already fired.
        ready = [(count, d) for count, d in self._waiters if len(self.frames) >= count]
        self._waiters = [(count, d) for count, d in self._waiters if len(self.frames) < count]
        for count, d in ready:
            d.callback(self.frames[:count])

    def send(self, payload: bytes, framed: bool = True) -> None:
        self.transport.write(wrap(payload) if framed else payload)

    def wait_frames(self, count: int, timeout: float = 10.0) -> Deferred:
        """Fires with the first ``count`` frames received on this connection (each an ACK)."""
        d: Deferred = Deferred()
        self._waiters.append((count, d))
        d.addTimeout(timeout, reactor)
        self._wake()
        return d


async def connect_mllp(gateway: Gateway, source: str | None = None) -> MLLPClient:
    """``source``: the local address to connect from (any of 127.0.0.0/8 is this host)."""
    host, port = gateway.address("mllp")
    bind = None if source is None else (source, 0)
    return await connectProtocol(TCP4ClientEndpoint(reactor, host, port, bindAddress=bind), MLLPClient())


def segments_of(frame: bytes, charset: str = "utf-8") -> dict[str, list[list[str]]]:
    """An ACK split into {segment name: [fields, ...]} for assertions (MSA-1 is ``["MSA"][0][1]``)."""
    out: dict[str, list[list[str]]] = {}
    for line in frame.decode(charset).split("\r"):
        if line:
            fields = line.split("|")
            out.setdefault(fields[0], []).append(fields)
    return out


# --- helpers for the transport tests (added; nothing above changed) ---------------------------------


def msa(frame: bytes, charset: str = "utf-8") -> list[str]:
    """The MSA fields of one ACK frame: ``msa(ack)[1]`` is the ACK code, ``[2]`` the control id."""
    return segments_of(frame, charset)["MSA"][0]


def msa_codes(frames: list[bytes]) -> list[tuple[str, str]]:
    """(MSA-1, MSA-2) of each frame, for asserting what came back and in which order."""
    return [tuple(msa(frame)[1:3]) for frame in frames]


def err_segments(frame: bytes, charset: str = "utf-8") -> list[list[str]]:
    """Every ERR of an ACK split into fields: ``[2]`` ERR-2 location, ``[3]`` ERR-3 code, ``[8]`` text."""
    return segments_of(frame, charset).get("ERR", [])


def metric_value(gateway: Gateway, name: str, **labels: str) -> float:
    """A sample of the gateway's own registry, 0 when it was never touched."""
    return sample_value(gateway.metrics, name, **labels)


def sample_value(metrics: Metrics, name: str, **labels: str) -> float:
    """The same for a component tested without a whole gateway."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


def select_rows(gateway: Gateway, select: str, where: dict, alias: str = "") -> list[dict]:
    """Rows of ``select`` (no WHERE or ORDER BY of its own) whose columns equal ``where``, oldest
    first, read through a separate connection to the gateway's journal (either backend) as an
    operator would. ``alias`` qualifies the filtered columns and the order (``"o."`` for
    ``FROM outbox o JOIN ...``)."""
    conn = gateway.store.connect()
    try:
        sql = select
        if where:
            sql += " WHERE " + " AND ".join(f"{alias}{key} = :{key}" for key in where)
        cursor = conn.execute(f"{sql} ORDER BY {alias}id", where)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor]
    finally:
        conn.close()


def journal_rows(gateway: Gateway, **where) -> list[dict]:
    """Journal rows, oldest first."""
    return select_rows(gateway, "SELECT * FROM messages", where)


def journal_person(gateway: Gateway, control_id: str) -> dict:
    """The person record journaled for the one message with this control id."""
    import json

    [row] = journal_rows(gateway, control_id=control_id)
    return json.loads(row["records"])["person"]


#: Grave, acute, tilde, hook above, dot below: the marks Windows-1258 writes as combining characters.
_VIETNAMESE_TONE_MARKS = "\u0300\u0301\u0303\u0309\u0323"


def encode_windows_1258(text: str) -> bytes:
    """Encode Vietnamese the way Windows-1258 senders do: precomposed base letters (â ê ô ơ ư ă)
    where the code page has them, the tone mark as a separate combining character."""
    import unicodedata

    out = bytearray()
    for char in unicodedata.normalize("NFC", text):
        try:
            out += char.encode("cp1258")
        except UnicodeEncodeError:
            decomposed = unicodedata.normalize("NFD", char)
            tones = "".join(c for c in decomposed if c in _VIETNAMESE_TONE_MARKS)
            rest = "".join(c for c in decomposed if c not in _VIETNAMESE_TONE_MARKS)
            out += (unicodedata.normalize("NFC", rest) + tones).encode("cp1258")
    return bytes(out)


def standard_records(message) -> RecordSet:
    """What the test adapter returns when it has no ``behaviour``: the shared HL7 mappers' result."""
    return RecordSet(kind=message.message_type, person=person_from_pid(message),
                     encounter=encounter_from_pv1(message), observations=observations_from_obx(message))


# --- helpers for the pipeline, journal, HTTP and CLI tests (added; nothing above changed) -----------


def replace_msh_field(raw: bytes, n: int, value: str) -> bytes:
    """``raw`` with MSH-n (n >= 3) set to ``value``; every other byte is left as it was."""
    end = raw.find(b"\r")
    header, rest = (raw, b"") if end < 0 else (raw[:end], raw[end:])
    separator = header[3:4]
    fields = header.split(separator)
    fields += [b""] * (n - len(fields))
    fields[n - 1] = value.encode("ascii")  # fields[0] is "MSH", fields[1] is MSH-2: MSH-n is fields[n - 1]
    return separator.join(fields) + rest


async def send_and_receive(client: MLLPClient, payload: bytes) -> bytes:
    """Send one message and return the one ACK frame that answers it (original mode)."""
    expected = len(client.frames) + 1
    client.send(payload)
    frames = await client.wait_frames(expected)
    return frames[-1]


async def answer_of_a_fresh_gateway(data_dir: Path, plugins, payload: bytes, **overrides) -> bytes:
    """Start a gateway with ``plugins``, send it one message over MLLP, stop it: the answer."""
    gateway = await start_gateway(data_dir, plugins=plugins, **overrides)
    try:
        client = await connect_mllp(gateway)
        answer = await send_and_receive(client, payload)
        client.transport.loseConnection()
    finally:
        await gateway.stop()
    return answer


class HttpResponse:
    def __init__(self, code: int, headers: dict[str, str], body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def json(self):
        import json

        return json.loads(self.body)


async def http_request(gateway: Gateway, method: str, path: str, body: bytes | None = None,
                       content_type: str | None = None, chunked: bool = False,
                       headers: dict[str, str] | None = None, source: str | None = None) -> HttpResponse:
    """One real HTTP request to the gateway's listener (twisted.web Agent, no connection reuse).

    ``chunked`` sends the body without Content-Length, as a streaming client would; ``headers``
    are added as given (e.g. Authorization); ``source`` is the local address to connect from
    (any of 127.0.0.0/8 is this host, so a test can be two peers)."""
    from io import BytesIO

    from twisted.web.client import Agent, FileBodyProducer
    from twisted.web.http_headers import Headers
    from twisted.web.iweb import UNKNOWN_LENGTH

    host, port = gateway.address("http")
    sent = Headers()
    if content_type is not None:
        sent.addRawHeader(b"content-type", content_type.encode("latin-1"))
    for name, value in (headers or {}).items():
        sent.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
    producer = None
    if body is not None:
        producer = FileBodyProducer(BytesIO(body))
        if chunked:
            producer.length = UNKNOWN_LENGTH
    agent = Agent(reactor, bindAddress=None if source is None else (source, 0))
    response = await agent.request(method.encode("ascii"), f"http://{host}:{port}{path}".encode("ascii"), sent,
                                   producer)
    data = await read_body(response)
    found = {name.decode("latin-1").lower(): values[-1].decode("latin-1")
             for name, values in response.headers.getAllRawHeaders()}
    return HttpResponse(response.code, found, data)


# --- helpers for the destination tests (added; nothing above changed) --------------------------------


def outbox_rows(gateway: Gateway, **where) -> list[dict]:
    """Outbox rows, oldest first, without their payload."""
    return select_rows(gateway, "SELECT id, message_id, destination, idempotency_key, state, attempts, last_result, "
                                "last_error, content_type FROM outbox", where)


# --- helpers for the outbox operations tests (added; nothing above changed) --------------------------


async def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition()`` on the real reactor until it is true: for outcomes that real threads
    and sockets produce (a file written, a row recorded), where there is no clock to drive."""
    import time

    from twisted.internet.task import deferLater

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await deferLater(reactor, 0.02, lambda: None)


# --- helpers for the vendor plugin tests (added; nothing above changed) ------------------------------


def plugin_sample(plugin_dir: Path, name: str) -> bytes:
    """A plugin's own sample (plugins/<name>/samples), HL7 segments ending in CR; XML as stored."""
    raw = (plugin_dir / "samples" / name).read_bytes()
    if name.endswith(".hl7"):
        return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r") + b"\r"
    return raw


def fresh_plugin_manager(plugin, **overrides):
    """A plugin manager holding only ``plugin`` (and the core renderers), configured with the
    gateway defaults plus ``overrides``: a test can reconfigure a fresh plugin object without
    touching the bundled singleton other tests load through the entry point."""
    return build_plugin_manager(load_config(environ={}, overrides=overrides), extra=[plugin], load_entry_points=False)


def xml130_projection(records: RecordSet) -> dict:
    """What an XML 130 file can say about a record set: the XML1 field texts, the identifiers
    (system, value and card columns; the assigner has no XML field), and the XML4 result fields.
    Two record sets with equal projections are the same claim as far as XML 130 is concerned."""
    from gateway.formats.xml130 import xml1_values

    identifiers = set()
    if records.person is not None:
        identifiers = {(i.system, i.value, i.valid_from, i.valid_to, i.registered_facility)
                       for i in records.person.identifiers}
    results = [(o.stt, o.service_code, o.code, o.name, o.value, o.unit, o.observed_at, o.reader)
               for o in records.observations]
    xml1 = {tag: text for tag, text in xml1_values(records).items() if text}  # empty and absent say the same
    return {"xml1": xml1, "identifiers": identifiers, "xml4": results,
            "xml2": len(records.medications), "xml3": len(records.services)}



# --- what the bundled plugins' tests take of the gateway besides gateway.plugin and gateway.testing
# (tests/test_layers.py holds plugins/ to those two, as a third party's plugin is held): the
# configuration, the plugins as the gateway loads them, XML 130 as the gateway reads and renders it

def config_from(path: Path | None = None, **overrides) -> GatewayConfig:
    """The configuration in ``path`` (the built-in defaults without one) with ``overrides``, read
    without the environment."""
    return load_config(path=path, environ={}, overrides=overrides)


def installed_plugins(config: GatewayConfig):
    """The plugin manager the gateway builds for ``config``: the plugins of the entry-point group,
    configured, and the built-ins."""
    return build_plugin_manager(config)


def described_plugins(config: GatewayConfig) -> list[PluginInfo]:
    """What ``hssk-gateway plugins`` lists for ``config``."""
    return describe_plugins(build_plugin_manager(config))


async def start_installed_gateway(config: GatewayConfig) -> Gateway:
    """A gateway on ``config`` with the installed plugins, started."""
    gateway = Gateway(config, reactor)
    await gateway.start()
    return gateway


def read_claim_file(raw: bytes) -> ClaimFile:
    """An XML 130 file read as the gateway reads one a sender posts."""
    return read_xml130(raw)


def write_claim_file(document: ClaimFile) -> bytes:
    """``document`` written as the gateway writes an XML 130 file."""
    return write_xml130(document)


def rendered_xml130(records: RecordSet, message) -> bytes:
    """``records`` as the core's XML 130 renderer writes them for a destination (idempotency key
    ``key-1``); it raises NotRenderable for a record set that has no XML 130 form."""
    return render_xml130(records, message, "key-1").body

# --- the CLI as an operator runs it: a subprocess of the installed console script --------------

CLI = Path(sys.executable).parent / "hssk-gateway"
REPO = Path(__file__).resolve().parents[1]


def run_cli(*args) -> subprocess.CompletedProcess:
    """``hssk-gateway ARGS`` from the repository root, without any HSSK_* environment override."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    return subprocess.run([str(CLI), *map(str, args)], cwd=REPO, env=env, capture_output=True, timeout=60)


def run_json(*args):
    result = run_cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def run_clock_until(clock, condition, timeout: float = 20.0) -> None:
    """For a gateway on a ``task.Clock``: run its zero-delay timers and let real I/O (sockets,
    the writer thread) happen until ``condition()`` holds."""
    from twisted.internet.task import deferLater

    for _ in range(int(timeout / 0.01)):
        clock.advance(0)
        if condition():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"condition not reached within {timeout} s")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- helpers for the transport promise tests (added; nothing above changed) ---------------------------


async def connect_mllp_from(gateway: Gateway, source: str) -> MLLPClient:
    """An MLLP connection from ``source`` (any of 127.0.0.0/8 is this host, so a test can be two peers)."""
    host, port = gateway.address("mllp")
    return await connectProtocol(TCP4ClientEndpoint(reactor, host, port, bindAddress=(source, 0)), MLLPClient())


class TestCA:
    """A certificate authority made in the test, writing PEM files under ``directory``: for TLS on
    either side (the destinations' client certificates, the listeners' ``tls_client_ca``)."""

    __test__ = False

    def __init__(self, directory: Path, name: str = "HSSK test CA") -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = self._sign(name, self.key, ca=True)
        self.pem = self._write(f"{_file_stem(name)}.pem", self._pem(self.certificate))

    def issue(self, name: str, *, server: bool = False) -> tuple[str, str, object]:
        """A certificate for ``name`` (a server's for localhost and 127.0.0.1, else a client's):
        the paths of its certificate and key files, and the ``cryptography`` certificate."""
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID

        key = ec.generate_private_key(ec.SECP256R1())
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))] if server else None
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        certificate = self._sign(name, key, usage=usage, san=san)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        stem = f"{_file_stem(self.name)}-{_file_stem(name)}"
        return self._write(f"{stem}.pem", self._pem(certificate)), self._write(f"{stem}.key", key_pem), certificate

    def _sign(self, name: str, key, *, ca: bool = False, usage=None, san=None):
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    @staticmethod
    def _pem(certificate) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return certificate.public_bytes(serialization.Encoding.PEM)

    def _write(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)


def _file_stem(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def install_plugin_module(site: Path, module: str, source: str, entry_point: str, distribution: str) -> None:
    """A plugin module and its ``.dist-info`` written into ``site`` as pip would install them, so
    the gateway finds the plugin through its entry-point group once ``site`` is on ``sys.path``
    (this process) or ``PYTHONPATH`` (a child)."""
    info = site / f"{distribution.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (site / f"{module}.py").write_text(source)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[hssk_gateway.plugins]\n{entry_point} = {module}\n")
