"""A faithful stand-in for the BHXH receiving portal ("Cổng tiếp nhận dữ liệu Hệ thống thông tin
giám định BHYT", vn-standards §2.2–2.4), for tests that must talk to it over a real socket.

It is a twisted.web server on 127.0.0.1 (port 0) that answers as the portal does:

- ``POST /api/token/take``: form ``username`` and ``password`` (MD5, upper-case hex); answers
  ``{"maKetQua": "200", "APIKey": {"access_token", "id_token", "token_type", "username",
  "expires_in"}}``, or ``maKetQua`` 401 for an unknown account or a wrong hash. A token lives
  ``token_lifetime_seconds`` on the double's own ``clock`` (a ``task.Clock`` in a test).
- ``POST /api/qd130/checkInKcbQd{130,4750,3176}`` and ``/api/qd130/guiHoSoXmlQD{130,4750,3176}``:
  headers ``accessToken``, ``tokenId``, ``passwordHash``; form ``username``, ``loaiHoSo`` (0 for
  check-in, 130 for a claim), ``maTinh``, ``maCSKCB``, ``fileHSBase64``. The answer is JSON with
  ``maKetQua``, ``maGiaoDich``, ``thoiGianTiepNhan`` (yyyyMMddHHmmss, Vietnam time) and
  ``thongDiep``.

Its answers, in the order it checks (every code of §2 and §2.6):

=====  ===========================================================================
401    HTTP 401: no, an unknown or an expired token, a tokenId or passwordHash that
       does not match it
403    the form's username is not the token's
205    a form field missing or malformed (loaiHoSo, maTinh 2 digits, maCSKCB 5
       characters, fileHSBase64 not base64)
701    outside the submission window (``window_open = False``)
1001   the file is too big for the time of day: ``peak_limit_bytes`` (20 MB) on
       weekdays 8–11 h and 14–19 h Vietnam time, else ``limit_bytes`` (100 MB)
123    the file is not XML, has the wrong root for the endpoint, its MACSKCB is not
       the form's maCSKCB, or (when ``trusted_certificate`` is set) its CHUKYDONVI
       signature does not verify
200    accepted: kept in :attr:`PortalDouble.accepted` with its maGiaoDich
=====  ===========================================================================

A test scripts anything else with :meth:`PortalDouble.script` / :meth:`fail_next`: the next N
answers of an endpoint may be another ``maKetQua`` (124 save error, 500, 401 …), an HTTP status
(a 503 from the load balancer) or late (a slow portal). Other BHXH helpers mount more of the
portal on the same server with :meth:`PortalDouble.mount` (the card check's
``/api/egw/KQNhanLichSuKCB2024``).

Where the letters are silent, the double chooses and says so: the HTTP status of an auth
failure (401), the code of a bad signature (123, the file-format code), 403 for a username that
is not the token's.
"""
from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import secrets
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone

from lxml import etree
from twisted.internet.defer import Deferred, succeed
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from plugins.bhxh.portal import (CHECK_IN, CLAIM, LOAI_HO_SO, ROOTS, STANDARDS, TOKEN_PATH, VIETNAM, endpoint_path,
                                 password_hash, peak_window_end)
from plugins.bhxh.signing import signature_problem

MiB = 1024 * 1024
TOKEN = "token"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


@dataclass(frozen=True)
class Accepted:
    """One file the double accepted: what an assertion looks at."""

    kind: str  # "checkin" or "claim"
    standard: str  # "130", "4750" or "3176"
    username: str
    ma_tinh: str
    ma_cskcb: str
    file: bytes  # decoded fileHSBase64
    ma_giao_dich: str
    received_at: float  # the double's clock


@dataclass(frozen=True)
class Fault:
    """One scripted answer to the next request of ``endpoint`` (checkin, claim, token, or any):
    a ``code`` (maKetQua) in place of the real answer, or an ``http_status`` with a plain body,
    either after ``delay_seconds`` of real time; ``delay_seconds`` alone answers normally, late."""

    endpoint: str = "any"
    code: str = ""
    http_status: int = 0
    delay_seconds: float = 0.0
    message: str = ""


@dataclass
class _Token:
    username: str
    id_token: str
    expires_at: float


class PortalDouble:
    """The portal: accounts, tokens, the fault script and what it accepted.

    ``clock`` decides token expiry, ``thoiGianTiepNhan`` and the time-of-day size limit (a
    ``task.Clock`` lets a test move it); ``reactor`` listens and runs slow answers' delays.
    ``trusted_certificate`` (PEM) makes the double verify each claim's CHUKYDONVI signature.
    """

    def __init__(self, *, clock=None, reactor=None, token_lifetime_seconds: float = 3600.0,
                 peak_limit_bytes: int = 20 * MiB, limit_bytes: int = 100 * MiB,
                 trusted_certificate: bytes | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor  # the installed one, looked up when used
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.token_lifetime_seconds = token_lifetime_seconds
        self.peak_limit_bytes = peak_limit_bytes
        self.limit_bytes = limit_bytes
        self.trusted_certificate = trusted_certificate
        self.window_open = True
        self.accounts: dict[str, str] = {}
        self.accepted: list[Accepted] = []
        #: Every answer given, in order: (endpoint kind, maKetQua or HTTP status as text).
        self.answers: list[tuple[str, str]] = []
        self.logins = 0
        self._tokens: dict[str, _Token] = {}
        self._script: deque[Fault] = deque()
        self._numbers = itertools.count(1)
        self.root = Resource()
        self._port = None
        self.mount(TOKEN_PATH, _TokenResource(self))
        for standard in STANDARDS:
            for kind in (CHECK_IN, CLAIM):
                self.mount(endpoint_path(kind, standard), _FileResource(self, kind, standard))

    # --- set-up ---------------------------------------------------------------------------------

    def add_account(self, username: str, password: str) -> PortalDouble:
        """A facility account (``xxxxx_BV``) and its password in clear; the double keeps its hash."""
        self.accounts[username] = password_hash(password)
        return self

    def mount(self, path: str, resource: Resource) -> Resource:
        """Serve ``resource`` at ``path`` (``"api/egw/KQNhanLichSuKCB2024"``), making the folders
        on the way: how another module adds a part of the portal to the same server."""
        *folders, leaf = path.strip("/").split("/")
        node = self.root
        for folder in folders:
            name = folder.encode("ascii")
            child = node.children.get(name)
            if child is None:
                child = Resource()
                node.putChild(name, child)
            node = child
        node.putChild(leaf.encode("ascii"), resource)
        return resource

    def site(self) -> Site:
        """The twisted.web site of this portal, to listen on elsewhere (TLS, a fixed port)."""
        return Site(self.root)

    def start(self) -> PortalDouble:
        self._port = self.reactor.listenTCP(0, self.site(), interface="127.0.0.1")
        return self

    @property
    def url(self) -> str:
        """The base URL a ``bhxh`` destination's ``url`` takes (no trailing slash)."""
        return f"http://127.0.0.1:{self._port.getHost().port}"

    def stop(self) -> Deferred:
        port, self._port = self._port, None
        return port.stopListening() if port is not None else succeed(None)

    # --- the fault script -------------------------------------------------------------------------

    def script(self, *faults: Fault) -> PortalDouble:
        """Answer the next matching requests with these faults, in order."""
        self._script.extend(faults)
        return self

    def fail_next(self, count: int, code: str = "", *, endpoint: str = CLAIM, http_status: int = 0,
                  delay_seconds: float = 0.0) -> PortalDouble:
        """``count`` times the same fault: ``fail_next(2, "124")``, ``fail_next(1, http_status=503)``."""
        return self.script(*[Fault(endpoint, code, http_status, delay_seconds)] * count)

    def expire_tokens(self) -> None:
        """Every token issued so far is expired from now on (a portal restart)."""
        for token in self._tokens.values():
            token.expires_at = min(token.expires_at, self.clock.seconds())

    def _next_fault(self, kind: str) -> Fault | None:
        for fault in self._script:
            if fault.endpoint in (kind, "any"):
                self._script.remove(fault)
                return fault
        return None

    # --- answering --------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc)

    def _answer(self, request, kind: str, compute) -> int:
        """Apply the script, then answer with ``compute(request)`` → (HTTP status, JSON body)."""
        fault = self._next_fault(kind)
        if fault is None:
            status, body = compute(request)
        elif fault.http_status:
            status, body = fault.http_status, None
        elif fault.code:
            status, body = 200, self._result(fault.code, fault.message or f"scripted answer {fault.code}")
        else:
            status, body = compute(request)
        self.answers.append((kind, str(body["maKetQua"]) if body is not None else f"HTTP {status}"))

        def write() -> None:
            request.setResponseCode(status)
            if body is None:
                request.setHeader(b"content-type", b"text/plain")
                request.write(b"Service Unavailable")
            else:
                request.setHeader(b"content-type", b"application/json; charset=utf-8")
                request.write(json.dumps(body, ensure_ascii=False).encode("utf-8"))
            request.finish()

        if fault is not None and fault.delay_seconds > 0:
            call = self.reactor.callLater(fault.delay_seconds, write)
            request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
        else:
            write()
        return NOT_DONE_YET

    def _result(self, code: str, message: str, ma_giao_dich: str = "") -> dict:
        return {"maKetQua": code, "maGiaoDich": ma_giao_dich,
                "thoiGianTiepNhan": self._now().astimezone(VIETNAM).strftime("%Y%m%d%H%M%S"), "thongDiep": message}

    def _take_token(self, request) -> tuple[int, dict]:
        username = _form(request, "username")
        password = _form(request, "password")
        if not username or self.accounts.get(username) != password:
            return 200, {"maKetQua": "401", "thongDiep": "Sai tài khoản hoặc mật khẩu"}
        self.logins += 1
        access_token = secrets.token_hex(16)
        token = _Token(username, secrets.token_hex(8), self.clock.seconds() + self.token_lifetime_seconds)
        self._tokens[access_token] = token
        expires = datetime.fromtimestamp(token.expires_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, {"maKetQua": "200", "APIKey": {"access_token": access_token, "id_token": token.id_token,
                                                   "token_type": "bearer", "username": username,
                                                   "expires_in": expires}}

    def _receive(self, request, kind: str, standard: str) -> tuple[int, dict]:
        token = self._tokens.get((request.getHeader(b"accesstoken") or b"").decode("latin-1"))
        if (token is None or token.expires_at <= self.clock.seconds()
                or (request.getHeader(b"tokenid") or b"").decode("latin-1") != token.id_token
                or (request.getHeader(b"passwordhash") or b"").decode("latin-1") != self.accounts.get(token.username)):
            return 401, self._result("401", "Chưa xác thực: token không hợp lệ hoặc đã hết hạn")
        if _form(request, "username") != token.username:
            return 200, self._result("403", "Tài khoản không được phép gửi hồ sơ này")
        problem = self._form_problem(request, kind)
        if problem:
            return 200, self._result("205", problem)
        if not self.window_open:
            return 200, self._result("701", "Ngoài thời gian tiếp nhận hồ sơ")
        data = base64.b64decode(_form(request, "fileHSBase64"))
        limit = self.peak_limit_bytes if peak_window_end(self._now()) else self.limit_bytes
        if len(data) > limit:
            return 200, self._result("1001", f"Dung lượng file vượt quá {limit} byte")
        problem = self._file_problem(data, kind, _form(request, "maCSKCB"))
        if problem:
            return 200, self._result("123", problem)
        number = f"{self._now().astimezone(VIETNAM):%Y%m%d}{next(self._numbers):08d}"
        self.accepted.append(Accepted(kind, standard, token.username, _form(request, "maTinh"),
                                      _form(request, "maCSKCB"), data, number, self.clock.seconds()))
        return 200, self._result("200", "Tiếp nhận thành công", number)

    def _form_problem(self, request, kind: str) -> str:
        if _form(request, "loaiHoSo") != LOAI_HO_SO[kind]:
            return f"loaiHoSo phải là {LOAI_HO_SO[kind]}"
        if not re.fullmatch(r"\d{2}", _form(request, "maTinh")):
            return "maTinh không đúng định dạng (2 chữ số)"
        if len(_form(request, "maCSKCB")) != 5:
            return "maCSKCB không đúng định dạng (5 ký tự)"
        encoded = _form(request, "fileHSBase64")
        if not encoded:
            return "Thiếu fileHSBase64"
        try:
            base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return "fileHSBase64 không phải base64"
        return ""

    def _file_problem(self, data: bytes, kind: str, ma_cskcb: str) -> str:
        try:
            root = etree.fromstring(data, _PARSER)
        except etree.XMLSyntaxError as e:
            return f"Sai định dạng file: {e}"
        if root.tag != ROOTS[kind]:
            return f"Sai định dạng file: thẻ gốc {root.tag}, cần {ROOTS[kind]}"
        if kind == CLAIM and root.findtext("THONGTINDONVI/MACSKCB") != ma_cskcb:
            return "MACSKCB trong file khác maCSKCB"
        if kind == CLAIM and self.trusted_certificate is not None:
            problem = signature_problem(data, self.trusted_certificate)
            if problem:
                return f"Chữ ký số không hợp lệ: {problem}"
        return ""


def _form(request, name: str) -> str:
    values = request.args.get(name.encode("ascii"))
    return values[0].decode("utf-8", "replace") if values else ""


class _TokenResource(Resource):
    isLeaf = True

    def __init__(self, portal: PortalDouble) -> None:
        super().__init__()
        self.portal = portal

    def render_POST(self, request):
        return self.portal._answer(request, TOKEN, self.portal._take_token)


class _FileResource(Resource):
    isLeaf = True

    def __init__(self, portal: PortalDouble, kind: str, standard: str) -> None:
        super().__init__()
        self.portal, self.kind, self.standard = portal, kind, standard

    def render_POST(self, request):
        return self.portal._answer(request, self.kind,
                                   lambda r: self.portal._receive(r, self.kind, self.standard))
