"""Test support: a real gateway on 127.0.0.1 port 0, and a real MLLP client.

Nothing here stands in for a gateway component; the client is a plain Twisted protocol that
speaks MLLP over a real socket, so every test goes through framing, pipeline, journal and ACK.
"""
from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from gateway.app import Gateway
from gateway.config import load_config
from gateway.core.hookspecs import PluginDescription, hookimpl
from gateway.core.model import RecordSet
from gateway.core.plugins import build_plugin_manager
from gateway.formats.hl7_model import encounter_from_pv1, observations_from_obx, person_from_pid
from gateway.transports.framing import FrameDecoder, Violation, wrap

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "bench" / "messages"
LOCAL_SAMPLES = Path(__file__).resolve().parent / "messages"


def sample(name: str) -> bytes:
    """A sample message from ../shared/bench/messages (or tests/messages), segments ending in CR."""
    for folder in (LOCAL_SAMPLES, SAMPLES):
        path = folder / name
        if path.exists():
            return path.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r") + b"\r"
    raise FileNotFoundError(name)


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
        still = []
        for count, d in self._waiters:
            if len(self.frames) >= count:
                d.callback(self.frames[:count])
            else:
                still.append((count, d))
        self._waiters = still

    def send(self, payload: bytes, framed: bool = True) -> None:
        self.transport.write(wrap(payload) if framed else payload)

    def wait_frames(self, count: int, timeout: float = 10.0) -> Deferred:
        """Fires with the first ``count`` frames received on this connection (each an ACK)."""
        d: Deferred = Deferred()
        self._waiters.append((count, d))
        d.addTimeout(timeout, reactor)
        self._wake()
        return d


async def connect_mllp(gateway: Gateway) -> MLLPClient:
    host, port = gateway.address("mllp")
    return await connectProtocol(TCP4ClientEndpoint(reactor, host, port), MLLPClient())


def segments_of(frame: bytes, charset: str = "utf-8") -> dict[str, list[list[str]]]:
    """An ACK split into {segment name: [fields, ...]} for assertions (MSA-1 is ``["MSA"][0][1]``)."""
    out: dict[str, list[list[str]]] = {}
    for line in frame.decode(charset).split("\r"):
        if line:
            fields = line.split("|")
            out.setdefault(fields[0], []).append(fields)
    return out
