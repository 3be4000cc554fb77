"""The plugins' own endpoints on the HTTP listener (:mod:`gateway.core.hookspecs`
``hssk_http_routes``): each request becomes an :class:`~gateway.core.http_routes.HttpCall`, and
the route's answer is written back. The transport adds only what every endpoint needs: the peer's
lockout after wrong credentials, the body bound, a form read off the reactor, a submission as a
configured client, and a fault of the plugin answered 500 and logged, never more."""
from __future__ import annotations

from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gateway.core.auth_limits import AuthFailureLimiter
from gateway.core.clients import BAD_CREDENTIALS, ClientRegistry, envelope_for
from gateway.core.documents import DocumentRequest
from gateway.core.http_routes import HttpAnswer, HttpCall, HttpRoute, HttpRoutes
from gateway.core.intake import Intake
from gateway.core.metrics import Metrics
from gateway.model.envelope import peer_of
from gateway.model.masking import mask_text
from gateway.transports.forms import parse_form
from gateway.transports.web import TRANSPORT, IntakeResource, header, json_reply, lockout, peer_host, set_status

log = Logger(namespace="hssk.http")


class PluginRouteResource(IntakeResource):
    """One plugin route, a leaf: every method it names goes to ``route.handle``."""

    def __init__(self, intake: Intake, clock: IReactorTime, metrics: Metrics, listener: str,
                 clients: ClientRegistry, limiter: AuthFailureLimiter, route: HttpRoute, plugin: str) -> None:
        super().__init__(intake, clock, metrics, listener, clients, limiter, source=None)
        self._route = route
        self._plugin = plugin

    def render(self, request: Request):
        method = request.method.decode("ascii", "replace")
        if method not in self._route.methods:
            request.setHeader("allow", ", ".join(self._route.methods))
            return json_reply(request, http.NOT_ALLOWED, {"status": "method_not_allowed",
                                                          "allowed": list(self._route.methods)})
        if getattr(request, "too_large", False):
            self._refuse_too_large()
            limit = request.channel.site.max_body_bytes
            return json_reply(request, http.REQUEST_ENTITY_TOO_LARGE,
                              {"status": "too_large", "text": f"body exceeds {limit} bytes (http.max_body_bytes)"})
        refusal = lockout(request, self._limiter, self._metrics)
        received_at = self._clock.seconds()
        body = request.content.read()
        content_type = header(request, "content-type")
        call = HttpCall(
            method=method, path=request.path.decode("ascii", "replace"),
            headers={name.decode("latin-1").lower(): values[-1].decode("latin-1")
                     for name, values in request.requestHeaders.getAllRawHeaders()},
            body=body, peer=peer_of(request.getClientAddress()), received_at=received_at,
            retry_after=None if refusal is None else refusal.retry_after,
            form=lambda max_fields: deferToThread(parse_form, body, content_type, max_fields),
            submit=lambda raw, *, source, client, request=None: self._submit(call, raw, source, client, request),
            credentials_failed=lambda: self._credentials_failed(request))
        d = maybeDeferred(self._route.handle, call)
        d.addCallbacks(self._write, self._failed, callbackArgs=(request, received_at), errbackArgs=(request,))
        return NOT_DONE_YET

    def _submit(self, call: HttpCall, raw: bytes, source: str, client: str, document: DocumentRequest | None):
        envelope = envelope_for(raw, TRANSPORT, call.peer, call.received_at, self._listener, self._clients.named(client))
        return self._intake.submit(envelope, source=source, request=document)

    def _credentials_failed(self, request: Request) -> None:
        self._metrics.connections_refused.labels(transport=TRANSPORT, reason=BAD_CREDENTIALS).inc()
        log.warn("refusing HTTP {path} from {peer}: wrong credentials (plugin {plugin})",
                 path=mask_text(request.path.decode("ascii", "replace")), peer=peer_of(request.getClientAddress()),
                 plugin=self._plugin)
        self._limiter.failed(peer_host(request))

    def _write(self, answer: HttpAnswer, request: Request, received_at: float) -> None:
        if request._disconnected:
            return
        set_status(request, answer.status)
        request.setHeader("content-type", answer.content_type)
        for name, value in answer.headers.items():
            request.setHeader(name, value)
        request.setHeader("content-length", str(len(answer.body)))
        request.write(answer.body)
        request.finish()
        self._observe_latency(received_at)

    def _failed(self, failure: Failure, request: Request) -> None:
        log.failure("plugin {plugin} failed to answer HTTP {path}", failure, plugin=self._plugin,
                    path=mask_text(request.path.decode("ascii", "replace")))
        if not request._disconnected:
            request.write(json_reply(request, http.INTERNAL_SERVER_ERROR, {
                "status": "error", "text": f"plugin {self._plugin!r} failed to answer; the gateway's log says why"}))
            request.finish()


def mount_plugin_routes(root: Resource, routes: HttpRoutes, intake: Intake, clock: IReactorTime, metrics: Metrics,
                        listener: str, clients: ClientRegistry, limiter: AuthFailureLimiter) -> None:
    """Put each route at its path under ``root``, making the resources on the way; a route takes
    the place of what was mounted at its path before (the built-in portal pair)."""
    for key, route in routes.routes.items():
        parent = root
        for segment in key[:-1]:
            child = parent.children.get(segment)
            if child is None:
                child = Resource()
                parent.putChild(segment, child)
            parent = child
        parent.putChild(key[-1], PluginRouteResource(intake, clock, metrics, listener, clients, limiter, route,
                                                     routes.owners[key]))
