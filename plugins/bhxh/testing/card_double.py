"""A stand-in for the BHXH portal's card check (vn-standards §2.2, §2.5): a real twisted.web
resource that answers ``POST /api/egw/KQNhanLichSuKCB2024`` as the portal does, from the card
holders a test gives it.

It checks what the portal checks, in the portal's order: the token in the query (HTTP 401 and
``maKetQua`` 401 when it is unknown or expired), the body (205 when it is not JSON with every
field), the lookup staff (054 CCCD not registered, 055 name not matching it), the card code's
shape (051), the holder by the BHXH number in the card's last ten digits (050), the code's
beneficiary group (051), benefit level (053, character 3) and province (052, characters 4–5),
the name (060, or 061 when the first letter matches) and the birth date (070; a year alone
matches the year). Then the holder's own ``result``: 000 unless the test says 001, 002, 003/004
(with the new card's fields), 010, 100, 101, 110, 120–124, 130 or 500.

:class:`TokenIssuer` is the token logic alone (``/api/token/take``): the accounts it knows, the
tokens it gave and when they expire on its clock, so a test can expire them in the middle of a
run (:meth:`TokenIssuer.expire_all`). :class:`CardCheckResource` takes an issuer, so the portal
double of the claim submission (``portal_double.py``) and this one can share one: mount the
resource under its ``api`` child with :func:`mount_card_check`. Until then
:func:`card_portal_root` gives a root of its own, token endpoint included.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from twisted.internet import reactor as default_reactor
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gateway.plugin import fold_name

_CARD = re.compile(r"[A-Z]{2}[1-5]\d{12}")
_BHXH_NUMBER = re.compile(r"\d{10}")
_FIELDS = ("maThe", "hoTen", "ngaySinh", "hoTenCb", "cccdCb")


def md5_upper(password: str) -> str:
    return hashlib.md5(password.encode("utf-8")).hexdigest().upper()


class TokenIssuer:
    """The portal's accounts and tokens. ``accounts`` maps a username to its password (clear:
    the issuer compares hashes); a token lives ``lifetime`` seconds on ``clock``."""

    def __init__(self, accounts: dict[str, str], lifetime: float = 3600.0, clock: IReactorTime | None = None) -> None:
        self.accounts = {user: md5_upper(password) for user, password in accounts.items()}
        self.lifetime = lifetime
        self.clock = clock or default_reactor
        self._tokens: dict[tuple[str, str], float] = {}
        self._serial = itertools.count(1)
        self.logins = 0

    def take(self, username: str, password_hash: str) -> dict:
        """The answer of ``/api/token/take`` to this form."""
        self.logins += 1
        if self.accounts.get(username) != password_hash:
            return {"maKetQua": "401", "APIKey": None, "thongDiep": "Sai tên đăng nhập hoặc mật khẩu"}
        n = next(self._serial)
        access, id_token = f"access-{n}", f"id-{n}"
        expires = self.clock.seconds() + self.lifetime
        self._tokens[(access, id_token)] = expires
        return {"maKetQua": "200", "APIKey": {
            "access_token": access, "id_token": id_token, "token_type": "Bearer", "username": username,
            "expires_in": datetime.fromtimestamp(expires, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")}}

    def valid(self, access: str, id_token: str) -> bool:
        expires = self._tokens.get((access, id_token))
        return expires is not None and self.clock.seconds() < expires

    def expire_all(self) -> None:
        """Every token given so far dies now (as when the portal restarts)."""
        self._tokens.clear()


class TokenResource(Resource):
    """``POST /api/token/take``: a form of ``username`` and ``password`` (MD5, upper-case hex)."""

    isLeaf = True

    def __init__(self, issuer: TokenIssuer) -> None:
        super().__init__()
        self.issuer = issuer

    def render_POST(self, request) -> bytes:
        def arg(name: bytes) -> str:
            return (request.args.get(name) or [b""])[0].decode("utf-8", "replace")

        return _json(request, self.issuer.take(arg(b"username"), arg(b"password")))


@dataclass(frozen=True)
class CardHolder:
    """One card as BHXH knows it. Dates are ``dd/MM/yyyy``, as the portal writes them.
    ``result`` is what a correct question about it is answered (vn-standards §2.5)."""

    card: str
    name: str
    birth: str
    result: str = "000"
    sex: str = "Nam"
    address: str = "Phường Bến Nghé, TP Hồ Chí Minh"
    registered_facility: str = "79001"
    valid_from: str = "01/01/2026"
    valid_to: str = "31/12/2026"
    new_card: str = ""
    new_valid_from: str = "01/01/2027"
    new_valid_to: str = "31/12/2027"
    new_registered_facility: str = "79002"


class CardCheckResource(Resource):
    """``POST /api/egw/KQNhanLichSuKCB2024?token=&id_token=&username=&password=``.

    ``staff`` maps each registered lookup staff CCCD to the staff member's name. ``requests``
    lists the bodies of the requests that got past the token, in order; ``faults`` are served
    first, one per request: ``"http500"`` (an HTML error page), ``"garbage"`` (not JSON) or
    ``"hang"`` (no answer until :meth:`release_all`)."""

    isLeaf = True

    def __init__(self, issuer: TokenIssuer, holders: list[CardHolder] = (), staff: dict[str, str] | None = None) -> None:
        super().__init__()
        self.issuer = issuer
        self.holders = {holder.card[-10:]: holder for holder in holders}
        self.staff = dict(staff or {})
        self.requests: list[dict] = []
        self.refused_tokens = 0
        self.faults: list[str] = []
        self.hanging: list = []

    def add(self, holder: CardHolder) -> None:
        self.holders[holder.card[-10:]] = holder

    def render_POST(self, request):
        def arg(name: bytes) -> str:
            return (request.args.get(name) or [b""])[0].decode("utf-8", "replace")

        if not self.issuer.valid(arg(b"token"), arg(b"id_token")):
            self.refused_tokens += 1
            request.setResponseCode(401)
            return _json(request, {"maKetQua": "401", "ghiChu": "Token không hợp lệ hoặc đã hết hạn"})
        try:
            body = json.loads(request.content.read())
        except ValueError:
            body = None
        self.requests.append(body if isinstance(body, dict) else {})
        if self.faults:
            fault = self.faults.pop(0)
            if fault == "hang":
                self.hanging.append(request)
                request.notifyFinish().addErrback(self._gave_up, request)
                return NOT_DONE_YET
            if fault == "http500":
                request.setResponseCode(500)
                return b"<html><body>Internal Server Error</body></html>"
            return b"<html>not json"
        return _json(request, self.answer(body))

    def _gave_up(self, _, request) -> None:
        """The client dropped a hanging request (its timeout): nothing to answer."""
        if request in self.hanging:
            self.hanging.remove(request)

    def release_all(self) -> None:
        """Answer every hanging request with a 503, as a proxy that gave up would."""
        hanging, self.hanging = self.hanging, []
        for request in hanging:
            request.setResponseCode(503)
            request.finish()

    def answer(self, body: object) -> dict:
        """The portal's answer to one request body, by the checks of the module's docstring."""
        if not isinstance(body, dict) or not all(isinstance(body.get(f), str) and body.get(f) for f in _FIELDS):
            return _result("205", "Sai định dạng tham số")
        staff_name = self.staff.get(body["cccdCb"])
        if staff_name is None:
            return _result("054", "CCCD cán bộ tra cứu chưa được đăng ký")
        if fold_name(staff_name) != fold_name(body["hoTenCb"]):
            return _result("055", "Họ tên cán bộ không khớp CCCD")
        card = body["maThe"].strip().upper()
        if not (_CARD.fullmatch(card) or _BHXH_NUMBER.fullmatch(card)):
            return _result("051", "Mã thẻ không đúng")
        holder = self.holders.get(card[-10:])
        if holder is None:
            return _result("050", "Không có thông tin thẻ")
        if len(card) == 15 and card != holder.card:
            if card[:2] != holder.card[:2]:
                return _result("051", "Mã thẻ không đúng")
            if card[2] != holder.card[2]:
                return _result("053", "Sai mã quyền lợi")
            return _result("052", "Sai mã tỉnh")
        if fold_name(body["hoTen"]) != fold_name(holder.name):
            first = fold_name(body["hoTen"])[:1] == fold_name(holder.name)[:1]
            return _result("061" if first else "060", "Họ tên không đúng")
        birth = body["ngaySinh"].strip()
        if birth != holder.birth and birth != holder.birth[-4:]:
            return _result("070", "Ngày sinh không đúng")
        return self._card_answer(holder)

    def _card_answer(self, holder: CardHolder) -> dict:
        answer = {**_result(holder.result, f"Kết quả {holder.result}"), "maThe": holder.card, "hoTen": holder.name,
                  "ngaySinh": holder.birth, "gioiTinh": holder.sex, "diaChi": holder.address,
                  "maDKBD": holder.registered_facility, "cqBHXH": "BHXH TP Hồ Chí Minh", "gtTheTu": holder.valid_from,
                  "gtTheDen": holder.valid_to, "maKV": "", "ngayDu5Nam": "", "maSoBHXH": holder.card[-10:],
                  "dsLichSuKCB2018": [], "dsLichSuKT2018": []}
        if holder.result in ("003", "004"):
            answer.update({"maTheCu": holder.card, "maTheMoi": holder.new_card, "gtTheTuMoi": holder.new_valid_from,
                           "gtTheDenMoi": holder.new_valid_to, "maDKBDMoi": holder.new_registered_facility,
                           "tenDKBDMoi": "Trạm y tế phường"})
        return answer


def _result(code: str, note: str) -> dict:
    return {"maKetQua": code, "ghiChu": note}


def _json(request, answer: dict) -> bytes:
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps(answer, ensure_ascii=False).encode("utf-8")


def mount_card_check(api: Resource, resource: CardCheckResource) -> None:
    """Put the card check at ``egw/KQNhanLichSuKCB2024`` under a portal double's ``api`` child."""
    egw = Resource()
    egw.putChild(b"KQNhanLichSuKCB2024", resource)
    api.putChild(b"egw", egw)


def card_portal_root(issuer: TokenIssuer, resource: CardCheckResource) -> Resource:
    """A portal root of its own: ``/api/token/take`` and the card check."""
    root, api, token = Resource(), Resource(), Resource()
    token.putChild(b"take", TokenResource(issuer))
    api.putChild(b"token", token)
    mount_card_check(api, resource)
    root.putChild(b"api", api)
    return root


class CardPortalDouble:
    """The standalone double on 127.0.0.1: ``await listen()`` gives its base URL."""

    def __init__(self, accounts: dict[str, str], staff: dict[str, str], holders: list[CardHolder] = (),
                 token_lifetime: float = 3600.0, clock: IReactorTime | None = None) -> None:
        self.issuer = TokenIssuer(accounts, token_lifetime, clock)
        self.cards = CardCheckResource(self.issuer, holders, staff)
        self.port = None

    async def listen(self) -> str:
        site = Site(card_portal_root(self.issuer, self.cards))
        site.noisy = False
        self.port = await TCP4ServerEndpoint(default_reactor, 0, interface="127.0.0.1").listen(site)
        return f"http://127.0.0.1:{self.port.getHost().port}"

    async def stop(self) -> None:
        self.cards.release_all()
        if self.port is not None:
            await maybeDeferred(self.port.stopListening)
