"""A small HTTP/1.1 client for the ``http`` destination: POST a body that is already in memory,
read the status, the headers and the first bytes of the body, keep the connection for the next
row.

Why not ``twisted.web.client.Agent``: draining a deep outbox, the Agent's machinery (Deferred
chains per request, header objects, a state machine per response, a producer per body) was the
largest share of the reactor's time and kept the drain under 1,500 rows/s on one core. Our needs
are narrow — one method, one origin per destination, bodies we hold, answers we only classify —
so this module does just that: the request is one ``write``; the response is parsed from
a buffer (``Content-Length``, chunked, or read-until-close, with 1xx interim answers skipped).

A connection taken from the idle pool may have been closed by the server just before we used it;
when it closes without a single byte of answer, the request goes once more on a new connection
(safe: every request carries an ``Idempotency-Key``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
#: A status line and headers larger than this are not a record store's answer.
MAX_HEAD_BYTES = 64 * 1024
#: Past this many body bytes we stop reading and drop the connection instead.
MAX_DRAINED_BODY = 1024 * 1024
#: A kept connection unused this long is never used again (it is closed when the pool next looks
#: at it): firewalls and NAT forget quiet flows without a word, and a request sent on a forgotten
#: flow waits the whole response timeout for nothing.
MAX_IDLE_SECONDS = 60.0


@dataclass(frozen=True)
class HttpResponse:
    code: int
    headers: dict[bytes, bytes]
    #: The first ``body_limit`` bytes of the body: enough to explain a rejection.
    body: bytes


class ResponseTimeout(Exception):
    """No complete response within the timeout (connecting included)."""


class ConnectionDropped(Exception):
    """The connection ended before the response was complete; ``started`` says whether any
    byte of an answer had arrived."""

    def __init__(self, message: str, started: bool = False) -> None:
        super().__init__(message)
        self.started = started


class MalformedResponse(Exception):
    """The bytes that came back are not an HTTP/1.x response we can read."""


class ResponseParser:
    """Incremental parser for one response; ``feed`` any split of the bytes, ``finish`` at EOF.

    ``done`` becomes True once the response is complete; ``keep_alive`` says whether the
    connection may carry another request; ``leftover`` is True when bytes followed the response.
    """

    _HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE = range(7)

    def __init__(self, body_limit: int, max_body: int = MAX_DRAINED_BODY) -> None:
        self._limit = body_limit
        self._max_body = max_body
        self._buffer = bytearray()
        self._state = self._HEAD
        self._remaining = 0
        self._body = bytearray()
        self._body_seen = 0
        self.code = 0
        self.headers: dict[bytes, bytes] = {}
        self.keep_alive = False
        self.done = False
        self.leftover = False
        #: Any byte of an answer arrived (a reused connection that closes before this may be retried).
        self.started = False

    @property
    def response(self) -> HttpResponse:
        return HttpResponse(self.code, self.headers, bytes(self._body))

    def feed(self, data: bytes) -> None:
        if data:
            self.started = True
        if self.done:
            self.leftover = self.leftover or bool(data)
            return
        self._buffer += data
        while not self.done and self._step():
            pass
        if self.done and self._buffer:
            self.leftover = True

    def finish(self) -> None:
        """The connection closed: a read-until-close body ends here; anything else is cut short."""
        if self.done:
            return
        if self._state == self._UNTIL_CLOSE:
            self.done = True
            self.keep_alive = False
            return
        raise ConnectionDropped("the connection closed before the response was complete", self.started)

    def _step(self) -> bool:
        """Consume what the buffer allows in the current state; False when more bytes are needed."""
        buffer = self._buffer
        state = self._state
        if state == self._HEAD:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise MalformedResponse(f"response headers larger than {MAX_HEAD_BYTES} bytes")
                return False
            head = bytes(buffer[:end])
            del buffer[:end + 4]
            self._read_head(head)
            return True
        if state == self._LENGTH or state == self._CHUNK_DATA:
            if not buffer:
                return False
            take = min(self._remaining, len(buffer))
            self._keep(buffer[:take])
            del buffer[:take]
            self._remaining -= take
            if self._remaining == 0:
                if state == self._LENGTH:
                    self.done = True
                else:
                    self._state = self._CHUNK_END
            return True
        if state == self._UNTIL_CLOSE:
            if buffer:
                self._keep(buffer)
                buffer.clear()
            return False
        end = buffer.find(b"\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise MalformedResponse("chunk framing line too long")
            return False
        line = bytes(buffer[:end])
        del buffer[:end + 2]
        if state == self._CHUNK_END:
            if line:
                raise MalformedResponse("chunk data longer than its size line said")
            self._state = self._CHUNK_SIZE
        elif state == self._CHUNK_SIZE:
            digits = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(digits):  # int(x, 16) alone would take "0x2", "+2" and "1_0"
                raise MalformedResponse(f"bad chunk size line {line[:40]!r}")
            size = int(digits, 16)
            self._remaining = size
            self._state = self._CHUNK_DATA if size else self._TRAILERS
        elif not line:  # the empty line that ends the trailers
            self.done = True
        return True

    def _read_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
            raise MalformedResponse(f"bad status line {lines[0][:80]!r}")
        code = int(parts[1])
        headers: dict[bytes, bytes] = {}
        key = b""
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t") and key:  # obs-fold: a continuation of the previous header
                headers[key] = (headers[key] + b" " + line.strip()).strip()
                continue
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise MalformedResponse(f"bad header line {line[:80]!r}")
            key = name.lower()
            value = value.strip()
            headers[key] = headers[key] + b", " + value if key in headers else value
        if 100 <= code < 200:
            return  # an interim answer (100 Continue, 102, 103): the real one follows
        self.code, self.headers = code, headers
        connection = headers.get(b"connection", b"").lower()
        self.keep_alive = parts[0] == b"HTTP/1.1" and b"close" not in connection
        encoding = headers.get(b"transfer-encoding", b"").lower()
        length = headers.get(b"content-length")
        if code in (204, 304):
            self.done = True
        elif encoding:
            if encoding.rsplit(b",", 1)[-1].strip() != b"chunked":
                raise MalformedResponse(f"unsupported transfer-encoding {encoding[:40]!r}")
            self._state = self._CHUNK_SIZE
        elif length is not None:
            values = {v.strip() for v in length.split(b",")}  # the same length repeated is allowed
            value = values.pop() if len(values) == 1 else b""
            if not (value.isdigit() and value.isascii() and len(value) <= 18):
                raise MalformedResponse(f"bad content-length {length[:40]!r}")
            self._remaining = int(value)
            self._state = self._LENGTH
            self.done = self._remaining == 0
        else:
            self._state = self._UNTIL_CLOSE
            self.keep_alive = False

    def _keep(self, data) -> None:
        self._body_seen += len(data)
        if len(self._body) < self._limit:
            self._body += data[: self._limit - len(self._body)]
        if self._body_seen > self._max_body:
            # Answer with what we have; the caller drops the connection rather than read on.
            self.done = True
            self.keep_alive = False


class _Connection(Protocol):
    """One persistent connection; carries one request at a time for its :class:`HttpClient`."""

    def __init__(self, client: HttpClient) -> None:
        self._client = client
        self._parser: ResponseParser | None = None
        self._waiting: Deferred | None = None
        self.lost: Deferred = Deferred()
        #: When the connection went back to the pool (see :data:`MAX_IDLE_SECONDS`).
        self.idle_since = 0.0

    def send(self, request: bytes, body_limit: int) -> Deferred:
        self._parser = ResponseParser(body_limit)
        self._waiting = Deferred()
        self.transport.write(request)
        return self._waiting

    def dataReceived(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: this connection cannot be trusted again
            self.transport.abortConnection()
            return
        try:
            parser.feed(data)
        except MalformedResponse as e:
            self._fail(e)
            self.transport.abortConnection()
            return
        if parser.done:
            self._respond(parser)

    def connectionLost(self, reason: Failure) -> None:
        self._client._forget(self)
        parser = self._parser
        if parser is not None:
            try:
                parser.finish()
            except ConnectionDropped as e:
                if not reason.check(ConnectionDone):  # e.g. a TLS certificate the store's CA did not sign
                    e = ConnectionDropped(f"{e} ({reason.getErrorMessage()})", e.started)
                self._fail(e)
            else:
                self._respond(parser)
        self.lost.callback(None)

    def abort(self) -> None:
        self._parser = None
        self._waiting = None
        self.transport.abortConnection()

    def _respond(self, parser: ResponseParser) -> None:
        waiting, self._waiting, self._parser = self._waiting, None, None
        reusable = parser.keep_alive and not parser.leftover
        if reusable:
            self._client._release(self)
        else:
            self.transport.loseConnection()
        waiting.callback(parser.response)

    def _fail(self, error: Exception) -> None:
        waiting, self._waiting, self._parser = self._waiting, None, None
        if waiting is not None:
            waiting.errback(Failure(error))


class HttpClient:
    """Persistent connections to one origin (``endpoint``), at most ``max_idle`` kept idle, none
    reused after :data:`MAX_IDLE_SECONDS`.

    ``post`` returns a Deferred that fires with an :class:`HttpResponse`, or fails with
    :class:`ResponseTimeout`, :class:`ConnectionDropped`, :class:`MalformedResponse` or the
    endpoint's connection error.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, clock: IReactorTime, host: str, max_idle: int) -> None:
        self._endpoint = endpoint
        self._clock = clock
        self._host = host.encode("idna") if not host.isascii() else host.encode("ascii")
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._exchanges: set[_Exchange] = set()
        self._closed = False
        self._factory = Factory.forProtocol(lambda: _Connection(self))

    def post(self, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, *, timeout: float,
             body_limit: int) -> Deferred:
        if self._closed:
            return fail(ConnectionDropped("the client is closed"))
        lines = [b"POST ", target, b" HTTP/1.1\r\nHost: ", self._host, b"\r\nContent-Length: ",
                 str(len(body)).encode("ascii"), b"\r\n"]
        for name, value in headers:
            if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
                return fail(ValueError(f"header {name.decode('latin-1')!r} has a line break in its value"))
            lines += [name, b": ", value, b"\r\n"]
        lines += [b"\r\n", body]
        return _Exchange(self, b"".join(lines), body_limit, timeout).start()

    def close(self) -> Deferred:
        """Abort every connection and every request still going; fires when all are gone.

        Aborting rather than closing politely: a TLS close waits for the peer's answer, and a
        store that no longer answers would hold up the gateway's shutdown. A request cut short
        here is reported as dropped, and its row is delivered again after the restart."""
        self._closed = True
        for exchange in list(self._exchanges):
            exchange.cancel_connect()
        connections = list(self._all)
        self._idle.clear()
        for connection in connections:
            connection.transport.abortConnection()
        return DeferredList([c.lost for c in connections])

    def _take_idle(self) -> _Connection | None:
        """The most recently used idle connection; ones idle too long are dropped on the way
        (checked here rather than by a timer per request, which would cost every delivery)."""
        now = self._clock.seconds()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since <= MAX_IDLE_SECONDS:
                return connection
            connection.transport.abortConnection()
        return None

    def _connect(self) -> Deferred:
        return self._endpoint.connect(self._factory)

    def _opened(self, connection: _Connection) -> None:
        self._all.add(connection)

    def _release(self, connection: _Connection) -> None:
        if self._closed or len(self._idle) >= self._max_idle:
            connection.transport.loseConnection()
            return
        connection.idle_since = self._clock.seconds()
        self._idle.append(connection)

    def _forget(self, connection: _Connection) -> None:
        self._all.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)


class _Exchange:
    """One request: take or open a connection, send, wait — all under one timeout."""

    def __init__(self, client: HttpClient, request: bytes, body_limit: int, timeout: float) -> None:
        self._client = client
        self._request = request
        self._limit = body_limit
        self._result: Deferred = Deferred()
        self._connecting: Deferred | None = None
        self._connection: _Connection | None = None
        self._timer = client._clock.callLater(timeout, self._timed_out)

    def start(self) -> Deferred:
        self._client._exchanges.add(self)
        connection = self._client._take_idle()
        if connection is not None:
            self._send(connection, reused=True)
        else:
            self._open()
        return self._result

    def cancel_connect(self) -> None:
        """The client is closing: a connection still being made is not wanted any more."""
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            self._finish(Failure(ConnectionDropped("the client closed before the connection was made")))
            connecting.cancel()

    def _open(self) -> None:
        self._connecting = self._client._connect()
        self._connecting.addCallbacks(self._connected, self._error)

    def _connected(self, connection: _Connection) -> None:
        self._connecting = None
        self._client._opened(connection)
        if self._result.called or self._client._closed:  # timed out, or the client closed, meanwhile
            connection.transport.abortConnection()
            self._finish(Failure(ConnectionDropped("the client closed before the request was sent")))
            return
        self._send(connection, reused=False)

    def _send(self, connection: _Connection, reused: bool) -> None:
        self._connection = connection
        connection.send(self._request, self._limit).addCallbacks(self._answered, self._dropped,
                                                                 errbackArgs=(reused,))

    def _answered(self, response: HttpResponse) -> None:
        self._connection = None
        self._finish(response)

    def _dropped(self, failure: Failure, reused: bool) -> None:
        self._connection = None
        if self._result.called:
            return
        if (reused and not self._client._closed and failure.check(ConnectionDropped)
                and not failure.value.started):
            self._open()  # the server closed an idle connection as we reused it
            return
        self._finish(failure)

    def _error(self, failure: Failure) -> None:
        self._connecting = None
        if not self._result.called:
            self._finish(failure)

    def _timed_out(self) -> None:
        self._timer = None
        connecting, self._connecting = self._connecting, None
        connection, self._connection = self._connection, None
        self._finish(Failure(ResponseTimeout()))
        if connecting is not None:
            connecting.cancel()
        if connection is not None:
            connection.abort()

    def _finish(self, result: HttpResponse | Failure) -> None:
        self._client._exchanges.discard(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._result.called:
            return
        if isinstance(result, Failure):
            self._result.errback(result)
        else:
            self._result.callback(result)
