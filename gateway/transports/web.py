"""What the HTTP resources that take messages share: the transport label, handing a request
body to the intake, the Retry-After they send when nothing was stored, and JSON answers."""
from __future__ import annotations

import json

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

from gateway.core.envelope import Envelope, peer_of
from gateway.core.intake import Intake
from gateway.core.metrics import Metrics

TRANSPORT = "http"
#: Sent with every 503: the work was not stored, and a client's own retry logic takes over.
RETRY_AFTER_SECONDS = 30


class IntakeResource(Resource):
    """A leaf whose POST bodies go to the intake and are answered after the journal commit."""

    isLeaf = True

    def __init__(self, intake: Intake, clock: IReactorTime, metrics: Metrics, listener: str) -> None:
        super().__init__()
        self._intake = intake
        self._clock = clock
        self._metrics = metrics
        self._listener = listener

    def _envelope(self, request: Request, raw: bytes, received_at: float, forced_charset: str = "") -> Envelope:
        return Envelope(raw, TRANSPORT, peer_of(request.getClientAddress()), received_at, self._listener, None,
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
