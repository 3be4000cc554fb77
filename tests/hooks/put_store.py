"""A destination kind the gateway does not have, added by a plugin: ``put_store`` PUTs each
record set to ``base_url`` + its idempotency key, as a FHIR server or a document store takes a
resource by id, so a repeat overwrites instead of adding.

It uses only :mod:`gateway.plugin` and Twisted: its table (``base_url``, ``timeout_seconds``)
is its own dataclass, and retries, backoff, per-person order and dead letters stay the
gateway's, decided from the :class:`DeliveryResult` it gives."""
from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers

from gateway.plugin import (DEAD, DELIVERED, RETRY, ConfigError, Delivery, DeliveryResult, DestinationConfig,
                            DestinationContext, DestinationKind, PluginDescription, hookimpl, setting)

hssk_contract = "1.0"


@dataclass(frozen=True)
class PutStoreSettings:
    base_url: str = setting()
    timeout_seconds: float = setting(30.0, rule="must be a positive number", test=lambda v: v > 0)


def check(config: DestinationConfig, settings: PutStoreSettings) -> None:
    if not settings.base_url.startswith(("http://", "https://")) or not settings.base_url.endswith("/"):
        raise ConfigError(config.key("base_url"), f"must be an http(s) URL ending in '/', got {settings.base_url!r}")


class PutStoreDestination:
    def __init__(self, config: DestinationConfig, settings: PutStoreSettings, context: DestinationContext) -> None:
        self.name = config.name
        self._settings = settings
        self._reactor = context.reactor
        self._pool = HTTPConnectionPool(context.reactor)
        self._agent = Agent(context.reactor, pool=self._pool)

    def deliver(self, delivery: Delivery) -> Deferred:
        url = (self._settings.base_url + delivery.idempotency_key).encode("ascii")
        headers = Headers({b"content-type": [delivery.content_type.encode("latin-1")]})
        d = self._agent.request(b"PUT", url, headers, FileBodyProducer(BytesIO(delivery.payload)))
        d.addCallback(self._answered)
        d.addTimeout(self._settings.timeout_seconds, self._reactor)
        d.addErrback(lambda failure: DeliveryResult(RETRY, "connection", failure.getErrorMessage()))
        return d

    def _answered(self, response) -> Deferred:
        body = _Body()
        response.deliverBody(body)
        return body.finished.addCallback(lambda data: self._classify(response.code, data))

    @staticmethod
    def _classify(code: int, body: bytes) -> DeliveryResult:
        if 200 <= code < 300:
            return DeliveryResult(DELIVERED, "2xx")
        if code >= 500:
            return DeliveryResult(RETRY, "5xx", body.decode("utf-8", "replace"))
        return DeliveryResult(DEAD, "4xx", body.decode("utf-8", "replace"))

    def close(self) -> Deferred:
        return self._pool.closeCachedConnections()


class _Body(Protocol):
    """Collects an answer's body (a store's reason for a dead letter); ``finished`` fires with it."""

    def __init__(self) -> None:
        self.finished: Deferred = Deferred()
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason=None) -> None:
        self.finished.callback(self.data)


@hookimpl
def hssk_describe() -> PluginDescription:
    return PluginDescription("put_store", "destination kind put_store")


@hookimpl
def hssk_destination_kinds() -> list[DestinationKind]:
    return [DestinationKind("put_store", PutStoreSettings, PutStoreDestination, check)]
