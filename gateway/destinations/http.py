"""``http`` destination: one POST per outbox row to a record store (the provincial store, the
national center).

The ``Idempotency-Key`` header carries the row's stable key, so a store that honours it keeps a
record once however often a crash or a lost response makes us send it. Connections are
persistent (one pool per destination, see :mod:`gateway.destinations.http_client`). How a response is classified decides what the
dispatcher does next:

=================================================  ===========================================
2xx                                                delivered
408, 429, 5xx, connect/response timeout, a         retry (``Retry-After`` honoured)
connection refused or dropped mid-response
any other status (4xx, and 3xx: we never follow    dead letter at once, the response body as
a redirect with patient data)                      the reason (identifiers masked)
=================================================  ===========================================
"""
from __future__ import annotations

import email.utils
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from twisted.internet import ssl
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectingCancelledError, TimeoutError as TwistedTimeoutError
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from gateway.config import ConfigError, DestinationConfig, setting
from gateway.core.destination import DEAD, DELIVERED, RETRY, Delivery, DeliveryResult
from gateway.destinations.http_client import (ConnectionDropped, HttpClient, HttpResponse, MalformedResponse,
                                              ResponseTimeout)
from gateway.model.masking import mask_text

RETRYABLE_STATUSES = frozenset({408, 429})
#: Enough of an error body to explain a dead letter; a store that answers megabytes is cut short.
MAX_REASON_BYTES = 2000


@dataclass(frozen=True)
class HttpSettings:
    """The keys of an ``http`` destination's table (a ``batch`` destination's http sink has them too)."""

    url: str = ""
    #: The environment variable holding the Authorization header's value (never in the file, never logged).
    auth_header_env: str = ""
    ca_bundle: str = ""
    client_cert: str = ""
    client_key: str = ""
    connect_timeout_seconds: float = setting(10.0, rule="must be a positive number", test=lambda v: v > 0)
    response_timeout_seconds: float = setting(30.0, rule="must be a positive number", test=lambda v: v > 0)


def check_url(url: str, key: str) -> None:
    """A record store's URL: http or https, a host, a valid port, no credentials (they would reach
    logs and the Host header), an ASCII path; a ConfigError naming ``key`` otherwise."""
    try:
        parts = urlsplit(url)
        credentials = parts.username is not None or parts.password is not None
    except ValueError as e:
        raise ConfigError(key, f"is not a valid URL ({e})") from None
    if credentials:
        raise ConfigError(key, "must not carry credentials (they would reach logs and the Host header); "
                               "put the Authorization value in the environment variable named by auth_header_env")
    try:
        port = parts.port
    except ValueError as e:
        raise ConfigError(key, f"is not a valid URL ({e}): {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"must be an http:// or https:// URL with a host, got {url!r}")
    if port == 0 or not (parts.path + parts.query).isascii():
        raise ConfigError(key, f"needs a non-zero port and an ASCII path (percent-encode the rest), got {url!r}")


def check_http(destination: DestinationConfig, settings: HttpSettings) -> None:
    check_url(settings.url, destination.key("url"))


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


def parse_retry_after(value: bytes | None, now: float) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if text.isascii() and text.isdigit():
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
    # Masked: stores quote the identifiers they reject, and the reason goes to logs and the CLI.
    reason = f"HTTP {status}: {mask_text(body[:MAX_REASON_BYTES].decode('utf-8', 'replace').strip())}"
    if status in RETRYABLE_STATUSES or status >= 500:
        return DeliveryResult(RETRY, str(status) if status in RETRYABLE_STATUSES else label, reason, retry_after)
    return DeliveryResult(DEAD, label, reason)


class HttpDestination:
    def __init__(self, destination: DestinationConfig, config: HttpSettings, reactor) -> None:
        self.name = destination.name
        self._config = config
        self._reactor = reactor
        url = urlsplit(config.url)
        self._target = ((url.path or "/") + (f"?{url.query}" if url.query else "")).encode("ascii")
        self._host = url.netloc
        port = url.port or (443 if url.scheme == "https" else 80)
        endpoint = HostnameEndpoint(reactor, url.hostname, port, timeout=config.connect_timeout_seconds)
        if url.scheme == "https":
            policy = (_ConfiguredTLS(config.ca_bundle, config.client_cert, config.client_key)
                      if config.ca_bundle or config.client_cert else BrowserLikePolicyForHTTPS())
            endpoint = wrapClientTLS(policy.creatorForNetloc(url.hostname.encode("idna"), port), endpoint)
        self._client = HttpClient(endpoint, reactor, url.netloc, max_idle=destination.max_in_flight)

    def _headers(self, delivery: Delivery) -> list[tuple[bytes, bytes]]:
        headers = [(b"Content-Type", delivery.content_type.encode("latin-1")),
                   (b"Idempotency-Key", delivery.idempotency_key.encode("ascii")),
                   (b"User-Agent", b"hssk-gateway")]
        if self._config.auth_header_env:
            # Read on every request so a rotated token takes effect without a restart; never logged.
            token = os.environ.get(self._config.auth_header_env, "")
            if token:
                headers.append((b"Authorization", token.encode("latin-1")))
        return headers

    def deliver(self, delivery: Delivery) -> Deferred:
        try:
            headers = self._headers(delivery)
        except UnicodeEncodeError as e:
            return succeed(DeliveryResult(RETRY, "error", f"a request header cannot be sent: {e}"))
        d = self._client.post(self._target, headers, delivery.payload,
                              timeout=self._config.response_timeout_seconds, body_limit=MAX_REASON_BYTES)
        return d.addCallbacks(self._classify, self._failed)

    def _classify(self, response: HttpResponse) -> DeliveryResult:
        retry_after = parse_retry_after(response.headers.get(b"retry-after"), self._reactor.seconds())
        return classify(response.code, response.body, retry_after)

    def _failed(self, failure: Failure) -> DeliveryResult:
        """A destination answers with a result; the dispatcher must not see errbacks."""
        error = failure.value
        if failure.check(ResponseTimeout):
            return DeliveryResult(RETRY, "timeout", f"no complete answer from {self._host} within "
                                                    f"{self._config.response_timeout_seconds:g} s")
        if failure.check(TwistedTimeoutError):
            return DeliveryResult(RETRY, "timeout", f"cannot connect to {self._host} within "
                                                    f"{self._config.connect_timeout_seconds:g} s")
        if failure.check(ConnectError, ConnectingCancelledError):
            return DeliveryResult(RETRY, "connection", f"cannot connect to {self._host}: {_describe(error)}")
        if failure.check(ConnectionDropped):
            return DeliveryResult(RETRY, "connection", f"{self._host} dropped the connection: {error}")
        if failure.check(MalformedResponse):
            return DeliveryResult(RETRY, "connection", f"{self._host} answered something that is not HTTP: {error}")
        return DeliveryResult(RETRY, "error", f"{type(error).__name__}: {_describe(error)}")

    def close(self) -> Deferred:
        return self._client.close()


def _describe(error: Exception) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return str(error) or type(error).__name__
