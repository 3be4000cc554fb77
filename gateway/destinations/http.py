"""``http`` destination: one POST per outbox row to a record store (the provincial store, the
national center).

The ``Idempotency-Key`` header carries the row's stable key, so a store that honours it keeps a
record once however often a crash or a lost response makes us send it. Connections are
persistent (one pool per destination). How a response is classified decides what the
dispatcher does next:

=================================================  ===========================================
2xx                                                delivered
408, 429, 5xx, connect/response timeout, a         retry (``Retry-After`` honoured)
connection refused or dropped mid-response
any other status (4xx, and 3xx: we never follow    dead letter at once, the response body as
a redirect with patient data)                      the reason
=================================================  ===========================================
"""
from __future__ import annotations

import email.utils
import os
from pathlib import Path
from urllib.parse import urlsplit

from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, succeed
from twisted.internet.error import ConnectError, ConnectingCancelledError, TimeoutError as TwistedTimeoutError
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

from gateway.config import DestinationConfig
from gateway.destinations import DEAD, DELIVERED, RETRY, Delivery, DeliveryResult

RETRYABLE_STATUSES = frozenset({408, 429})
#: Enough of an error body to explain a dead letter; a store that answers megabytes is cut short.
MAX_REASON_BYTES = 2000


@implementer(IPolicyForHTTPS)
class _ConfiguredTLS:
    """TLS towards a store whose CA is not in the system bundle, optionally with our client
    certificate (mutual TLS is common between provincial systems)."""

    def __init__(self, ca_bundle: str, client_cert: str, client_key: str) -> None:
        self._trust = ssl.Certificate.loadPEM(Path(ca_bundle).read_bytes()) if ca_bundle else None
        self._client = None
        if client_cert:
            key = Path(client_key or client_cert).read_bytes()
            self._client = ssl.PrivateCertificate.loadPEM(key + b"\n" + Path(client_cert).read_bytes())

    def creatorForNetloc(self, hostname: bytes, port: int):
        return ssl.optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._trust,
                                       clientCertificate=self._client)


@implementer(IAgentEndpointFactory)
class _CachedEndpoints:
    """One endpoint per scheme/host/port, built once: the Agent's default factory builds a new
    endpoint (and IDNA-encodes the host) for every request, even one that reuses a pooled
    connection — about a tenth of the reactor's time when draining a queue."""

    def __init__(self, reactor, policy, connect_timeout: float) -> None:
        self._reactor = reactor
        self._policy = policy
        self._timeout = connect_timeout
        self._cache: dict[tuple[bytes, bytes, int], object] = {}

    def endpointForURI(self, uri):
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._cache.get(key)
        if endpoint is None:
            endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port, timeout=self._timeout)
            if uri.scheme == b"https":
                endpoint = wrapClientTLS(self._policy.creatorForNetloc(uri.host, uri.port), endpoint)
            self._cache[key] = endpoint
        return endpoint


@implementer(IBodyProducer)
class _BytesProducer:
    """The whole payload in one write: payloads are already in memory, and FileBodyProducer
    would spend two reactor turns per request feeding it in chunks."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer) -> Deferred:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: everything was written at once."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""


def parse_retry_after(value: bytes | None, now: float) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def classify(status: int, body: bytes, retry_after: float | None) -> DeliveryResult:
    label = f"{status // 100}xx"
    if 200 <= status < 300:
        return DeliveryResult(DELIVERED, label)
    reason = f"HTTP {status}: {body[:MAX_REASON_BYTES].decode('utf-8', 'replace').strip()}"
    if status in RETRYABLE_STATUSES or status >= 500:
        return DeliveryResult(RETRY, str(status) if status in RETRYABLE_STATUSES else label, reason, retry_after)
    return DeliveryResult(DEAD, label, reason)


class HttpDestination:
    def __init__(self, config: DestinationConfig, reactor) -> None:
        self.name = config.name
        self._config = config
        self._reactor = reactor
        self._url = config.url.encode("ascii")
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = config.max_in_flight
        self._pool.retryAutomatically = False  # a retry is the dispatcher's decision, with backoff
        policy = (_ConfiguredTLS(config.ca_bundle, config.client_cert, config.client_key)
                  if config.ca_bundle or config.client_cert else BrowserLikePolicyForHTTPS())
        self._agent = Agent.usingEndpointFactory(
            reactor, _CachedEndpoints(reactor, policy, config.connect_timeout_seconds), pool=self._pool)
        self._host = urlsplit(config.url).netloc

    def _headers(self, delivery: Delivery) -> Headers:
        headers = Headers({
            "content-type": [delivery.content_type],
            "idempotency-key": [delivery.idempotency_key],
            "user-agent": ["hssk-gateway"],
        })
        if self._config.auth_header_env:
            # Read on every request so a rotated token takes effect without a restart; never logged.
            token = os.environ.get(self._config.auth_header_env, "")
            if token:
                headers.setRawHeaders("authorization", [token])
        return headers

    def deliver(self, delivery: Delivery) -> Deferred:
        return self._post(delivery)

    @inlineCallbacks
    def _post(self, delivery: Delivery):
        request = self._agent.request(b"POST", self._url, self._headers(delivery),
                                      _BytesProducer(delivery.payload))
        request.addTimeout(self._config.response_timeout_seconds, self._reactor)
        try:
            response = yield request
            body = yield read_bounded(response, MAX_REASON_BYTES).addTimeout(
                self._config.response_timeout_seconds, self._reactor)
        except (CancelledError, TwistedTimeoutError):
            return DeliveryResult(RETRY, "timeout", f"no complete answer from {self._host} within "
                                                    f"{self._config.response_timeout_seconds:g} s")
        except (ConnectError, ConnectingCancelledError) as e:
            return DeliveryResult(RETRY, "connection", f"cannot connect to {self._host}: {_describe(e)}")
        except ResponseFailed as e:
            if any(r.check(CancelledError) for r in getattr(e, "reasons", ())):
                return DeliveryResult(RETRY, "timeout", f"no answer from {self._host} within "
                                                        f"{self._config.response_timeout_seconds:g} s")
            return DeliveryResult(RETRY, "connection", f"{self._host} dropped the connection: {_describe(e)}")
        except Exception as e:  # a destination answers with a result; the dispatcher must not see errbacks
            return DeliveryResult(RETRY, "error", f"{type(e).__name__}: {_describe(e)}")
        retry_after = parse_retry_after(response.headers.getRawHeaders(b"retry-after", [None])[0],
                                        self._reactor.seconds())
        return classify(response.code, body, retry_after)

    def close(self) -> Deferred:
        return self._pool.closeCachedConnections()


class _BoundedBody(Protocol):
    """Keeps the first ``limit`` bytes of a response body and discards the rest: we only ever
    need the body to explain a rejection, and a store must not be able to fill our memory."""

    def __init__(self, done: Deferred, limit: int) -> None:
        self._done = done
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._size < self._limit:
            self._parts.append(data[: self._limit - self._size])
            self._size += len(self._parts[-1])

    def connectionLost(self, reason) -> None:
        if self._done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._parts))
        else:
            self._done.errback(reason)


def read_bounded(response, limit: int) -> Deferred:
    """The body (its first ``limit`` bytes); cancelling stops reading and drops the connection."""
    done: Deferred = Deferred(lambda _: response._transport.stopProducing())
    response.deliverBody(_BoundedBody(done, limit))
    return done


def _describe(error: Exception) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return str(error) or type(error).__name__
