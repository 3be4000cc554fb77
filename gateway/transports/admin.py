"""``/admin/``: the outbox operations of ``hssk-gateway outbox`` as JSON over HTTP, answered by the
running gateway, which alone knows its circuit breakers and deliveries in flight.

With ``auth.admin_token_env`` set, every request must carry ``Authorization: Bearer <token>``
(the token is the named environment variable's value), from any address; a missing or wrong
token is 401. A wrong token counts against the peer as wrong intake credentials do, and a peer
locked out (``gateway.core.auth_limits``) gets 429 with Retry-After, its token unread. Without
it, every request whose peer is not a loopback address (127.0.0.0/8, ::1, or IPv4-mapped 127.x)
is refused with 403, whatever interface ``http.listen`` binds. Either check comes before
anything else is looked at.

Endpoints (all JSON; errors are ``{"error": "..."}`` with 400 bad parameter, 401 no or wrong
token, 403 not loopback, 404 unknown endpoint, row, destination, message or review, 405 wrong
method, 409 row not dead, destination paused or review decided already, 429 peer locked out, 502
batch refused by its sink):

    GET  /admin/outbox                          per destination: counts, oldest age, paused,
                                                live circuit state and deliveries in flight
    GET  /admin/outbox/rows?dest=D&state=S&limit=N   rows oldest first, never the payload
    GET  /admin/outbox/rows/ID                  one row, without its payload
    POST /admin/outbox/rows/ID/retry            one dead row pending again
    POST /admin/outbox/purge?delivered_before=ISO   delete delivered rows, blank journal bodies
    POST /admin/destinations/D/retry-dead       every dead row of D pending again
    POST /admin/destinations/D/pause            stop claiming D's rows (in-flight ones finish)
    POST /admin/destinations/D/resume           claim D's rows again
    POST /admin/destinations/D/flush            run batch destination D's batch now; answers
                                                with the rows sent (502 if the sink refused it)
    POST /admin/messages/ID/replay?dry_run=1    decide journaled message ID again and journal
                                                it as a new attempt (dry_run: journal nothing)
    POST /admin/messages/replay?status=S&since=ISO&until=ISO&limit=N&dry_run=1
                                                the same for the latest attempts with status S
                                                received in [since, until), oldest first
    POST /admin/feed/SOURCE?file=NAME           the body is a file of source SOURCE: each record
                                                one input, through the intake (see
                                                :mod:`gateway.core.feed`); answers with the report
    GET  /admin/messages?control_id=&facility=&sender=&status=&type=&since=&until=&person=&limit=
                                                journaled messages newest first, masked
                                                (:meth:`Journal.list_messages`)
    GET  /admin/messages/ID                     one message without its bytes: decision, ERR texts,
                                                its attempts (replays), its outbox rows
    GET  /admin/messages/ID/body                the message as received, in clear: the one answer
                                                with a patient's data unmasked, and logged
    GET  /admin/identity/reviews?state=S        the identity review queue, names masked
    POST /admin/identity/reviews/ID/accept?candidate=P&note=T   as ``identity review accept``
    POST /admin/identity/reviews/ID/reject?note=T               as ``identity review reject``

The operator console (``/admin/ui/``, :mod:`gateway.transports.console`) runs every read and
action through :meth:`AdminResource.perform` and signs in through :meth:`AdminResource.refusal`.

Writes run on the journal writer thread (:meth:`JournalWriter.run`, the single writer), reads
on a connection of their own in the thread pool, so neither blocks the reactor; after a write
the delivery service refreshes at once, so a pause or a retry takes effect before the answer.
"""
from __future__ import annotations

import hmac
import io
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gateway.core.audit import (
    ADMIN, FAILED, FEED, MESSAGES_READ, MESSAGES_REPLAY, OK, OUTBOX_FLUSH, OUTBOX_PAUSE, OUTBOX_PURGE, OUTBOX_RESUME,
    OUTBOX_RETRY, REFUSED, REVIEW_ACCEPT, REVIEW_REJECT, AuditEntry,
)
from gateway.core.auth_limits import AuthFailureLimiter
from gateway.core.clients import ip_of
from gateway.model.envelope import peer_of
from gateway.core.feed import FeedRefused, feed, feedable
from gateway.core.intake import Intake
from gateway.model.masking import mask_text
from gateway.core.metrics import Metrics
from gateway.core.outbox import (
    DEAD, STATES, destination_names, get_row, list_rows, not_routed_counts, purge_delivered, retry_dead,
    retry_dead_row, rows_of_message, set_paused, with_idle_destinations,
)
from gateway.core.replay import MAX_LIMIT, Replayer, Selection
from gateway.core.store import Journal, JournalWriter, Store
from gateway.formats.charsets import codec_for
from gateway.model.outcome import MESSAGE_STATUSES
from gateway.rules.person_index import ReviewError, decide_review, review_queue
from gateway.core.batch import BatchNotDelivered
from gateway.transports.web import header, json_reply, lockout, peer_host, refusal_status

if TYPE_CHECKING:
    from gateway.core.delivery import DeliveryService

log = Logger(namespace="hssk.admin")

#: What ``GET /admin/messages`` searches by (see :meth:`Journal.list_messages`).
SEARCH_PARAMETERS = frozenset({"control_id", "facility", "sender", "status", "type", "since", "until", "person",
                               "limit"})
REVIEW_STATES = ("open", "accepted", "rejected", "all")

MAX_LIST_LIMIT = 1000


def is_loopback(address: object) -> bool:
    """True only for a TCP peer on a loopback address: 127.0.0.0/8, ::1, or ::ffff:127.x.
    Anything else — another host, a UNIX socket, an address that does not parse — is refused."""
    if not isinstance(address, IPv4Address | IPv6Address):
        return False
    ip = ip_of(address.host)
    return ip is not None and ip.is_loopback


class AdminError(Exception):
    """An answer other than 200: the HTTP status and a sentence saying what was wrong (``details``
    go into the JSON answer beside it; ``allow`` is the Allow header of a 405)."""

    def __init__(self, code: int, message: str, allow: tuple[str, ...] = (), **details: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.allow = allow
        self.details = details


#: (method, path pattern, handler name, query parameters it takes). A ``{name}`` matches one path
#: segment; ``{row_id}`` takes anything, so a non-numeric id is a 400 that names it rather than a
#: bare 404. A parameter a route does not take is a 400, so a typo (``destination=`` for
#: ``dest=``) is not silently ignored.
_ROUTES: tuple[tuple[str, str, str, frozenset[str]], ...] = (
    ("GET", "outbox", "status", frozenset()),
    ("GET", "outbox/rows", "rows", frozenset({"dest", "state", "limit"})),
    ("GET", "outbox/rows/{row_id}", "row", frozenset()),
    ("POST", "outbox/rows/{row_id}/retry", "retry_row", frozenset()),
    ("POST", "outbox/purge", "purge", frozenset({"delivered_before"})),
    ("POST", "destinations/{dest}/retry-dead", "retry_dead", frozenset()),
    ("POST", "destinations/{dest}/pause", "pause", frozenset()),
    ("POST", "destinations/{dest}/resume", "resume", frozenset()),
    ("POST", "destinations/{dest}/flush", "flush", frozenset()),
    ("GET", "messages", "messages", SEARCH_PARAMETERS),
    ("GET", "messages/{message_id}", "message", frozenset()),
    ("GET", "messages/{message_id}/body", "body", frozenset()),
    ("POST", "messages/replay", "replay_selected", frozenset({"status", "since", "until", "limit", "dry_run"})),
    ("POST", "messages/{message_id}/replay", "replay_one", frozenset({"dry_run"})),
    ("GET", "identity/reviews", "reviews", frozenset({"state"})),
    ("POST", "identity/reviews/{review_id}/accept", "accept_review", frozenset({"candidate", "note"})),
    ("POST", "identity/reviews/{review_id}/reject", "reject_review", frozenset({"note"})),
    ("POST", "feed/{source}", "feed", frozenset({"file"})),
)


#: The routes that are operator actions or read a message body, and their audit action (reads of
#: outbox rows, status and searches return no body, and are not recorded one by one).
_AUDITED = {
    "retry_row": OUTBOX_RETRY, "retry_dead": OUTBOX_RETRY, "purge": OUTBOX_PURGE, "pause": OUTBOX_PAUSE,
    "resume": OUTBOX_RESUME, "flush": OUTBOX_FLUSH, "replay_selected": MESSAGES_REPLAY,
    "replay_one": MESSAGES_REPLAY, "feed": FEED, "body": MESSAGES_READ, "accept_review": REVIEW_ACCEPT,
    "reject_review": REVIEW_REJECT,
}
#: The admin API's actors in the audit log.
ADMIN_BY_TOKEN = "admin (token)"
ADMIN_ON_LOOPBACK = "admin (loopback)"


def _compile(pattern: str) -> re.Pattern:
    parts = [f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in pattern.split("/")]
    return re.compile("/".join(parts) + "/?")


_COMPILED = tuple((method, _compile(pattern), handler, known) for method, pattern, handler, known in _ROUTES)


class AdminResource(Resource):
    """One leaf for all of ``/admin/``: routing here rather than in a Resource tree keeps every
    answer — including 404 and 405 — JSON, and puts the token (or loopback) check in front of
    all of it.

    :meth:`refusal` and :meth:`perform` are the admin API's two steps, public because the operator
    console (:mod:`gateway.transports.console`) takes the same two: whatever checks or records an
    admin login or action there covers the console's too."""

    isLeaf = True

    def __init__(self, delivery: DeliveryService, writer: JournalWriter, store: Store, reactor,
                 limiter: AuthFailureLimiter, metrics: Metrics, replayer: Replayer, intake: Intake,
                 token: str = "") -> None:
        super().__init__()
        self._replayer = replayer
        self._intake = intake
        self._token = token.encode("utf-8")
        self._limiter = limiter
        self._metrics = metrics
        self._delivery = delivery
        self._writer = writer
        self._store = store
        self._reactor = reactor

    @property
    def token_required(self) -> bool:
        """Whether callers prove themselves with the token (else: loopback peers only)."""
        return bool(self._token)

    def render(self, request: Request):
        scheme, _, presented = header(request, "authorization").strip().partition(" ")
        refused = self.refusal(request, presented.strip() if scheme.lower() == "bearer" else None,
                               guessed=bool(header(request, "authorization")))
        if refused is not None:
            if refused.code == http.UNAUTHORIZED:
                request.responseHeaders.setRawHeaders(b"www-authenticate", [b'Bearer realm="hssk-gateway-admin"'])
            return json_reply(request, refused.code, {"error": refused.message})
        path = "/".join(segment.decode("utf-8", "replace") for segment in request.postpath)
        method = request.method.decode("ascii", "replace")
        d = self.perform(request, method, path, query_of(request))
        d.addCallbacks(self._answer, self._failed, callbackArgs=(request,), errbackArgs=(request,))
        return NOT_DONE_YET

    def refusal(self, request: Request, presented: str | None, guessed: bool = True) -> AdminError | None:
        """None when ``request`` may act as the admin: with a token configured, ``presented`` is it
        (compared in constant time, so the answer's timing does not spell it out) and the peer is
        not locked out — its token then unread; without one, the peer is a loopback address. A
        wrong token counts against the peer when ``guessed`` (no credentials at all guess nothing).
        Headers of the refusal (Retry-After) are set on ``request``."""
        if self._token:
            locked = lockout(request, self._limiter, self._metrics)
            if locked is not None:
                return AdminError(refusal_status(request, locked), locked.text)
            if presented is None or not hmac.compare_digest(presented.encode("utf-8"), self._token):
                if guessed:
                    self._limiter.failed(peer_host(request))
                self._audit_refusal(request, "no or wrong admin token")
                log.warn("refusing admin request {method} {path} from {host}: no or wrong token",
                         method=request.method.decode("ascii", "replace"),
                         path=mask_text(request.path.decode("ascii", "replace")),
                         host=getattr(request.getClientAddress(), "host", "?"))
                return AdminError(http.UNAUTHORIZED, "the admin API needs 'Authorization: Bearer <token>' with the "
                                                     "token in the variable auth.admin_token_env names")
        elif not is_loopback(request.getClientAddress()):
            self._audit_refusal(request, "not a loopback peer, and auth.admin_token_env is unset")
            return AdminError(http.FORBIDDEN, "the admin API answers only loopback clients (127.0.0.0/8, ::1) while "
                                              "auth.admin_token_env is unset; run the request on the gateway host, "
                                              "or set a token")
        audit = self._intake.audit
        if audit is not None:
            audit.authenticated(ADMIN, self.actor, peer_of(request.getClientAddress()), peer_host(request))
        return None

    def perform(self, request: Request, method: str, path: str, query: dict[str, list[str]]) -> Deferred:
        """Run the admin operation ``method path`` (``destinations/D/pause``) with ``query``'s
        parameters, for a caller :meth:`refusal` let in. Fires with the answer's JSON body, or
        fails with :class:`AdminError`."""
        allowed = []
        for route_method, pattern, handler, known in _COMPILED:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            try:
                params = _params(query, known)
            except AdminError as e:
                return fail(e)
            d = Deferred.fromCoroutine(getattr(self, "_" + handler)(request, params, **match.groupdict()))
            if handler in _AUDITED:
                d.addBoth(self._audit_action, request, _AUDITED[handler], match.groupdict(), params)
            return d
        if allowed:
            methods = tuple(sorted(set(allowed)))
            return fail(AdminError(http.NOT_ALLOWED, f"{method} is not allowed on /admin/{path}; use "
                                                     f"{' or '.join(methods)}", allow=methods))
        return fail(AdminError(http.NOT_FOUND, f"no admin endpoint /admin/{path}",
                               endpoints=[f"{m} /admin/{p}" for m, p, _, _ in _ROUTES]))

    @property
    def actor(self) -> str:
        """Who operates through this API, as the audit log names it: the holder of the admin
        token, or whoever is on the gateway host (loopback, no token)."""
        return ADMIN_BY_TOKEN if self._token else ADMIN_ON_LOOPBACK

    def _audit_refusal(self, request: Request, reason: str) -> None:
        audit = self._intake.audit
        if audit is not None:
            audit.refused(ADMIN, peer_of(request.getClientAddress()), reason)

    def _audit_action(self, result, request: Request, action: str, matched: dict[str, str], params: dict[str, str]):
        """One entry per operator action or body read, with how it ended; passes ``result`` on
        unchanged. The target is the route's own parameters, so an action from the console reads
        the same as one sent to the API."""
        audit = self._intake.audit
        if audit is None:
            return result
        if isinstance(result, Failure):
            error = result.value
            outcome, reason = ((REFUSED, f"{error.code}: {error.message}") if isinstance(error, AdminError)
                               else (FAILED, f"{type(error).__name__}: {result.getErrorMessage()}"))
        else:
            outcome, reason = OK, json.dumps({k: v for k, v in result.items() if isinstance(v, int | float | str)
                                              and k != "body"}, ensure_ascii=False, sort_keys=True)
        target = " ".join(f"{k}={v}" for k, v in {**matched, **params}.items())
        audit.record(AuditEntry(ADMIN, self.actor, action, peer_of(request.getClientAddress()), target, outcome,
                                reason))
        return result

    def _answer(self, body: dict, request: Request) -> None:
        if not request._disconnected:
            request.write(json_reply(request, http.OK, body))
            request.finish()

    def _failed(self, failure, request: Request) -> None:
        if failure.check(AdminError):
            error = failure.value
            code, body = error.code, {"error": error.message, **error.details}
            if error.allow:
                request.setHeader("allow", ", ".join(error.allow))
        else:
            log.failure("admin request {method} {uri} failed", failure, method=request.method,
                        uri=mask_text(request.uri.decode("ascii", "replace")))
            code, body = http.INTERNAL_SERVER_ERROR, {"error": f"internal error: {mask_text(failure.getErrorMessage())}"}
        if not request._disconnected:
            request.write(json_reply(request, code, body))
            request.finish()

    # --- reads -----------------------------------------------------------------------------

    def _read(self, query: Callable[[sqlite3.Connection], object]) -> Deferred:
        return self._store.read_in_thread(self._reactor, query)

    async def _status(self, request: Request, params: dict[str, str]) -> dict:
        await self._delivery.refresh()
        config = self._delivery.config
        configured = {d.name: d for d in config.destinations}
        status = with_idle_destinations(self._delivery.status, configured)
        not_routed = await self._read(not_routed_counts)
        for name, entry in status.items():
            dispatcher = self._delivery.dispatchers.get(name)
            destination = configured.get(name)
            entry.update(
                kind=destination.kind if destination else None,
                configured=destination is not None,
                enabled=bool(destination and destination.enabled),
                circuit_state=dispatcher.circuit.state if dispatcher else None,
                deliveries_in_flight=dispatcher.in_flight if dispatcher else 0,
                not_routed=not_routed.get(name, 0))
        return {"destinations": status, "pending_total": self._delivery.pending_total}

    async def _rows(self, request: Request, params: dict[str, str]) -> dict:
        destination = params.get("dest")
        if destination is not None:
            await self._known(destination)
        state = params.get("state")
        if state is not None and state not in STATES:
            raise AdminError(http.BAD_REQUEST, f"state={state!r} is not one of {', '.join(STATES)}")
        limit = _int_param(params, "limit", 50, 1, MAX_LIST_LIMIT)
        rows = await self._read(lambda conn: list_rows(conn, destination=destination, state=state, limit=limit))
        return {"rows": rows}

    async def _row(self, request: Request, params: dict[str, str], row_id: str) -> dict:
        number = _parse_row_id(row_id)
        row = await self._read(lambda conn: get_row(conn, number))
        if row is None:
            raise AdminError(http.NOT_FOUND, f"no outbox row with id {number}")
        return row

    async def _known(self, name: str) -> str:
        """``name`` if configured or known to the journal; otherwise 404 listing what exists."""
        configured = {d.name for d in self._delivery.config.destinations}
        if name in configured:
            return name
        queued = await self._read(destination_names)
        if name in queued:
            return name
        raise AdminError(http.NOT_FOUND, f"unknown destination {name!r}; known: "
                                         f"{', '.join(sorted(configured | queued)) or 'none'}")

    # --- writes ----------------------------------------------------------------------------

    async def _write(self, task: Callable[[sqlite3.Connection, float], object]):
        """Through the single writer, then an immediate refresh so dispatchers see the change."""
        result = await self._writer.run(task)
        await self._delivery.refresh()
        return result

    async def _retry_row(self, request: Request, params: dict[str, str], row_id: str) -> dict:
        number = _parse_row_id(row_id)
        was = await self._write(lambda conn, now: retry_dead_row(conn, now, number))
        if was is None:
            raise AdminError(http.NOT_FOUND, f"no outbox row with id {number}")
        if was != DEAD:
            raise AdminError(http.CONFLICT, f"outbox row {number} is {was}, not dead; only dead rows are retried")
        return {"row": number, "state": "pending"}

    async def _retry_dead(self, request: Request, params: dict[str, str], dest: str) -> dict:
        name = await self._known(dest)
        count = await self._write(lambda conn, now: retry_dead(conn, now, destination=name))
        return {"destination": name, "retried": count}

    async def _pause(self, request: Request, params: dict[str, str], dest: str) -> dict:
        return await self._set_paused(dest, True)

    async def _resume(self, request: Request, params: dict[str, str], dest: str) -> dict:
        return await self._set_paused(dest, False)

    async def _set_paused(self, dest: str, paused: bool) -> dict:
        name = await self._known(dest)
        await self._write(lambda conn, now: set_paused(conn, now, name, paused))
        return {"destination": name, "paused": paused}

    async def _flush(self, request: Request, params: dict[str, str], dest: str) -> dict:
        name = await self._known(dest)
        config = next((d for d in self._delivery.config.destinations if d.name == name), None)
        if config is None or name not in self._delivery.batched:
            what = "not configured" if config is None else f"a {config.kind} destination"
            raise AdminError(http.BAD_REQUEST, f"{name} is {what}; flush runs a configured batch destination's batch now")
        if not config.enabled:
            raise AdminError(http.CONFLICT, f"{name} is disabled in the configuration (destinations.{name}.enabled)")
        if self._delivery.status.get(name, {}).get("paused"):
            raise AdminError(http.CONFLICT, f"{name} is paused; resume it first")
        try:
            rows = await self._delivery.flush(name)
        except BatchNotDelivered as e:
            raise AdminError(http.BAD_GATEWAY, f"{e}; its rows stay pending and are sent with a later batch") from None
        return {"destination": name, "rows": rows}

    async def _purge(self, request: Request, params: dict[str, str]) -> dict:
        text = params.get("delivered_before")
        if text is None:
            raise AdminError(http.BAD_REQUEST, "delivered_before is required: an ISO date or date-time "
                                               "(2025-03-15 or 2025-03-15T08:30, local time unless it has an offset)")
        try:
            before = datetime.fromisoformat(text).timestamp()
        except ValueError:
            raise AdminError(http.BAD_REQUEST, f"delivered_before={text!r} is not an ISO date or date-time "
                                               f"(2025-03-15 or 2025-03-15T08:30)") from None
        limit = self._delivery.config.outbox.prune_batch
        purged = 0
        while True:  # a small batch per commit keeps the writer's transactions short
            removed = await self._writer.run(lambda conn, now: purge_delivered(conn, before, limit))
            purged += removed
            if removed < limit:
                break
        await self._delivery.refresh()
        return {"purged": purged, "delivered_before": before}

    async def _replay_one(self, request: Request, params: dict[str, str], message_id: str) -> dict:
        number = _positive_id(message_id, "a message id (see `messages list`)")
        return await self._replay(Selection(message_id=number), params)

    async def _replay_selected(self, request: Request, params: dict[str, str]) -> dict:
        selection = Selection(status=params.get("status"), since=_time_param(params, "since"),
                              until=_time_param(params, "until"), limit=_int_param(params, "limit", 100, 1, MAX_LIMIT))
        return await self._replay(selection, params)

    async def _replay(self, selection: Selection, params: dict[str, str]) -> dict:
        problem = selection.problem()
        if problem is not None:
            raise AdminError(http.BAD_REQUEST, problem)
        dry_run = params.get("dry_run", "0")
        if dry_run not in ("0", "1"):
            raise AdminError(http.BAD_REQUEST, f"dry_run={dry_run!r} must be 1 or 0")
        messages, more = await self._replayer.select(selection)
        if selection.message_id is not None and not messages:
            raise AdminError(http.NOT_FOUND, f"no message with id {selection.message_id}")
        answer = await self._replayer.replay(messages, more, dry_run == "1")
        log.info("replayed {count} journaled messages{dry}", count=len(messages),
                 dry=" (dry run: nothing journaled)" if dry_run == "1" else "")
        await self._delivery.refresh()
        return answer

    # --- the journal: messages and the identity review queue ----------------------------------

    def _journal(self, question: Callable[[Journal], object]) -> Deferred:
        """``question`` of a :class:`Journal` on a connection of its own, in the thread pool."""
        def ask():
            journal = Journal(self._store)
            try:
                return question(journal)
            finally:
                journal.close()

        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), ask)

    async def _messages(self, request: Request, params: dict[str, str]) -> dict:
        status = params.get("status") or None
        if status is not None and status not in MESSAGE_STATUSES:
            raise AdminError(http.BAD_REQUEST, f"status={status!r} is not one of {', '.join(MESSAGE_STATUSES)}")
        search = {name: params.get(name) or None for name in ("control_id", "sender", "facility", "person")}
        since, until = _time_param(params, "since"), _time_param(params, "until")
        limit = _int_param(params, "limit", 50, 1, MAX_LIST_LIMIT)
        rows = await self._journal(lambda journal: journal.list_messages(
            status=status, since=since, until=until, message_type=params.get("type") or None, limit=limit, **search))
        return {"messages": rows}

    async def _message(self, request: Request, params: dict[str, str], message_id: str) -> dict:
        number = _positive_id(message_id, "a message id (see `messages list`)")

        def view(journal: Journal) -> dict | None:
            found = journal.get_message(number)
            if found is None:
                return None
            raw = found.pop("raw")
            found.update(raw_bytes=len(raw), errors=json.loads(found["errors"]) if found["errors"] else [],
                         records=json.loads(found["records"]) if found["records"] else None,
                         attempts=journal.attempts_of(number), outbox=journal.query(rows_of_message, number))
            return found

        found = await self._journal(view)
        if found is None:
            raise AdminError(http.NOT_FOUND, f"no message with id {number}")
        return found

    async def _body(self, request: Request, params: dict[str, str], message_id: str) -> dict:
        """The message as received, in clear: the one admin answer with a patient's data unmasked."""
        number = _positive_id(message_id, "a message id (see `messages list`)")
        found = await self._journal(lambda journal: journal.get_message(number))
        if found is None:
            raise AdminError(http.NOT_FOUND, f"no message with id {number}")
        raw, charset = found["raw"], found["charset"] or ""
        log.info("message {id} body read through the admin API by {peer}", id=number,
                 peer=peer_of(request.getClientAddress()))
        return {"id": number, "charset": charset, "bytes": len(raw),
                "body": raw.decode(codec_for(charset) or "utf-8", "replace")}

    async def _reviews(self, request: Request, params: dict[str, str]) -> dict:
        state = params.get("state", "open")
        if state not in REVIEW_STATES:
            raise AdminError(http.BAD_REQUEST, f"state={state!r} is not one of {', '.join(REVIEW_STATES)}")
        reviews = await self._read(lambda conn: review_queue(conn, None if state == "all" else state))
        return {"reviews": reviews}

    async def _accept_review(self, request: Request, params: dict[str, str], review_id: str) -> dict:
        return await self._decide(request, review_id, True, params)

    async def _reject_review(self, request: Request, params: dict[str, str], review_id: str) -> dict:
        return await self._decide(request, review_id, False, params)

    async def _decide(self, request: Request, review_id: str, accept: bool, params: dict[str, str]) -> dict:
        """As ``identity review accept|reject``, decided by "admin API from PEER"; a running gateway
        announces an accepted link to the plugins at its next refresh."""
        number = _positive_id(review_id, "a review id (see `identity review list`)")
        who = f"admin API from {peer_of(request.getClientAddress())}"
        try:
            return await self._write(lambda conn, now: decide_review(
                conn, now, number, accept, params.get("candidate") or None, who, params.get("note", "")))
        except ReviewError as e:
            raise AdminError(http.NOT_FOUND if str(e) == f"no review {number}" else http.CONFLICT, str(e)) from None

    async def _feed(self, request: Request, params: dict[str, str], source: str) -> dict:
        try:
            found = feedable(self._intake.sources, source)
        except FeedRefused as e:
            raise AdminError(http.NOT_FOUND, str(e)) from None
        limit = self._delivery.config.http.max_body_bytes
        if getattr(request, "too_large", False):
            raise AdminError(http.REQUEST_ENTITY_TOO_LARGE, f"the file is larger than {limit} bytes (http.max_body_bytes); "
                                                             f"feed it in parts, or without --url while the gateway is "
                                                             f"stopped")
        body = request.content.read()
        # Splitting is the source's parsing of the whole file: on a thread, never on the reactor.
        records, failure = await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), _split, found, body)
        report = await feed(self._intake, found, _then_raise(records, failure), self._intake.clock,
                            file=params.get("file", "upload"), peer=peer_of(request.getClientAddress()),
                            max_record_bytes=limit)
        await self._delivery.refresh()
        return report.to_dict()


def _split(source, body: bytes) -> tuple[list[bytes], Exception | None]:
    """The records of a file, and what stopped the split (a broken file, a bug) after them."""
    records: list[bytes] = []
    try:
        records.extend(source.split(io.BytesIO(body)))
    except Exception as e:  # the split is plugin code; the feed reports it after the records before it
        return records, e
    return records, None


def _then_raise(records: list[bytes], failure: Exception | None) -> Iterator[bytes]:
    yield from records
    if failure is not None:
        raise failure


def query_of(request: Request) -> dict[str, list[str]]:
    """The request's query string, every value of each parameter."""
    return parse_qs((request.uri.split(b"?", 1) + [b""])[1].decode("utf-8", "replace"), keep_blank_values=True)


def _params(query: dict[str, list[str]], known: frozenset[str]) -> dict[str, str]:
    """The parameters as single values; an unknown or repeated one is a 400."""
    unknown = sorted(set(query) - known)
    if unknown:
        raise AdminError(http.BAD_REQUEST, f"unknown parameter {', '.join(unknown)}; this endpoint takes "
                                           f"{', '.join(sorted(known)) or 'none'}")
    repeated = sorted(name for name, values in query.items() if len(values) > 1)
    if repeated:
        raise AdminError(http.BAD_REQUEST, f"parameter {', '.join(repeated)} given more than once")
    return {name: values[0] for name, values in query.items()}


def _int_param(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise AdminError(http.BAD_REQUEST, f"{name}={text!r} must be an integer from {low} to {high}")
    return int(text)


#: SQLite's largest rowid; a larger number can name no row, and SQLite refuses to bind it.
MAX_ROW_ID = 2 ** 63 - 1


def _parse_row_id(text: str) -> int:
    return _positive_id(text, "an outbox row id")


def _positive_id(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= MAX_ROW_ID:
        raise AdminError(http.BAD_REQUEST, f"{text[:40]!r} is not {what} (an integer from 1 to {MAX_ROW_ID})")
    return int(text)


def _time_param(params: dict[str, str], name: str) -> float | None:
    text = params.get(name)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise AdminError(http.BAD_REQUEST, f"{name}={text!r} is not an ISO date or date-time "
                                           f"(2025-03-15 or 2025-03-15T08:30)") from None

