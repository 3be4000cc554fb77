"""What the HTTP resources that take messages share: the transport label, knowing the client,
handing a request body to the intake, the Retry-After they send when nothing was stored, and
JSON answers."""
from __future__ import annotations

import json

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from gateway.core.clients import Client, ClientRegistry, Refusal, envelope_for
from gateway.core.envelope import Envelope, peer_of
from gateway.core.intake import Intake
from gateway.core.masking import mask_text
from gateway.core.metrics import Metrics

log = Logger(namespace="hssk.http")

TRANSPORT = "http"
#: The challenges a 401 offers (RFC 9110 §11.6.1): a bearer token, or Basic as client name and token.
CHALLENGES = [b'Bearer realm="hssk-gateway"', b'Basic realm="hssk-gateway", charset="UTF-8"']
#: Sent with every 503: the work was not stored, and a client's own retry logic takes over.
RETRY_AFTER_SECONDS = 30


class IntakeResource(Resource):
    """A leaf whose POST bodies go to the intake and are answered after the journal commit."""

    isLeaf = True

    def __init__(self, intake: Intake, clock: IReactorTime, metrics: Metrics, listener: str,
                 clients: ClientRegistry | None = None) -> None:
        super().__init__()
        self._intake = intake
        self._clock = clock
        self._metrics = metrics
        self._listener = listener
        self._clients = clients or ClientRegistry(())

    def _authenticate(self, request: Request) -> Client | Refusal | None:
        """The request's client, or the Refusal to answer with (counted and logged, without the
        credentials); an endpoint speaking plain HTTP answers it 401 with :func:`challenge`."""
        address = request.getClientAddress()
        found = self._clients.authenticate(getattr(address, "host", ""), request.getHeader("authorization"))
        if isinstance(found, Refusal):
            self._metrics.connections_refused.labels(transport=TRANSPORT, reason=found.reason).inc()
            log.warn("refusing HTTP {path} from {peer}: {reason}", path=mask_text(request.path.decode("ascii", "replace")),
                     peer=peer_of(address), reason=found.text)
        return found

    def _envelope(self, request: Request, raw: bytes, received_at: float, forced_charset: str = "",
                  client: Client | None = None) -> Envelope:
        return envelope_for(raw, TRANSPORT, peer_of(request.getClientAddress()), received_at, self._listener, client,
                            forced_charset)

    def _refuse_too_large(self) -> None:
        self._metrics.connections_refused.labels(transport=TRANSPORT, reason="body_too_large").inc()

    def _observe_latency(self, received_at: float) -> None:
        self._metrics.ack_latency.labels(transport=TRANSPORT).observe(self._clock.seconds() - received_at)


def json_reply(request: Request, code: int, body: dict) -> bytes:
    """``body`` as UTF-8 JSON (Vietnamese text kept readable) with ``code``."""
    request.setResponseCode(code)
    request.setHeader("content-type", "application/json; charset=utf-8")
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def challenge(request: Request) -> None:
    """Mark the answer 401 with the challenges a client may meet."""
    request.setResponseCode(401)
    request.responseHeaders.setRawHeaders(b"www-authenticate", CHALLENGES)
