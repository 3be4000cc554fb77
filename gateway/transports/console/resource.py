"""``/admin/ui/``: the operator console, HTML pages over the admin API.

Every read and every action of a page is the admin API's own operation, run through
:meth:`AdminResource.perform` on the console's request, and a sign-in is the admin API's own check
(:meth:`AdminResource.refusal`): with ``auth.admin_token_env`` set, the login form takes that
token (a wrong one counts toward the same lockout); without it, the console, like the API, answers
loopback peers only and the login form is one button. A signed-in browser carries a session cookie
(see :mod:`.sessions`); every POST form carries the session's CSRF token, and the login form a
token of its own (a cookie and a field that must match), so another site can neither act nor sign
a browser in. Pages answer 401 with the login form to a browser without a session.
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gateway.model.envelope import peer_of
from gateway.model.masking import mask_text
from gateway.transports.admin import AdminError, AdminResource, query_of
from gateway.transports.console import dead_letters, destinations, login, messages, reviews
from gateway.transports.console.language import CATALOGUES, COOKIE as LANGUAGE_COOKIE, chosen
from gateway.transports.console.layout import document
from gateway.transports.console.page import BASE, Page, Redirect, Shown
from gateway.transports.console.sessions import Session, Sessions
from gateway.transports.forms import FormError, parse_form
from gateway.transports.web import header

log = Logger(namespace="hssk.console")

SESSION_COOKIE = b"hssk_console"
#: The console's forms have a handful of fields; a body with more is no form of ours.
MAX_FORM_FIELDS = 20
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
#: A page to come back to after an action: a console path, never another site.
_BACK = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_/-]*")

Handler = Callable[..., Awaitable[Shown | Redirect]]
#: (path pattern, handler); ``{name}`` matches one segment. GET handlers take (page, query, **segments),
#: POST handlers (page, form, **segments).
_GET: tuple[tuple[str, Handler], ...] = (
    ("", lambda page, query: destinations.show(page)),
    ("destinations", lambda page, query: destinations.show(page)),
    ("messages", messages.search),
    ("messages/{message_id}", lambda page, query, message_id: messages.show(page, message_id)),
    ("dead-letters", lambda page, query: dead_letters.show(page)),
    ("reviews", lambda page, query: reviews.show(page)),
)
_POST: tuple[tuple[str, Handler], ...] = (
    ("destinations/{dest}/pause", destinations.pause),
    ("destinations/{dest}/resume", destinations.resume),
    ("messages/{message_id}/body", messages.show_body),
    ("messages/{message_id}/replay", messages.replay),
    ("outbox/rows/{row_id}/retry", dead_letters.retry),
    ("replay", dead_letters.replay_errors),
    ("reviews/{review_id}/accept", reviews.accept),
    ("reviews/{review_id}/reject", reviews.reject),
)


def _compile(routes: tuple[tuple[str, Handler], ...]) -> tuple[tuple[re.Pattern, Handler], ...]:
    def pattern(path: str) -> re.Pattern:
        return re.compile("/".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p)
                                   for p in path.split("/")))
    return tuple((pattern(path), handler) for path, handler in routes)


_ROUTES = {"GET": _compile(_GET), "POST": _compile(_POST)}


class ConsoleResource(Resource):
    isLeaf = True

    def __init__(self, admin: AdminResource, clock: IReactorTime, reactor) -> None:
        super().__init__()
        self._admin = admin
        self._reactor = reactor
        self.sessions = Sessions(clock)

    def render(self, request: Request):
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        d = Deferred.fromCoroutine(self._answer(request))
        d.addErrback(self._crashed, request)
        return NOT_DONE_YET

    async def _answer(self, request: Request) -> None:
        path = "/".join(s.decode("utf-8", "replace") for s in request.postpath).strip("/")
        method = request.method.decode("ascii", "replace")
        language = chosen(request)
        session = self.sessions.find((request.getCookie(SESSION_COOKIE) or b"").decode("ascii", "replace"))
        page = Page(request, self._admin, session, language, CATALOGUES[language])
        if not self._admin.token_required:
            refused = self._admin.refusal(request, None)
            if refused is not None:  # not a loopback peer, and there is no token to sign in with
                return self._send(page, Shown(page.t("refused"), login.problem(refused.message), refused.code),
                                  path)
        if path == "language" and method == "GET":
            return self._switch_language(request, query_of(request))
        if path == "login":
            return await self._login(page, method, path)
        if session is None:
            return self._send(page, login.form(page, self._login_token(request), code=http.UNAUTHORIZED), "login")
        return await self._signed_in(page, session, method, path)

    async def _signed_in(self, page: Page, session: Session, method: str, path: str) -> None:
        """A signed-in browser's request: a page (GET) or an action (POST, with the CSRF token)."""
        request = page.request
        routes = _ROUTES.get(method)
        if routes is None:
            request.setHeader("allow", "GET, POST")
            return self._send(page, Shown(page.t("error"), login.problem(method), http.NOT_ALLOWED), path)
        form: dict[str, str] = {}
        if method == "POST":
            parsed = await self._form(page, path)
            if parsed is None:
                return None
            form = parsed
            if not session.csrf_matches(form.get("csrf", "")):
                log.warn("console POST {path} from {peer} without the session's CSRF token: refused", path=path,
                         peer=peer_of(request.getClientAddress()))
                return self._send(page, Shown(page.t("refused"), login.problem(page.t("csrf_refused")),
                                              http.FORBIDDEN), path)
            if path == "logout":
                self.sessions.end(session.id)
                request.addCookie(SESSION_COOKIE, b"", path=BASE, max_age="0", httpOnly=True, sameSite="strict")
                page.session = None
                return self._send(page, Redirect("login"), path)
        for pattern, handler in routes:
            match = pattern.fullmatch(path)
            if match is not None:
                break
        else:
            return self._send(page, Shown(page.t("not_found"), login.problem(page.t("not_found")), http.NOT_FOUND),
                              path)
        if method == "GET":
            try:
                result = await handler(page, _single(query_of(request)), **match.groupdict())
            except AdminError as e:
                result = Shown(page.t("error"), login.problem(e.message), e.code)
            return self._send(page, result, path)
        back = form.get("back", "") if _BACK.fullmatch(form.get("back", "")) else "destinations"
        try:
            result = await handler(page, form, **match.groupdict())
        except AdminError as e:
            log.info("console {action} by {actor} refused: {reason}", action=path, actor=session.actor,
                     reason=mask_text(e.message))
            page.flash("error", e.message)
            result = Redirect(back)
        else:
            log.info("console {action} by {actor}", action=path, actor=session.actor)
        return self._send(page, result, path)

    async def _form(self, page: Page, path: str) -> dict[str, str] | None:
        """The POST's form fields, parsed on a thread; None when an error page was sent instead."""
        request = page.request
        if getattr(request, "too_large", False):
            self._send(page, Shown(page.t("error"), login.problem(page.t("too_large")),
                                   http.REQUEST_ENTITY_TOO_LARGE), path)
            return None
        body = request.content.read()
        try:
            return await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), parse_form, body,
                                           header(request, "content-type"), MAX_FORM_FIELDS)
        except FormError as e:
            self._send(page, Shown(page.t("error"), login.problem(str(e)), http.BAD_REQUEST), path)
            return None

    async def _login(self, page: Page, method: str, path: str) -> None:
        request = page.request
        if method == "GET":
            return self._send(page, login.form(page, self._login_token(request)), path)
        if method != "POST":
            request.setHeader("allow", "GET, POST")
            return self._send(page, Shown(page.t("sign_in"), login.problem(method), http.NOT_ALLOWED), path)
        form = await self._form(page, path)
        if form is None:
            return None
        expected = (request.getCookie(login.COOKIE) or b"").decode("ascii", "replace")
        if not expected or form.get("login_csrf") != expected:
            return self._send(page, login.form(page, self._login_token(request), page.t("login_csrf_refused"),
                                               http.FORBIDDEN), path)
        token = form.get("token", "")
        refused = self._admin.refusal(request, token if self._admin.token_required else None, guessed=bool(token))
        if refused is not None:
            return self._send(page, login.form(page, self._login_token(request), refused.message, refused.code), path)
        peer = peer_of(request.getClientAddress())
        session = self.sessions.start(f"console from {peer}")
        log.info("console signed in from {peer}", peer=peer)
        request.addCookie(SESSION_COOKIE, session.id.encode("ascii"), path=BASE, httpOnly=True, sameSite="strict",
                          secure=request.isSecure() or None)
        request.addCookie(login.COOKIE, b"", path=BASE, max_age="0", httpOnly=True, sameSite="strict")
        page.session = session
        return self._send(page, Redirect("destinations"), path)

    def _login_token(self, request: Request) -> str:
        """A fresh login CSRF token, set as a cookie the login form's field must repeat."""
        token = secrets.token_urlsafe(24)
        request.addCookie(login.COOKIE, token.encode("ascii"), path=BASE, httpOnly=True, sameSite="strict",
                          secure=request.isSecure() or None)
        return token

    def _switch_language(self, request: Request, query: dict[str, list[str]]) -> None:
        to = (query.get("to") or [""])[0]
        back = (query.get("back") or [""])[0]
        if to in CATALOGUES:
            request.addCookie(LANGUAGE_COOKIE, to.encode("ascii"), path=BASE, max_age=str(365 * 86400),
                              httpOnly=True, sameSite="strict", secure=request.isSecure() or None)
        self._redirect(request, back if _BACK.fullmatch(back) else "destinations")

    def _send(self, page: Page, result: Shown | Redirect, path: str) -> None:
        request = page.request
        if request._disconnected:
            return
        if isinstance(result, Redirect):
            return self._redirect(request, result.to)
        request.setResponseCode(result.code)
        request.setHeader("content-type", "text/html; charset=utf-8")
        request.write(document(page, result, path))
        request.finish()

    @staticmethod
    def _redirect(request: Request, to: str) -> None:
        request.setResponseCode(http.SEE_OTHER)
        request.setHeader("location", BASE + to)
        request.setHeader("content-type", "text/plain; charset=utf-8")
        request.write(b"")
        request.finish()

    def _crashed(self, failure, request: Request) -> None:
        log.failure("console request {method} {path} failed", failure, method=request.method,
                    path=request.path.decode("ascii", "replace"))
        if not request._disconnected and not request.finished:
            request.setResponseCode(http.INTERNAL_SERVER_ERROR)
            request.setHeader("content-type", "text/plain; charset=utf-8")
            request.write(b"internal error; the gateway's log says more\n")
            request.finish()


def _single(query: dict[str, list[str]]) -> dict[str, str]:
    return {name: values[0] for name, values in query.items()}


class AdminRoot(Resource):
    """``/admin/``: ``ui/`` is the console, everything else the JSON admin API as before."""

    def __init__(self, api: AdminResource, console: ConsoleResource) -> None:
        super().__init__()
        self._api = api
        self._console = console

    def getChild(self, name: bytes, request: Request) -> Resource:
        if name == b"ui":
            return self._console
        request.postpath.insert(0, request.prepath.pop())
        return self._api

    def render(self, request: Request):
        return self._api.render(request)


def with_console(api: AdminResource, clock: IReactorTime, reactor) -> AdminRoot:
    return AdminRoot(api, ConsoleResource(api, clock, reactor))
