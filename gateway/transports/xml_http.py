"""JSON intake over HTTP: a vendor-neutral ``POST /xml130`` (and ``POST /<route>`` for every other
registered source that is not HL7, answered the same way), and the BHXH portal's pair
``POST /api/qd130/guiHoSoXmlQD4750`` (claim file) and ``POST /api/qd130/checkInKcbQd4750``
(check-in file) for the XML 130 source, so a HIS that already submits to the portal sends a copy
here by changing only the address.

Every answer that says "accepted" is given only after the journal commit (invariant 1): the
resources hand the file to :meth:`Intake.submit` and answer when its Deferred fires.
The file itself is parsed on a pipeline worker, never on the reactor; here we only check the
size, the media type or the form fields, and base64-decode the portal's ``fileHSBase64``.

``/xml130`` speaks HTTP: 200 accepted, 422 with a JSON list of errors the sender must fix
(including refused XML: DTDs, entities, XXE, billion laughs), 403 when no plugin takes the
facility (or the client may not send for it), 401 not a known client, 429 + Retry-After for a
peer locked out after too many wrong credentials, 413 too large, 415 not XML, 503 + Retry-After
when the file was not stored.

The portal pair speaks the portal's JSON (``maKetQua``, ``maGiaoDich``, ``thoiGianTiepNhan``,
``thongDiep``) with HTTP 200, as the portal does. Only 200 (success) is documented for the 4750
API; the other codes reuse the portal's published codes where one fits (vn-standards §2.3, §2.6)
and are the gateway's own choice — see :data:`BHXH_CODES`.
"""
from __future__ import annotations

import json

from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gateway.core.auth_limits import AuthFailureLimiter
from gateway.core.clients import Client, ClientRegistry, Refusal
from gateway.core.documents import DocumentRequest
from gateway.core.intake import Intake
from gateway.core.metrics import Metrics
from gateway.core.sources import Source
from gateway.formats.bhxh_portal import (decode_file_field, form_problem, portal_body, portal_code, portal_message,
                                         send_again, wrong_parameter)
from gateway.formats.xml130 import CHECK_IN_DOCUMENT, CLAIM_DOCUMENT
from gateway.model.outcome import ACCEPT, ERROR, Issue, Outcome
from gateway.transports.forms import FormError, parse_form
from gateway.transports.web import RETRY_AFTER_SECONDS, IntakeResource, header, json_reply, refusal_status

#: Not in twisted.web.http's constants.
UNPROCESSABLE_ENTITY = 422

#: The portal's form has five fields; a client may add a few of its own, not thousands.
_MAX_FORM_FIELDS = 32


class _DocumentResource(IntakeResource):
    """What the JSON intake and the portal pair share: the submit, the answer after commit."""

    def _submit(self, request: Request, raw: bytes, received_at: float, document_request: DocumentRequest | None,
                client: Client | None):
        d = self._intake.submit(self._envelope(request, raw, received_at, client=client), source=self._source.name,
                                request=document_request)
        d.addCallback(self._respond, request, received_at)
        return NOT_DONE_YET

    def _respond(self, outcome: Outcome, request: Request, received_at: float) -> None:
        if request._disconnected:
            return
        code, body, retry = self._answer(outcome, received_at)
        request.setResponseCode(code)
        if retry:
            request.setHeader("retry-after", str(RETRY_AFTER_SECONDS))
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        request.setHeader("content-type", "application/json; charset=utf-8")
        request.setHeader("content-length", str(len(data)))
        request.write(data)
        request.finish()
        self._observe_latency(received_at)

    def _answer(self, outcome: Outcome, received_at: float) -> tuple[int, dict, bool]:
        """(HTTP status, JSON body, whether to send Retry-After) for a decision."""
        raise NotImplementedError

    def _too_large(self, request: Request) -> bool:
        if not getattr(request, "too_large", False):
            return False
        self._refuse_too_large()
        return True


class JsonSourceResource(_DocumentResource):
    """``POST /xml130``, the GIAMDINHHS (or check-in) file as the body, and ``POST /<route>`` of any
    other source that is not HL7: answered in plain HTTP with a JSON body."""

    def render_POST(self, request: Request):
        client = self._authenticate(request)
        if isinstance(client, Refusal):
            limited = client.retry_after is not None  # a locked-out peer: send again later (207)
            issue = Issue(207 if limited else 204, client.text, "Authorization")
            return json_reply(request, refusal_status(request, client),
                              _errors("rate_limited" if limited else "unauthenticated", issue))
        if self._too_large(request):
            limit = request.channel.site.max_body_bytes
            return json_reply(request, http.REQUEST_ENTITY_TOO_LARGE, _errors(
                "too_large", Issue(102, f"body exceeds {limit} bytes (http.max_body_bytes)", "body")))
        media_type = header(request, "content-type").lower().partition(";")[0].strip()
        if media_type not in self._source.media_types:
            return json_reply(request, http.UNSUPPORTED_MEDIA_TYPE, _errors("unsupported_media_type", Issue(
                102, f"content type {media_type or '(none)'!r} is not {self._source.title}; send "
                     f"{self._source.description} as {' or '.join(self._source.media_types)}", "content-type")))
        return self._submit(request, request.content.read(), self._clock.seconds(), None, client)

    def _answer(self, outcome: Outcome, received_at: float) -> tuple[int, dict, bool]:
        if send_again(outcome):
            body = _errors("unavailable" if not outcome.committed else "rejected", *outcome.issues)
            body["message_id"] = outcome.message_id
            return http.SERVICE_UNAVAILABLE, body, True
        if outcome.ack_code == ACCEPT:
            return http.OK, {"status": "accepted", "message_id": outcome.message_id,
                             "records": outcome.extra.get("records", 0), "duplicate": outcome.duplicate,
                             "warnings": [i.to_dict() for i in outcome.issues]}, False
        body = _errors("error" if outcome.ack_code == ERROR else "rejected", *outcome.issues)
        body.update(message_id=outcome.message_id, duplicate=outcome.duplicate)
        if outcome.ack_code == ERROR:
            return UNPROCESSABLE_ENTITY, body, False
        return http.FORBIDDEN, body, False


class BhxhPortalResource(_DocumentResource):
    """One of the portal's form endpoints; ``document`` is the kind of file it takes and
    ``file_type`` the ``loaiHoSo`` value the portal expects with it (130 claim, 0 check-in)."""

    def __init__(self, intake: Intake, clock: IReactorTime, metrics: Metrics, listener: str,
                 clients: ClientRegistry, limiter: AuthFailureLimiter, source: Source, *, document: str,
                 file_type: str) -> None:
        super().__init__(intake, clock, metrics, listener, clients, limiter, source)
        self._document = document
        self._file_type = file_type

    def render_POST(self, request: Request):
        received_at = self._clock.seconds()
        client = self._authenticate(request)
        if isinstance(client, Refusal):
            # The portal answers HTTP 200 with its own code (vn-standards §2.3: 401 unauthenticated).
            if client.retry_after is not None:
                request.setHeader("retry-after", str(client.retry_after))
                return self._portal_json(request, "429", received_at,
                                         f"Xác thực sai quá nhiều lần / too many wrong credentials: {client.text}")
            return self._portal_json(request, "401", received_at, f"Chưa xác thực / not authenticated: {client.text}")
        if self._too_large(request):
            limit = request.channel.site.max_body_bytes
            return self._portal_json(request, "1001", received_at,
                                     f"Dung lượng vượt quá giới hạn / request larger than {limit} bytes "
                                     f"(http.max_body_bytes)")
        content_type = header(request, "content-type")
        d = deferToThread(_read_form, request.content.read(), content_type)
        d.addCallback(self._form_read, request, received_at, client)
        d.addErrback(self._form_failed, request, received_at)
        return NOT_DONE_YET

    def _form_read(self, form: tuple[dict[str, str], bytes | None], request: Request, received_at: float,
                   client: Client | None) -> None:
        """Back on the reactor with the form; answers at once, or after the commit."""
        fields, raw = form
        answer = self._answer_form(request, fields, raw, received_at, client)
        if answer is not NOT_DONE_YET and not request._disconnected:
            request.write(answer)
            request.finish()

    def _form_failed(self, failure: Failure, request: Request, received_at: float) -> None:
        failure.trap(FormError)
        if not request._disconnected:
            request.write(self._portal_json(request, "205", received_at, wrong_parameter(failure.getErrorMessage())))
            request.finish()

    def _answer_form(self, request: Request, fields: dict[str, str], raw: bytes | None, received_at: float,
                     client: Client | None):
        problem = form_problem(fields, raw, self._file_type, self._document)
        if problem is not None:
            return self._portal_json(request, "205", received_at, problem)
        return self._submit(request, raw, received_at, DocumentRequest(self._document, fields["maCSKCB"]), client)

    def _portal_json(self, request: Request, code: str, received_at: float, message: str) -> bytes:
        return json_reply(request, http.OK, portal_body(code, "", received_at, message))

    def _answer(self, outcome: Outcome, received_at: float) -> tuple[int, dict, bool]:
        code = portal_code(outcome)
        transaction = "" if outcome.message_id is None else str(outcome.message_id)
        return http.OK, portal_body(code, transaction, received_at, portal_message(code, outcome)), code == "124"


def _read_form(body: bytes, content_type: str) -> tuple[dict[str, str], bytes | None]:
    """On a thread: the portal form's fields and its decoded file (None when absent or not
    base64). Both can be tens of megabytes of work."""
    fields = parse_form(body, content_type, max_fields=_MAX_FORM_FIELDS)
    return fields, decode_file_field(fields.get("fileHSBase64", ""))


def _errors(status: str, *issues: Issue) -> dict:
    return {"status": status, "errors": [i.to_dict() for i in issues]}



def mount_bhxh_portal(root: Resource, intake: Intake, clock: IReactorTime, metrics: Metrics, listener: str,
                      clients: ClientRegistry, limiter: AuthFailureLimiter, source: Source) -> None:
    """Put ``/api/qd130/{guiHoSoXmlQD4750,checkInKcbQd4750}`` under ``root``, for files of the XML 130
    ``source``."""
    api, qd130 = Resource(), Resource()
    root.putChild(b"api", api)
    api.putChild(b"qd130", qd130)
    qd130.putChild(b"guiHoSoXmlQD4750", BhxhPortalResource(intake, clock, metrics, listener, clients, limiter, source,
                                                           document=CLAIM_DOCUMENT, file_type="130"))
    qd130.putChild(b"checkInKcbQd4750", BhxhPortalResource(intake, clock, metrics, listener, clients, limiter, source,
                                                           document=CHECK_IN_DOCUMENT, file_type="0"))
