"""Bounds on the HTTP listener's connections (DESIGN §3.6): how many, how many per address, how
long one may idle, and how long one request may take to arrive.

twisted.web on its own keeps a connection for 12 hours of silence and never gives up on a request
that trickles in a byte at a time; 300 such connections from one host were held open for a
minute and more, each a socket and a buffer. ``BoundedSite`` counts connections per peer
and refuses past the limits with 503 and Retry-After; :class:`GuardedChannel` closes one that
idles (``http.idle_timeout_seconds``) or whose request has not arrived whole
``http.request_timeout_seconds`` after its first byte (408).
"""
from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.web.http import HTTPChannel
from twisted.web.server import Site
from zope.interface import implementer

from gateway.config import HttpConfig
from gateway.core.metrics import Metrics
from gateway.transports.web import RETRY_AFTER_SECONDS, TRANSPORT

REQUEST_TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
                          b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")


@implementer(IHalfCloseableProtocol)
class GuardedChannel(HTTPChannel):
    """One HTTP/1.1 connection, with a deadline for each request to arrive whole, and answers
    for a client that half-closes after its last request and reads on.

    twisted.web's own channel takes the end of input for the client gone: the message is
    journaled and its answer dropped. This one answers every whole request it has, then closes;
    a request cut short (no whole body) is closed without an answer, as before. It is HTTP/1.1
    only: the gateway offers no HTTP/2 (that needs ALPN on TLS and the ``h2`` package)."""

    _deadline = None
    _input_ended = False
    host = ""

    def readConnectionLost(self) -> None:
        self._input_ended = True
        if not self._handlingRequest:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Part of the interface; the gateway closes whole connections, never its write side alone."""

    def requestDone(self, request) -> None:
        super().requestDone(request)
        if self._input_ended and not self._handlingRequest:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not self._handlingRequest:
            self._deadline = self.callLater(self.site.request_timeout, self._request_too_slow)
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._cancel_deadline()
        super().allContentReceived()

    def timeoutConnection(self) -> None:
        self.site.refused("idle_timeout")
        super().timeoutConnection()

    def connectionLost(self, reason) -> None:
        self._cancel_deadline()
        self.site.closed(self)
        super().connectionLost(reason)

    def _request_too_slow(self) -> None:
        self._deadline = None
        self.site.refused("request_timeout")
        text = (f"the request did not arrive whole within {self.site.request_timeout:g} s "
                f"(http.request_timeout_seconds)\n").encode()
        self.transport.write(REQUEST_TIMEOUT_ANSWER % (len(text), text))
        self.loseConnection()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None


class _Busy(Protocol):
    """Answers a connection over a limit with 503 and closes it, without reading a byte."""

    def __init__(self, text: str) -> None:
        self.text = text.encode()

    def connectionMade(self) -> None:
        self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                             b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                             % (RETRY_AFTER_SECONDS, len(self.text), self.text))
        self.transport.loseConnection()


class BoundedSite(Site):
    """A twisted.web Site that holds at most ``http.max_connections`` connections, at most
    ``http.max_connections_per_peer`` of them from one address."""

    def __init__(self, resource, config: HttpConfig, metrics: Metrics, clock, **kwargs) -> None:
        super().__init__(resource, timeout=config.idle_timeout_seconds, reactor=clock, **kwargs)
        self.protocol = GuardedChannel
        self.request_timeout = config.request_timeout_seconds
        self._config = config
        self._metrics = metrics
        self._open = metrics.open_connections.labels(transport=TRANSPORT)
        self.connections = 0
        self.per_peer: dict[str, int] = {}

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "")
        if self.connections >= self._config.max_connections:
            self.refused("max_connections")
            return _Busy(f"the listener already has {self.connections} connections, its limit "
                         f"(http.max_connections); send again later\n")
        if self.per_peer.get(host, 0) >= self._config.max_connections_per_peer:
            self.refused("max_connections_per_peer")
            return _Busy(f"{host} already has {self.per_peer[host]} connections, the limit for one address "
                         f"(http.max_connections_per_peer)\n")
        channel = super().buildProtocol(addr)
        channel.host = host
        self._opened(channel)
        return channel

    def _opened(self, channel: GuardedChannel) -> None:
        self.connections += 1
        self.per_peer[channel.host] = self.per_peer.get(channel.host, 0) + 1
        self._open.inc()

    def closed(self, channel: GuardedChannel) -> None:
        self.connections -= 1
        left = self.per_peer.pop(channel.host) - 1
        if left:
            self.per_peer[channel.host] = left
        self._open.dec()

    def refused(self, reason: str) -> None:
        self._metrics.connections_refused.labels(transport=TRANSPORT, reason=reason).inc()
