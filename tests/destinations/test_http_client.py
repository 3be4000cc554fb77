"""The HTTP/1.1 client behind the ``http`` destination.

The parser is tested on byte strings split every possible way; the connection handling against
scripted servers on 127.0.0.1 that count connections, keep or close them, answer in chunks, or
close a kept connection just as it is reused; TLS against a server that demands our client
certificate, signed by a CA generated for the test.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import given, settings, strategies as st
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater

from gateway.config import load_config
from gateway.core.destination import DELIVERED, RETRY, Delivery
from gateway.core.destination_kinds import DestinationKinds
from gateway.destinations.builtin import KINDS
from gateway.destinations.http import HttpDestination
from gateway.destinations.http_client import (MAX_DRAINED_BODY, MAX_IDLE_SECONDS, ConnectionDropped, HttpClient,
                                              MalformedResponse, ResponseParser)
from tests.support import TestCA

RESPONSES = {
    "length": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello", 200, b"hello", True),
    "chunked": (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3;ext=1\r\nabc\r\n0a\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n", 201, b"abc0123456789", True),
    "continue": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad",
                 400, b"bad", True),
    "close": (b"HTTP/1.1 503 Busy\r\nConnection: close\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n", 503, b"", False),
    "http10": (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", False),
    "no_content": (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", True),
    "folded": (b"HTTP/1.1 200 OK\r\nX-Note: first\r\n  second\r\nContent-Length: 2, 2\r\n\r\nok", 200, b"ok", True),
}


def parse(pieces: list[bytes], body_limit: int = 100) -> ResponseParser:
    parser = ResponseParser(body_limit)
    for piece in pieces:
        parser.feed(piece)
    return parser


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(RESPONSES)), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_split_of_a_response_parses_the_same(name, cuts):
    raw, code, body, keep_alive = RESPONSES[name]
    points = sorted({c % (len(raw) + 1) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)])]

    parser = parse(pieces)

    assert parser.done and not parser.leftover
    assert (parser.code, parser.response.body, parser.keep_alive) == (code, body, keep_alive)


def test_a_folded_header_is_joined():
    parser = parse([RESPONSES["folded"][0]])
    assert parser.headers[b"x-note"] == b"first second"


def test_a_body_without_length_ends_with_the_connection():
    parser = parse([b"HTTP/1.1 200 OK\r\n\r\npart one, ", b"part two"])
    assert not parser.done
    parser.finish()
    assert (parser.done, parser.keep_alive, parser.response.body) == (True, False, b"part one, part two")


def test_only_the_first_bytes_of_a_long_body_are_kept_but_all_are_read():
    parser = parse([b"HTTP/1.1 400 Bad\r\nContent-Length: 5000\r\n\r\n", b"x" * 5000], body_limit=10)
    assert (parser.done, parser.keep_alive, parser.response.body) == (True, True, b"x" * 10)


def test_a_body_past_the_drain_limit_ends_the_response_and_the_connection():
    head = f"HTTP/1.1 500 Oops\r\nContent-Length: {MAX_DRAINED_BODY * 2}\r\n\r\n".encode()
    parser = parse([head, b"y" * (MAX_DRAINED_BODY + 10)], body_limit=4)
    assert (parser.done, parser.keep_alive, parser.code, parser.response.body) == (True, False, 500, b"yyyy")


def test_bytes_after_a_complete_response_are_noticed():
    parser = parse([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n"])
    assert parser.done and parser.leftover


@pytest.mark.parametrize("raw", [
    b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\nok\r\n0\r\n\r\n"])
def test_what_is_not_an_http_response_is_refused(raw):
    with pytest.raises(MalformedResponse):
        parse([raw])


# --- against scripted servers on 127.0.0.1 ------------------------------------------------------

class ScriptedServer(Factory):
    """Answers each request with ``answer(n_on_connection)`` (bytes, or None to close without
    answering) and counts connections and requests."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []

    def buildProtocol(self, addr):
        self.connections += 1
        return _Scripted(self)


class _Scripted(Protocol):
    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self.buffer = b""
        self.count = 0

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")][0])
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.server.requests.append(head + b"\r\n\r\n" + rest[:length])
            self.count += 1
            answer = self.server.answer(self.count)
            if answer is None:
                self.transport.loseConnection()
                return
            self.transport.write(answer)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
def scripted():
    listening = []

    def start(answer) -> tuple[ScriptedServer, str]:
        server = ScriptedServer(answer)
        port = reactor.listenTCP(0, server, interface="127.0.0.1")
        listening.append(port)
        return server, f"http://127.0.0.1:{port.getHost().port}/records?v=1"

    yield start
    for port in listening:
        port.stopListening()


def destination(url: str, **extra) -> HttpDestination:
    values = {"destinations.store.kind": "http", "destinations.store.url": url}
    values.update({f"destinations.store.{k}": v for k, v in extra.items()})
    [configured] = DestinationKinds(KINDS).configure(load_config(environ={}, overrides=values).destinations)
    return HttpDestination(configured.config, configured.settings, reactor)


def delivery(n: int = 1) -> Delivery:
    return Delivery(row_id=n, message_id=n, destination="store", idempotency_key=f"key-{n}", ordering_key="p",
                    content_type="application/json", payload=b'{"n": %d}' % n, attempts=0, created_at=0.0)


async def deliver_all(dest: HttpDestination, count: int) -> list:
    try:
        return [await dest.deliver(delivery(n)) for n in range(1, count + 1)]
    finally:
        await dest.close()


@pytest_twisted.ensureDeferred
async def test_one_connection_carries_request_after_request(scripted):
    server, url = scripted(lambda n: OK)

    results = await deliver_all(destination(url), 3)

    assert [r.outcome for r in results] == [DELIVERED] * 3
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /records?v=1 HTTP/1.1\r\n")
    assert b"\r\nIdempotency-Key: key-1\r\n" in first and b"\r\nContent-Length: 8\r\n" in first
    assert first.endswith(b'\r\n\r\n{"n": 1}')


@pytest_twisted.ensureDeferred
async def test_a_connection_the_server_closes_is_not_reused(scripted):
    server, url = scripted(lambda n: b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

    results = await deliver_all(destination(url), 2)

    assert [r.outcome for r in results] == [DELIVERED] * 2
    assert server.connections == 2


@pytest_twisted.ensureDeferred
async def test_a_kept_connection_closed_as_it_is_reused_is_retried_once_on_a_new_one(scripted):
    server, url = scripted(lambda n: OK if n == 1 else None)

    results = await deliver_all(destination(url), 2)

    assert [r.outcome for r in results] == [DELIVERED] * 2
    assert server.connections == 2
    assert [r.split(b"Idempotency-Key: ")[1][:5] for r in server.requests] == [b"key-1", b"key-2", b"key-2"]


@pytest_twisted.ensureDeferred
async def test_a_fresh_connection_closed_without_an_answer_is_a_retry_not_a_resend(scripted):
    server, url = scripted(lambda n: None)

    [result] = await deliver_all(destination(url), 1)

    assert (result.outcome, result.label) == (RETRY, "connection")
    assert len(server.requests) == 1


@pytest_twisted.ensureDeferred
async def test_a_chunked_rejection_is_read_as_the_reason_with_identifiers_masked(scripted):
    server, url = scripted(lambda n: b"HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"5\r\nCCCD \r\n16\r\n079085000123 not known\r\n0\r\n\r\n")

    [result] = await deliver_all(destination(url), 1)

    assert result.reason == "HTTP 422: CCCD 0790*****123 not known"  # masked: it goes to logs and the CLI


@pytest_twisted.ensureDeferred
async def test_an_answer_that_is_not_http_is_a_retry(scripted):
    server, url = scripted(lambda n: b"220 smtp.example ESMTP\r\n\r\n")

    [result] = await deliver_all(destination(url), 1)

    assert (result.outcome, result.label) == (RETRY, "connection")
    assert "not HTTP" in result.reason


@pytest_twisted.ensureDeferred
async def test_a_token_with_a_line_break_is_never_sent(scripted, monkeypatch):
    server, url = scripted(lambda n: OK)
    monkeypatch.setenv("HSSK_TEST_TOKEN", "Bearer x\r\nX-Injected: 1")

    [result] = await deliver_all(destination(url, auth_header_env="HSSK_TEST_TOKEN"), 1)

    assert (result.outcome, result.label) == (RETRY, "error")
    assert "line break" in result.reason and "Bearer" not in result.reason
    assert server.requests == []


def client_for(url: str, clock=reactor) -> HttpClient:
    port = int(url.split(":")[2].split("/")[0])
    return HttpClient(TCP4ClientEndpoint(reactor, "127.0.0.1", port), clock, f"127.0.0.1:{port}", max_idle=4)


def post(client: HttpClient, n: int):
    """The request is on its way when this returns (a Deferred, not a coroutine)."""
    return client.post(b"/records", [(b"Idempotency-Key", b"key-%d" % n)], b"{}", timeout=5, body_limit=100)


@pytest_twisted.ensureDeferred
async def test_a_kept_connection_is_closed_after_it_idled_too_long(scripted):
    server, url = scripted(lambda n: OK)
    clock = Clock()
    client = client_for(url, clock)

    await post(client, 1)
    clock.advance(MAX_IDLE_SECONDS + 1)
    await post(client, 2)
    await client.close()

    assert (server.connections, len(server.requests)) == (2, 2)


@pytest_twisted.ensureDeferred
async def test_close_while_connecting_fails_the_request_and_sends_nothing(scripted):
    server, url = scripted(lambda n: OK)
    client = client_for(url)

    pending = post(client, 1)
    await client.close()

    with pytest.raises(ConnectionDropped):
        await pending
    await deferLater(reactor, 0.1, lambda: None)
    assert server.requests == []


@pytest_twisted.ensureDeferred
async def test_close_during_a_request_on_a_kept_connection_does_not_resend_it(scripted):
    server, url = scripted(lambda n: OK if n == 1 else b"")  # the second request is never answered
    client = client_for(url)
    await post(client, 1)

    pending = post(client, 2)
    await deferLater(reactor, 0.1, lambda: None)
    await client.close()

    with pytest.raises(ConnectionDropped):
        await pending
    await deferLater(reactor, 0.1, lambda: None)
    assert len(server.requests) == 2 and server.connections == 1
    with pytest.raises(ConnectionDropped):
        await post(client, 3)  # a closed client opens nothing new


# --- TLS with our client certificate ------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_tls_with_a_ca_bundle_and_a_client_certificate(tmp_path):
    ca = TestCA(tmp_path)
    server_cert, server_key, _ = ca.issue("localhost", server=True)
    client_cert, client_key, _ = ca.issue("gateway")
    server_pem = ssl.PrivateCertificate.loadPEM(Path(server_cert).read_bytes() + Path(server_key).read_bytes())
    options = ssl.CertificateOptions(privateKey=server_pem.privateKey.original, certificate=server_pem.original,
                                     trustRoot=ssl.Certificate.loadPEM(Path(ca.pem).read_bytes()))
    server = ScriptedServer(lambda n: OK)
    port = reactor.listenSSL(0, server, options, interface="127.0.0.1")
    url = f"https://localhost:{port.getHost().port}/records"
    try:
        trusted = await deliver_all(destination(url, ca_bundle=ca.pem, client_cert=client_cert,
                                                client_key=client_key), 2)
        without_client_cert = await deliver_all(destination(url, ca_bundle=ca.pem), 1)
        system_trust_only = await deliver_all(destination(url), 1)
    finally:
        await port.stopListening()

    assert [r.outcome for r in trusted] == [DELIVERED, DELIVERED]
    assert [(r.outcome, r.label) for r in without_client_cert + system_trust_only] == [(RETRY, "connection")] * 2
    assert "certificate verify failed" in system_trust_only[0].reason  # the cause, not just "dropped"
    assert len(server.requests) == 2 and server.connections >= 2
