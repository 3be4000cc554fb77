"""HTTP listener: HL7 over HTTP, health, readiness and Prometheus metrics.

Every registered source with a route is mounted at ``POST /<route>`` (see
:mod:`gateway.core.sources`): an HL7 source's (``/hl7``) here, any other's answered in JSON as
``/xml130`` is (:mod:`gateway.transports.xml_http`).

``POST /hl7`` answers 200 with the ACK as body for AA, AE and AR alike (HL7-over-HTTP puts the
decision in the ACK, not the status); HTTP status codes are kept for what HTTP itself is about:
415 for a body that is not HL7 v2, 413 for one over ``http.max_body_bytes``, and 503 with
``Retry-After`` (the AR still in the body) when the message was not stored because the gateway
is at a bound — too many in flight, outbox too deep, disk too full — 401 for a sender that is
not a known client (see :mod:`gateway.core.clients`), and 429 with ``Retry-After`` for a peer
locked out after too many wrong credentials (see :mod:`gateway.core.auth_limits`).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.http import combinedLogFormatter, parse_qs
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gateway.config import HttpConfig
from gateway.core.ack import encode_reply
from gateway.core.auth_limits import AuthFailureLimiter
from gateway.core.clients import ClientRegistry, Refusal
from gateway.core.http_routes import HttpRoutes
from gateway.core.intake import Intake
from gateway.core.metrics import Metrics
from gateway.core.sources import XML_130
from gateway.core.store import JournalWriter
from gateway.formats.charsets import mime_name
from gateway.model.masking import mask_text
from gateway.model.outcome import Outcome
from gateway.transports.http_connections import BoundedSite
from gateway.transports.web import RETRY_AFTER_SECONDS, IntakeResource, header, refusal_status, set_status
from gateway.transports.plugin_routes import mount_plugin_routes
from gateway.transports.xml_http import JsonSourceResource, mount_bhxh_portal

#: How long a failed journal commit keeps ``/readyz`` unready when nothing has committed since.
#: The probe's own one-row write can succeed where a message's larger one fails (a WAL that may
#: reuse its space, but not grow), so a failure counts until a message commits or this passes.
COMMIT_FAILURE_SECONDS = 60.0

#: Paths whose requests the access log leaves out: Prometheus scrapes them every few seconds.
UNLOGGED_PATHS = frozenset({b"/metrics"})

access_log = Logger(namespace="hssk.http.access")


class BoundedRequest(Request):
    """Stops buffering a body once it is larger than the site's limit, so a 1 GB POST costs
    nothing; the resource then answers 413. Never parses a form body: ``request.args`` holds the
    query string only, and the resources that take a form read it off the reactor (see
    :mod:`gateway.transports.forms`)."""

    too_large = False

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """twisted.web's own, without its form parsing: that parsed any POST's form body on the
        reactor, for every path, before a resource could refuse it."""
        self.content.seek(0, 0)
        self.method, self.uri, self.clientproto = command, path, version
        self.path, _, query = path.partition(b"?")
        self.args = parse_qs(query, 1) if query else {}
        self.process()

    def gotLength(self, length: int | None) -> None:
        limit = self.channel.site.max_body_bytes
        if length is not None and length > limit:
            self.too_large = True
        super().gotLength(None if self.too_large else length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._received = getattr(self, "_received", 0) + len(data)
        if self._received > self.channel.site.max_body_bytes:
            self.too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)


class Hl7Resource(IntakeResource):
    """``POST /hl7`` (or an HL7 source's own route): the message as the body, the ACK as the answer."""

    def render_POST(self, request: BoundedRequest):
        client = self._authenticate(request)
        if isinstance(client, Refusal):
            return _text(request, refusal_status(request, client), client.text + "\n")
        if request.too_large:
            self._refuse_too_large()
            return _text(request, http.REQUEST_ENTITY_TOO_LARGE,
                         f"body exceeds {request.channel.site.max_body_bytes} bytes (http.max_body_bytes)\n")
        content_type = header(request, "content-type").lower()
        media_type, _, params = content_type.partition(";")
        if media_type.strip() not in self._source.media_types:
            return _text(request, http.UNSUPPORTED_MEDIA_TYPE,
                         f"content type {media_type.strip() or '(none)'!r} is not {self._source.title}; send one of "
                         f"{', '.join(self._source.media_types)}\n")
        received_at = self._clock.seconds()
        d = self._intake.submit(self._envelope(request, request.content.read(), received_at, _charset_param(params),
                                               client), source=self._source.name)
        d.addCallback(self._respond, request, received_at)
        return NOT_DONE_YET

    def _respond(self, outcome: Outcome, request: Request, received_at: float) -> None:
        if request._disconnected:
            return
        body = b"".join(encode_reply(text, outcome.charset) for text in outcome.replies)
        if outcome.committed:
            request.setResponseCode(http.OK)
        else:
            # Not stored (a bound, backpressure, a failed commit): the AR in the body says why, and
            # 503 lets an HTTP client's own retry logic take over.
            request.setResponseCode(http.SERVICE_UNAVAILABLE)
            request.setHeader("retry-after", str(RETRY_AFTER_SECONDS))
        request.setHeader("content-type", f"application/hl7-v2; charset={mime_name(outcome.charset)}")
        request.write(body)
        request.finish()
        self._observe_latency(received_at)


class HealthResource(Resource):
    """``/healthz``: the process answers, nothing more — for a liveness probe."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return _json(request, http.OK, {"status": "alive"})


class ReadyResource(Resource):
    """``/readyz``: the journal takes a write lock, free disk is above the floor, plugins are loaded,
    the pipeline can decide (a child process is ready, with ``pipeline.isolation = "processes"``),
    and no destination's oldest undelivered row is older than its alert threshold."""

    isLeaf = True

    def __init__(self, writer: JournalWriter, data_dir: str, min_free_disk_bytes: int,
                 plugin_names: Callable[[], list[str]], probe_timeout: float, clock: IReactorTime,
                 stale_destinations: Callable[[], dict[str, float]], pipeline_status: Callable[[], dict]) -> None:
        super().__init__()
        self._stale_destinations = stale_destinations
        self._pipeline_status = pipeline_status
        self._writer = writer
        self._data_dir = data_dir
        self._floor = min_free_disk_bytes
        self._plugin_names = plugin_names
        self._probe_timeout = probe_timeout
        self._clock = clock

    def render_GET(self, request: Request):
        self._check(request)
        return NOT_DONE_YET

    @inlineCallbacks
    def _check(self, request: Request):
        checks = {}
        free = shutil.disk_usage(self._data_dir).free
        checks["disk"] = {"ok": free >= self._floor, "free_bytes": free, "floor_bytes": self._floor}
        plugins = self._plugin_names()
        checks["plugins"] = {"ok": bool(plugins), "loaded": plugins}
        checks["pipeline"] = self._pipeline_status()
        stale = self._stale_destinations()
        checks["outbox"] = {"ok": not stale, "stale_destinations": stale}
        writable = False
        if self._writer.alive:
            probe: Deferred = self._writer.probe()
            probe.addTimeout(self._probe_timeout, self._clock, onTimeoutCancel=lambda *_: False)
            probe.addErrback(lambda _: False)
            writable = yield probe
        checks["store"] = {"ok": bool(writable)}
        failure = self._writer.last_failure
        if failure is not None and self._clock.seconds() - failure[0] < COMMIT_FAILURE_SECONDS:
            checks["store"] = {"ok": False, "last_commit_error": failure[1],
                               "failed_seconds_ago": round(self._clock.seconds() - failure[0], 1)}
        ready = all(c["ok"] for c in checks.values())
        if not request._disconnected:
            request.write(_json(request, http.OK if ready else http.SERVICE_UNAVAILABLE,
                                {"status": "ready" if ready else "not ready", "checks": checks}))
            request.finish()


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        request.setHeader("content-type", CONTENT_TYPE_LATEST)
        return self._metrics.exposition()


def build_site(intake: Intake, writer: JournalWriter, metrics: Metrics, clock: IReactorTime, *, data_dir: str,
               http_config: HttpConfig, min_free_disk_bytes: int, plugin_names: Callable[[], list[str]],
               probe_timeout: float, stale_destinations: Callable[[], dict[str, float]] = dict,
               listener: str = "http", admin: Resource | None = None, clients: ClientRegistry | None = None,
               limiter: AuthFailureLimiter | None = None, routes: HttpRoutes | None = None) -> GatewaySite:
    """``admin``, when given, is mounted at ``/admin/`` (the API, :mod:`gateway.transports.admin`, and its
    console, :mod:`gateway.transports.console`); each of the
    intake's sources with a route at ``/<route>``, and the BHXH portal's pair at ``/api/qd130/`` for
    the XML 130 source (see :mod:`gateway.transports.xml_http`), then the plugins' ``routes`` (see
    :mod:`gateway.transports.plugin_routes`; one at a path of the pair takes its place). ``clients``
    are who the intake endpoints recognise, ``limiter`` counts their wrong credentials per peer
    (share it with ``admin``, so a peer is one peer to all of them); health and metrics answer
    anyone."""
    clients = clients or ClientRegistry(())
    limiter = limiter or AuthFailureLimiter(clock)
    root = Resource()
    for source in intake.sources:
        if source.route is not None:
            resource = Hl7Resource if source.hl7 else JsonSourceResource
            root.putChild(source.route, resource(intake, clock, metrics, listener, clients, limiter, source))
    root.putChild(b"healthz", HealthResource())
    root.putChild(b"readyz", ReadyResource(writer, data_dir, min_free_disk_bytes, plugin_names, probe_timeout, clock,
                                                stale_destinations, intake.pipeline_status))
    root.putChild(b"metrics", MetricsResource(metrics))
    if XML_130 in intake.sources:
        mount_bhxh_portal(root, intake, clock, metrics, listener, clients, limiter, intake.sources[XML_130])
    if routes is not None:
        mount_plugin_routes(root, routes, intake, clock, metrics, listener, clients, limiter)
    if admin is not None:
        root.putChild(b"admin", admin)
    site = GatewaySite(root, http_config, metrics, clock, requestFactory=BoundedRequest,
                       logFormatter=masked_access_line)
    site.max_body_bytes = http_config.max_body_bytes
    site.displayTracebacks = False
    return site


class GatewaySite(BoundedSite):
    """The access log, as ``hssk.http.access`` events of the gateway's own log (text or JSON like
    every other line) rather than twisted.web's legacy log file, and without Prometheus scrapes,
    which would be most of its lines and say nothing an operator looks for."""

    noisy = False

    def log(self, request: Request) -> None:
        if request.path not in UNLOGGED_PATHS:
            access_log.info("{line}", line=self._logFormatter(self._logDateTime, request))


def masked_access_line(timestamp: str, request: Request) -> str:
    """The access log line twisted.web writes for every request, identifiers masked: it quotes the
    URI, User-Agent and Referer as the client sent them, and a client may put a CCCD in any."""
    return mask_text(combinedLogFormatter(timestamp, request))


def _text(request: Request, code: int, body: str) -> bytes:
    set_status(request, code)
    request.setHeader("content-type", "text/plain; charset=utf-8")
    return body.encode("utf-8")


def _json(request: Request, code: int, body: dict) -> bytes:
    request.setResponseCode(code)
    request.setHeader("content-type", "application/json")
    return json.dumps(body).encode("utf-8")


def _charset_param(params: str) -> str:
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip() == "charset":
            return value.strip().strip('"')
    return ""

