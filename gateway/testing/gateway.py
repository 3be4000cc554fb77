"""A real gateway for a plugin's tests, and the answers it gives, ready for assertions.

:class:`GatewayUnderTest` is the gateway ``hssk-gateway serve`` runs (journal, pipeline workers,
outbox, both listeners), on 127.0.0.1 port 0 with its journal in a temporary directory and only
the plugins under test loaded. A test talks to it as a hospital would: bytes over MLLP, a POST
over HTTP. Nothing in it is a stand-in, so a plugin that passes here behaves the same in
production.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from io import BytesIO
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, FileBodyProducer, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from gateway.app import Gateway
from gateway.config import load_config
from gateway.core.hookspecs import ENTRY_POINT_GROUP
from gateway.core.plugins import build_plugin_manager
from gateway.formats.framing import FrameDecoder, Violation, wrap
from gateway.formats.hl7v2 import Hl7Message


def _reactor():
    """The installed reactor, looked up when used: pytest loads this module before pytest-twisted
    installs the reactor its ``--reactor`` option names, and importing it earlier would install
    the default one in its place."""
    from twisted.internet import reactor

    return reactor


ACCEPTED = frozenset({"AA", "CA"})
ERROR = frozenset({"AE", "CE"})
REJECTED = frozenset({"AR", "CR"})

#: What every gateway under test is given before the test's own settings: loopback listeners on
#: free ports, and no free-disk floor (a nearly full CI disk must not make intake refuse).
BASE_SETTINGS: Mapping[str, Any] = {"mllp.listen": "tcp:0:interface=127.0.0.1",
                                    "http.listen": "tcp:0:interface=127.0.0.1", "store.min_free_disk_bytes": 0}


@dataclass(frozen=True)
class ErrorSegment:
    """One ERR of an ACK: ERR-2 location (``PID^1^3``), ERR-3 table-0357 code, ERR-4 severity,
    ERR-8 the text a person reads."""

    location: str
    code: int
    severity: str
    text: str


class Ack:
    """An HL7 ACK the gateway sent back, with the assertions a plugin test makes on it."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.message = Hl7Message.from_bytes(raw)
        msa = self.message.segments("MSA")
        self.code = msa[0][1] if msa else ""
        self.control_id = msa[0][2] if msa and len(msa[0]) > 2 else ""
        self.errors = tuple(self._error(fields) for fields in self.message.segments("ERR"))

    def _error(self, fields: list[str]) -> ErrorSegment:
        def at(n: int) -> str:
            return self.message.unescape(fields[n]) if n < len(fields) else ""

        code = self.message.components(at(3))[0]
        return ErrorSegment(at(2), int(code) if code.isdigit() else 0, at(4), at(8))

    def __repr__(self) -> str:
        return self.raw.decode("utf-8", "replace").replace("\r", "\n")

    def assert_accepted(self) -> Ack:
        """AA or CA: journaled, committed and queued."""
        assert self.code in ACCEPTED, f"expected AA/CA, got {self.code}: {self.errors}"
        return self

    def assert_error(self, location: str | None = None, code: int | None = None, text: str | None = None) -> ErrorSegment:
        """AE or CE with an ERR at ``location`` (exact), of ``code``, whose text contains
        ``text``; returns that ERR. Each argument left out matches any."""
        assert self.code in ERROR, f"expected AE/CE, got {self.code}: {self.errors}"
        return self._matching(location, code, text)

    def assert_rejected(self, location: str | None = None, code: int | None = None,
                        text: str | None = None) -> ErrorSegment:
        """AR or CR (not processed: unclaimed, unsupported, refused) with a matching ERR."""
        assert self.code in REJECTED, f"expected AR/CR, got {self.code}: {self.errors}"
        return self._matching(location, code, text)

    def _matching(self, location: str | None, code: int | None, text: str | None) -> ErrorSegment:
        for error in self.errors:
            if ((location is None or error.location == location) and (code is None or error.code == code)
                    and (text is None or text in error.text)):
                return error
        raise AssertionError(f"no ERR with location={location!r} code={code!r} text containing {text!r} "
                             f"among {list(self.errors)}")


@dataclass(frozen=True)
class HttpAnswer:
    """The gateway's answer to one HTTP request."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def ack(self) -> Ack:
        """The HL7 ACK a ``POST /hl7`` answers with."""
        return Ack(self.body)


class MllpConnection(Protocol):
    """One MLLP connection to the gateway: :meth:`send` a message, get its ACK (the gateway
    answers each connection's messages in the order they arrived)."""

    def __init__(self) -> None:
        self._decoder = FrameDecoder(64 * 1024 * 1024)
        self._pending: list[Deferred] = []
        self.acks: list[Ack] = []

    def dataReceived(self, data: bytes) -> None:
        for item in self._decoder.feed(data):
            if isinstance(item, Violation):
                continue
            ack = Ack(item)
            self.acks.append(ack)
            if self._pending:
                self._pending.pop(0).callback(ack)

    def connectionLost(self, reason=None) -> None:
        pending, self._pending = self._pending, []
        for d in pending:
            d.errback(ConnectionError(f"the gateway closed the connection after {len(self.acks)} ACKs"))

    def send(self, raw: bytes, timeout: float = 15.0) -> Deferred:
        """Frame ``raw`` (segments ending in CR), send it; fires with its :class:`Ack`."""
        d: Deferred = Deferred()
        self._pending.append(d)
        self.transport.write(wrap(raw))
        return d.addTimeout(timeout, _reactor())

    def close(self) -> None:
        self.transport.loseConnection()


def installed_plugin_names() -> set[str]:
    """The names in the ``hssk_gateway.plugins`` entry-point group: what ``serve`` would load."""
    return {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}


class GatewayUnderTest:
    """A gateway with the plugins under test, its journal under ``data_dir``.

    ``plugins`` holds entry-point names (loaded as ``serve`` loads them: the entry point, the
    contract check, ``hssk_configure``) and plugin objects (registered as they are); empty, it is
    every installed plugin. ``settings`` are configuration keys, dotted as in the environment
    overrides (``{"plugins.my_his.sending_applications": ["MY_HIS"], "destinations.x.kind":
    "file"}``), over ``config_file`` when one is given.
    """

    def __init__(self, data_dir: Path, plugins: Sequence[str | object] = (), settings: Mapping[str, Any] | None = None,
                 config_file: Path | None = None) -> None:
        names = [p for p in plugins if isinstance(p, str)]
        objects = [p for p in plugins if not isinstance(p, str)]
        installed = installed_plugin_names()
        unknown = sorted(set(names) - installed)
        if unknown:
            raise LookupError(f"no installed plugin is named {', '.join(unknown)} (entry-point group "
                              f"{ENTRY_POINT_GROUP!r} has {', '.join(sorted(installed)) or 'none'}); is the "
                              f"package installed (pip install -e .)?")
        values = {"data_dir": str(data_dir), **BASE_SETTINGS, **(settings or {})}
        if names:
            values["plugins.disabled"] = sorted(installed - set(names) | set(values.get("plugins.disabled", ())))
        self.config = load_config(path=config_file, environ={}, overrides=values)
        self.plugins = build_plugin_manager(self.config, extra=objects, load_entry_points=bool(names) or not objects)
        self.gateway: Gateway | None = None
        self.http = HttpClient(self)

    async def start(self) -> GatewayUnderTest:
        self.gateway = Gateway(self.config, _reactor(), plugins=self.plugins)
        await self.gateway.start()
        return self

    async def stop(self) -> None:
        if self.gateway is not None:
            gateway, self.gateway = self.gateway, None
            await gateway.stop()

    async def restart(self) -> None:
        """Stop, then start again on the same data dir: the journal and outbox are kept, as
        after a service restart."""
        await self.stop()
        await self.start()

    def address(self, listener: str) -> tuple[str, int]:
        """``("127.0.0.1", port)`` of the ``mllp`` or ``http`` listener."""
        return self.gateway.address(listener)

    async def connect_mllp(self) -> MllpConnection:
        host, port = self.address("mllp")
        return await connectProtocol(TCP4ClientEndpoint(_reactor(), host, port), MllpConnection())

    async def send_mllp(self, raw: bytes) -> Ack:
        """Send one message on a connection of its own and return its ACK."""
        connection = await self.connect_mllp()
        try:
            return await connection.send(raw)
        finally:
            connection.close()

    async def replay(self, message_id: int) -> dict:
        """Decide a journaled message again through the admin API, as an operator does after a
        fix (``hssk-gateway messages replay ID --url``)."""
        answer = await self.http.request("POST", f"/admin/messages/{message_id}/replay")
        assert answer.status == 200, f"replay of message {message_id}: HTTP {answer.status} {answer.body!r}"
        return answer.json()

    def journal(self, **where: Any) -> list[dict]:
        """Journal rows (``messages``), oldest first, whose columns equal ``where``
        (``control_id="MSG1"``, ``status="accepted"``, ``plugin="my_his"``)."""
        return self._select("SELECT * FROM messages", where)

    def outbox(self, **where: Any) -> list[dict]:
        """Outbox rows, oldest first, without their payload (``message_id=7``, ``destination="json"``)."""
        return self._select("SELECT id, message_id, destination, idempotency_key, state, attempts, last_error, "
                            "content_type FROM outbox", where)

    def not_routed(self, **where: Any) -> list[dict]:
        """Destinations a message was accepted for but not queued to, and why (``reason``
        ``no_episode``: an XML 130 file is an episode's, and an ADT^A40 has none)."""
        return self._select("SELECT message_id, destination, reason, text FROM not_routed", where)

    def outbox_keys(self, message_ids: Iterable[int]) -> set[str]:
        """The idempotency keys queued for these journal rows."""
        ids = set(message_ids)
        return {row["idempotency_key"] for row in self.outbox() if row["message_id"] in ids}

    def _select(self, select: str, where: Mapping[str, Any]) -> list[dict]:
        """Read through a connection of its own, as an operator's tool would, never the writer's."""
        conn = sqlite3.connect(self.config.database_path)
        conn.row_factory = sqlite3.Row
        try:
            sql = select + (" WHERE " + " AND ".join(f"{key} = :{key}" for key in where) if where else "")
            return [dict(row) for row in conn.execute(f"{sql} ORDER BY id", dict(where))]
        finally:
            conn.close()


class HttpClient:
    """HTTP requests to one gateway's listener, as a HIS or an operator sends them."""

    def __init__(self, gateway: GatewayUnderTest) -> None:
        self._gateway = gateway

    async def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                      headers: Mapping[str, str] | None = None) -> HttpAnswer:
        """One HTTP request to the gateway's listener, as a HIS or an operator sends it."""
        host, port = self._gateway.address("http")
        sent = Headers()
        if content_type is not None:
            sent.addRawHeader(b"content-type", content_type.encode("latin-1"))
        for name, value in (headers or {}).items():
            sent.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        producer = None if body is None else FileBodyProducer(BytesIO(body))
        response = await Agent(_reactor()).request(method.encode("ascii"), f"http://{host}:{port}{path}".encode("ascii"),
                                                sent, producer)
        data = await read_body(response)
        return HttpAnswer(response.code, {name.decode("latin-1").lower(): values[-1].decode("latin-1")
                                          for name, values in response.headers.getAllRawHeaders()}, data)

    async def post_hl7(self, raw: bytes) -> HttpAnswer:
        """HL7 over HTTP (``POST /hl7``): the answer's body is the ACK (``answer.ack``)."""
        return await self.request("POST", "/hl7", raw, "application/hl7-v2")

    async def post_xml130(self, raw: bytes) -> HttpAnswer:
        """An XML 130 file (``POST /xml130``): 200 ``{"status": "accepted", "message_id": N}``
        after the commit, 422 with ``{"errors": [...]}`` naming each broken rule."""
        return await self.request("POST", "/xml130", raw, "application/xml")


def read_body(response) -> Deferred:
    """The whole body of a twisted.web client response, like ``readBody`` without its
    abortConnection deprecation warning; a body cut short by the server is what arrived."""
    finished: Deferred = Deferred()
    response.deliverBody(_BodyReader(finished))
    return finished


class _BodyReader(Protocol):
    def __init__(self, finished: Deferred) -> None:
        self.finished = finished
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason=None) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)
