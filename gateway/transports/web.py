"""What the HTTP resources that take messages share: the transport label, knowing the client (and
refusing a peer locked out after too many wrong credentials, see :mod:`gateway.core.auth_limits`),
handing a request body to the intake, the Retry-After they send when nothing was stored, and
JSON answers."""
from __future__ import annotations

import json

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from gateway.core.audit import ANONYMOUS, HTTP
from gateway.core.auth_limits import AUTH_RATE_LIMITED, AuthFailureLimiter
from gateway.core.clients import BAD_CREDENTIALS, Client, ClientRegistry, Refusal, envelope_for, ip_of
from gateway.core.intake import Intake
from gateway.core.metrics import Metrics
from gateway.core.sources import Source
from gateway.model.envelope import Envelope, peer_of
from gateway.model.masking import mask_text
from gateway.transports.tls import peer_certificate

log = Logger(namespace="hssk.http")

TRANSPORT = "http"
#: The challenges a 401 offers (RFC 9110 §11.6.1): a bearer token, or Basic as client name and token.
CHALLENGES = [b'Bearer realm="hssk-gateway"', b'Basic realm="hssk-gateway", charset="UTF-8"']
#: Sent with every 503: the work was not stored, and a client's own retry logic takes over.
RETRY_AFTER_SECONDS = 30
#: RFC 6585; not among twisted.web.http's constants and reason phrases.
TOO_MANY_REQUESTS = 429
_REASON_PHRASES = {TOO_MANY_REQUESTS: b"Too Many Requests"}


class IntakeResource(Resource):
    """A leaf whose POST bodies go to the intake as inputs of ``source`` and are answered after the
    journal commit."""

    isLeaf = True

    def __init__(self, intake: Intake, clock: IReactorTime, metrics: Metrics, listener: str,
                 clients: ClientRegistry, limiter: AuthFailureLimiter, source: Source) -> None:
        super().__init__()
        self._intake = intake
        self._source = source
        self._clock = clock
        self._metrics = metrics
        self._listener = listener
        self._clients = clients
        self._limiter = limiter

    def _authenticate(self, request: Request) -> Client | Refusal | None:
        """The request's client, or the Refusal to answer with: a locked-out peer's, whose
        credentials are not looked at, or one for credentials that name no client (counted and
        logged, without the credentials; wrong ones count against the peer). An endpoint
        speaking plain HTTP answers it with :func:`refusal_status`."""
        locked = lockout(request, self._limiter, self._metrics)
        if locked is not None:
            return locked
        address = request.getClientAddress()
        found = self._clients.authenticate(getattr(address, "host", ""), header(request, "authorization") or None,
                                           peer_certificate(request.channel.transport))
        audit = self._intake.audit
        if isinstance(found, Refusal):
            self._metrics.connections_refused.labels(transport=TRANSPORT, reason=found.reason).inc()
            log.warn("refusing HTTP {path} from {peer}: {reason}", path=mask_text(request.path.decode("ascii", "replace")),
                     peer=peer_of(address), reason=found.text)
            if found.reason == BAD_CREDENTIALS:
                self._limiter.failed(peer_host(request))
            if audit is not None:
                audit.refused(HTTP, peer_of(address), f"{found.reason}: {found.text}")
        elif audit is not None:
            audit.authenticated(HTTP, found.name if found is not None else ANONYMOUS, peer_of(address),
                                peer_host(request))
        return found

    def _envelope(self, request: Request, raw: bytes, received_at: float, content_charset: str = "",
                  client: Client | None = None) -> Envelope:
        return envelope_for(raw, TRANSPORT, peer_of(request.getClientAddress()), received_at, self._listener, client,
                            content_charset=content_charset)

    def _refuse_too_large(self) -> None:
        self._metrics.connections_refused.labels(transport=TRANSPORT, reason="body_too_large").inc()

    def _observe_latency(self, received_at: float) -> None:
        self._metrics.ack_latency.labels(transport=TRANSPORT).observe(self._clock.seconds() - received_at)


def peer_host(request: Request) -> str:
    """The peer's IP as failures are counted by (an IPv4-mapped IPv6 address as the IPv4 it
    carries, so one host is one peer); the raw host for a peer that is no IP."""
    host = getattr(request.getClientAddress(), "host", "")
    ip = ip_of(host)
    return host if ip is None else str(ip)


def lockout(request: Request, limiter: AuthFailureLimiter, metrics: Metrics) -> Refusal | None:
    """The refusal for a peer still locked out after too many wrong credentials, counted as
    ``auth_rate_limited`` (and not logged: the lockout was, once); None when its credentials may
    be checked."""
    host = peer_host(request)
    wait = limiter.retry_after(host)
    if wait is None:
        return None
    metrics.connections_refused.labels(transport=TRANSPORT, reason=AUTH_RATE_LIMITED).inc()
    return Refusal(AUTH_RATE_LIMITED, limiter.refusal_text(host, wait), wait)


def refusal_status(request: Request, refusal: Refusal) -> int:
    """The HTTP status of a refused sender's answer, with its headers: 429 and Retry-After for a
    locked-out peer, otherwise 401 with the challenges a client may meet."""
    if refusal.retry_after is not None:
        request.setHeader("retry-after", str(refusal.retry_after))
        return TOO_MANY_REQUESTS
    challenge(request)
    return 401


def set_status(request: Request, code: int) -> None:
    """``code`` with its reason phrase, also for the codes twisted.web does not name."""
    request.setResponseCode(code, _REASON_PHRASES.get(code))


def header(request: Request, name: str) -> str:
    """A request header as text, ``""`` when absent. Header values are octets (RFC 9110 §5.5)
    and twisted.web's ``getHeader`` decodes them as UTF-8, raising on any other byte; read as
    ISO-8859-1 every byte has a character, so a stray byte is a wrong value, not a 500."""
    values = request.requestHeaders.getRawHeaders(name.encode("ascii"))
    return values[-1].decode("iso-8859-1") if values else ""


def json_reply(request: Request, code: int, body: dict) -> bytes:
    """``body`` as UTF-8 JSON (Vietnamese text kept readable) with ``code``."""
    set_status(request, code)
    request.setHeader("content-type", "application/json; charset=utf-8")
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def challenge(request: Request) -> None:
    """Mark the answer 401 with the challenges a client may meet."""
    request.setResponseCode(401)
    request.responseHeaders.setRawHeaders(b"www-authenticate", CHALLENGES)
