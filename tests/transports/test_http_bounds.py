"""Bounds on the HTTP listener's connections (issue 23, item 4): twisted.web alone kept a silent
connection for 12 hours and a trickling request for ever, and took any number of connections
from one host. Real sockets; the timeouts run on a ``task.Clock``."""
from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater

from tests.support import metric_value, start_gateway, wait_until

REFUSED = "hssk_connections_refused_total"


class RawClient(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(None)


async def connect_http(gateway, source: str = "127.0.0.1") -> RawClient:
    host, port = gateway.address("http")
    return await connectProtocol(TCP4ClientEndpoint(reactor, host, port, bindAddress=(source, 0)), RawClient())


def open_connections(gateway) -> int:
    return gateway.site.connections


@pytest_twisted.ensureDeferred
async def test_a_silent_connection_is_closed_after_the_idle_timeout(tmp_path, plugin):
    clock = Clock()
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], clock=clock, **{"http.idle_timeout_seconds": 30})
    try:
        silent = await connect_http(gw)
        await wait_until(lambda: open_connections(gw) == 1, what="the connection seen")

        clock.advance(29)
        assert not silent.closed.called
        clock.advance(1)
        await silent.closed

        assert metric_value(gw, REFUSED, transport="http", reason="idle_timeout") == 1
        assert open_connections(gw) == 0
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_request_that_trickles_in_is_answered_408_at_the_request_timeout(tmp_path, plugin):
    clock = Clock()
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], clock=clock,
                             **{"http.idle_timeout_seconds": 1000, "http.request_timeout_seconds": 100})
    try:
        slow = await connect_http(gw)
        await wait_until(lambda: open_connections(gw) == 1, what="the connection seen")
        slow.transport.write(b"GET /healthz HTTP/1.1\r\n")
        for n in range(10):  # a header every 30 s of the clock: never idle, never done
            await deferLater(reactor, 0.02, lambda: None)  # let the bytes reach the gateway
            if slow.closed.called:
                break
            clock.advance(30)
            slow.transport.write(b"X-Slow-%d: 1\r\n" % n)
        await slow.closed

        assert slow.received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"http.request_timeout_seconds" in slow.received
        assert metric_value(gw, REFUSED, transport="http", reason="request_timeout") == 1
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_one_address_holds_at_most_max_connections_per_peer(tmp_path, plugin):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **{"http.max_connections_per_peer": 2})
    try:
        held = [await connect_http(gw, "127.0.0.5") for _ in range(2)]
        await wait_until(lambda: open_connections(gw) == 2, what="two connections held")
        third = await connect_http(gw, "127.0.0.5")
        await third.closed
        other = await connect_http(gw, "127.0.0.6")
        other.transport.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        await other.closed

        assert third.received.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Retry-After: 30\r\n" in third.received and b"http.max_connections_per_peer" in third.received
        assert other.received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert metric_value(gw, REFUSED, transport="http", reason="max_connections_per_peer") == 1
        for connection in held:
            connection.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_the_listener_holds_at_most_max_connections(tmp_path, plugin):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **{"http.max_connections": 3})
    try:
        held = [await connect_http(gw, f"127.0.0.{10 + n}") for n in range(3)]
        await wait_until(lambda: open_connections(gw) == 3, what="three connections held")
        fourth = await connect_http(gw, "127.0.0.20")
        await fourth.closed
        held[0].transport.loseConnection()
        await held[0].closed
        await wait_until(lambda: open_connections(gw) == 2, what="a place freed")
        fifth = await connect_http(gw, "127.0.0.21")
        fifth.transport.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        await fifth.closed

        assert fourth.received.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert fifth.received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert metric_value(gw, REFUSED, transport="http", reason="max_connections") == 1
        for connection in held[1:]:
            connection.transport.loseConnection()
    finally:
        await gw.stop()
