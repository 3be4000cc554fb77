"""A client of the BHXH receiving portal's API (vn-standards §2.2–2.4): the token, then files.

One client per ``bhxh`` destination (one facility account). It keeps the token it was given and
logs in again when the portal says 401, at most once per request, so a token that expires in the
middle of a run costs one extra login and no failed delivery. The token's ``expires_in`` is the
portal's clock, not ours, so it is not trusted to plan a login. Everything that waits takes the
injected clock.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlencode

from io import BytesIO

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, inlineCallbacks
from twisted.internet.error import ConnectError, ConnectingCancelledError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (Agent, FileBodyProducer, HTTPConnectionPool, RequestTransmissionFailed, ResponseDone,
                                ResponseFailed, ResponseNeverReceived)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from plugins.bhxh.portal import LOAI_HO_SO, TOKEN_PATH, endpoint_path, password_hash

log = Logger(namespace="hssk.bhxh")

#: What "no answer" looks like to twisted.web's client: all worth a retry.
NO_ANSWER = (ConnectError, ConnectingCancelledError, CancelledError, TimeoutError, ResponseFailed,
             ResponseNeverReceived, RequestTransmissionFailed)

#: Enough of an answer for its JSON; a portal that answers megabytes is cut short.
MAX_ANSWER_BYTES = 64 * 1024


class PortalError(Exception):
    """No answer from the portal: cannot connect, dropped, or too slow. Worth a retry."""


@dataclass(frozen=True)
class PortalAnswer:
    """The portal's answer: the HTTP status and the JSON fields (empty when there was no JSON)."""

    http_status: int
    code: str = ""  # maKetQua
    ma_giao_dich: str = ""
    received_at: str = ""  # thoiGianTiepNhan, yyyyMMddHHmmss
    message: str = ""  # thongDiep

    @property
    def unauthenticated(self) -> bool:
        return self.http_status == 401 or self.code == "401"


@dataclass(frozen=True)
class _Token:
    access_token: str
    id_token: str


class _Body(Protocol):
    def __init__(self, finished: Deferred) -> None:
        self.finished = finished
        self.data = bytearray()

    def dataReceived(self, data: bytes) -> None:
        if len(self.data) < MAX_ANSWER_BYTES:
            self.data += data[:MAX_ANSWER_BYTES - len(self.data)]

    def connectionLost(self, reason=None) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(bytes(self.data))
        else:
            self.finished.errback(reason)


def parse_answer(status: int, body: bytes) -> PortalAnswer:
    try:
        fields = json.loads(body)
    except ValueError:
        return PortalAnswer(status, message=body[:500].decode("utf-8", "replace").strip())
    if not isinstance(fields, dict):
        return PortalAnswer(status, message=str(fields)[:500])
    text = {k: "" if fields.get(k) is None else str(fields.get(k)) for k in
            ("maKetQua", "maGiaoDich", "thoiGianTiepNhan", "thongDiep")}
    return PortalAnswer(status, text["maKetQua"], text["maGiaoDich"], text["thoiGianTiepNhan"], text["thongDiep"])


class PortalClient:
    def __init__(self, base_url: str, username: str, password: str, ma_tinh: str, standard: str, reactor, clock,
                 connect_timeout: float, response_timeout: float) -> None:
        self._base = base_url.rstrip("/")
        self.username = username
        self._hash = password_hash(password)
        self.ma_tinh = ma_tinh
        self.standard = standard
        self._clock = clock
        self._timeout = response_timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._agent = Agent(reactor, connectTimeout=connect_timeout, pool=self._pool)
        self._token: _Token | None = None
        #: Deliveries waiting for the login in progress: one login serves every row in flight.
        self._waiting: list[Deferred] = []
        self.logins = 0

    @inlineCallbacks
    def _post(self, path: str, form: dict, headers: dict[str, str] | None = None):
        sent = Headers({b"content-type": [b"application/x-www-form-urlencoded"], b"user-agent": [b"hssk-gateway"]})
        for name, value in (headers or {}).items():
            sent.addRawHeader(name.encode("ascii"), value.encode("latin-1"))
        body = FileBodyProducer(BytesIO(urlencode(form).encode("ascii")))
        request = self._agent.request(b"POST", f"{self._base}/{path}".encode("ascii"), sent, body)
        request.addTimeout(self._timeout, self._clock)
        try:
            response = yield request
            finished: Deferred = Deferred()
            response.deliverBody(_Body(finished))
            finished.addTimeout(self._timeout, self._clock)
            data = yield finished
        except NO_ANSWER as e:
            raise PortalError(_describe(e)) from e
        return response.code, data

    @inlineCallbacks
    def login(self):
        """A new token (``POST /api/token/take``); PortalError, or the portal's refusal as an answer."""
        status, body = yield self._post(TOKEN_PATH, {"username": self.username, "password": self._hash})
        try:
            fields = json.loads(body)
            key = fields["APIKey"] if str(fields.get("maKetQua")) == "200" else None
            token = _Token(str(key["access_token"]), str(key["id_token"])) if key else None
        except (ValueError, KeyError, TypeError, AttributeError):
            token = None
        if token is None:
            refused = parse_answer(status, body)
            log.warn("the BHXH portal refused the login of {username}: {code} {text}", username=self.username,
                     code=refused.code or f"HTTP {status}", text=refused.message)
            return refused
        log.info("logged in to the BHXH portal as {username}", username=self.username)
        self.logins += 1
        self._token = token
        return None

    def _shared_login(self) -> Deferred:
        """The login in progress, or a new one: rows that find no token at once share one login."""
        waiting: Deferred = Deferred()
        self._waiting.append(waiting)
        if len(self._waiting) == 1:
            self.login().addBoth(self._logged_in)
        return waiting

    def _logged_in(self, result) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    @inlineCallbacks
    def send(self, kind: str, ma_cskcb: str, file_base64: str):
        """Send one file (check-in or claim) and return the :class:`PortalAnswer`; logs in first
        when there is no token yet, and once more when the portal answers 401."""
        for _ in range(2):
            if self._token is None:
                refused = yield self._shared_login()
                if refused is not None:
                    return refused
            token = self._token
            if token is None:  # another row's 401 dropped the token just taken: that row logs in again
                return PortalAnswer(401, "401", message="the token was dropped by another row's 401")
            form = {"username": self.username, "loaiHoSo": LOAI_HO_SO[kind], "maTinh": self.ma_tinh,
                    "maCSKCB": ma_cskcb, "fileHSBase64": file_base64}
            status, body = yield self._post(endpoint_path(kind, self.standard), form, {
                "accessToken": token.access_token, "tokenId": token.id_token, "passwordHash": self._hash})
            answer = parse_answer(status, body)
            if not answer.unauthenticated:
                return answer
            log.info("the BHXH portal answered 401 to {username}'s token: logging in again", username=self.username)
            self._token = None
        return answer

    def close(self) -> Deferred:
        return self._pool.closeCachedConnections()


def _describe(error: Exception) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return str(error) or type(error).__name__

