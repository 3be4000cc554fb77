"""A client of the BHXH portal's card check: the token, and ``KQNhanLichSuKCB2024``.

The portal (vn-standards §2.2, §2.5) gives a token for the facility account at
``POST /api/token/take`` (a form: ``username`` and the password's MD5 in upper-case hex) and
takes it back as query parameters of each lookup. Its answer says when it expires
(``expires_in``, a UTC date and time); :class:`TokenKeeper` keeps it until shortly before then,
and every caller waiting meanwhile shares one login. A lookup answered 401 (the HTTP status or
``maKetQua``: the portal dropped the token before its time, or restarted) logs in again once and
asks again; a second 401 is the account's fault and fails with :class:`PortalRefused`, never a
loop. What is no answer at all (a refused connection, a 5xx, a body that is not JSON, no answer
within ``timeout_seconds``) fails with :class:`PortalUnavailable`.

twisted.web's Agent, with a persistent connection pool: a card check is one small request to one
origin, a few per second at most, so the destination's hand-made client
(``gateway/destinations/http_client.py``, written for deep outbox drains) buys nothing here.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from io import BytesIO
from urllib.parse import urlencode

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers

from plugins.bhxh.portal import password_hash

TOKEN_PATH = "/api/token/take"
CARD_PATH = "/api/egw/KQNhanLichSuKCB2024"
#: A token is renewed this long before the portal says it expires, so no request carries one
#: that dies on the way.
TOKEN_MARGIN_SECONDS = 30.0
#: How long a token whose expiry the portal wrote in a form we cannot read is kept.
UNKNOWN_EXPIRY_SECONDS = 300.0
#: An answer longer than this is not the portal's (a card with its whole history is a few kB).
MAX_BODY_BYTES = 1024 * 1024
_EXPIRY_FORMATS = ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S")


class PortalUnavailable(Exception):
    """The portal gave no usable answer (network, 5xx, not JSON, too slow)."""


class PortalRefused(Exception):
    """The portal refused the account: a login refused, or a fresh token answered 401 again."""


@dataclass(frozen=True)
class Token:
    access_token: str
    id_token: str
    username: str
    expires_at: float


def expiry_seconds(expires_in: object, now: float) -> float:
    """When a token expires, as the clock counts: the portal writes a UTC date and time; a number
    is taken as seconds from now; anything else keeps the token :data:`UNKNOWN_EXPIRY_SECONDS`."""
    if isinstance(expires_in, (int, float)) or (isinstance(expires_in, str) and expires_in.strip().isdigit()):
        return now + float(expires_in)
    text = str(expires_in).strip().removesuffix("Z")
    for form in _EXPIRY_FORMATS:
        try:
            return datetime.strptime(text, form).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    return now + UNKNOWN_EXPIRY_SECONDS


class TokenKeeper:
    """The current token: ``login()`` fires with the portal's ``APIKey`` object; callers that ask
    while a login is under way wait for that one."""

    def __init__(self, login: Callable[[], Deferred], clock: IReactorTime) -> None:
        self._login = login
        self._clock = clock
        self._token: Token | None = None
        self._waiting: list[Deferred] | None = None
        self.logins = 0

    def token(self) -> Deferred:
        token = self._token
        if token is not None and self._clock.seconds() < token.expires_at - TOKEN_MARGIN_SECONDS:
            return succeed(token)
        if self._waiting is not None:
            d = Deferred()
            self._waiting.append(d)
            return d
        self._waiting = []
        self.logins += 1
        d = self._login().addCallback(self._keep)
        return d.addBoth(self._share)

    def invalidate(self, token: Token) -> None:
        """The portal refused ``token``: the next caller logs in again (unless another already did)."""
        if self._token is token:
            self._token = None

    def _keep(self, key: dict) -> Token:
        try:
            token = Token(str(key["access_token"]), str(key["id_token"]), str(key.get("username", "")),
                          expiry_seconds(key.get("expires_in"), self._clock.seconds()))
        except (KeyError, TypeError) as e:
            raise PortalUnavailable(f"the token answer has no {e}") from None
        self._token = token
        return token

    def _share(self, result):
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
        return result


@dataclass(frozen=True)
class PortalAccount:
    """Who asks: the facility account (``xxxxx_BV``) and the named staff member (CV 1923)."""

    url: str
    username: str
    password: str
    staff_name: str
    staff_cccd: str


class PortalClient:
    """Card checks at one portal, with one token for all of them."""

    def __init__(self, reactor, clock: IReactorTime, account: PortalAccount, timeout_seconds: float) -> None:
        self._clock = clock
        self._account = account
        self._timeout = timeout_seconds
        self._password = password_hash(account.password)
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 4
        self._agent = Agent(reactor, connectTimeout=timeout_seconds, pool=self._pool)
        self.tokens = TokenKeeper(lambda: Deferred.fromCoroutine(self._login()), clock)

    def close(self) -> Deferred:
        return self._pool.closeCachedConnections()

    def card(self, card: str, name: str, birth: str) -> Deferred:
        """Fires with the portal's JSON answer about ``card`` (``maKetQua`` and the card's
        fields); cancelling it drops the request."""
        return Deferred.fromCoroutine(self._card(card, name, birth))

    async def _card(self, card: str, name: str, birth: str) -> dict:
        body = json.dumps({"maThe": card, "hoTen": name, "ngaySinh": birth, "hoTenCb": self._account.staff_name,
                           "cccdCb": self._account.staff_cccd}, ensure_ascii=False).encode("utf-8")
        for _ in (1, 2):
            token = await self.tokens.token()
            query = urlencode({"token": token.access_token, "id_token": token.id_token,
                               "username": self._account.username, "password": self._password})
            code, answer = await self._post(f"{CARD_PATH}?{query}", "application/json", body)
            if code != 401 and str(answer.get("maKetQua", "")) != "401":
                return answer
            self.tokens.invalidate(token)
        raise PortalRefused("the BHXH portal refused a fresh token (401 twice): check the account "
                            "plugins.bhxh.card_check.username and its IP registration (CV 1923)")

    async def _login(self) -> dict:
        form = urlencode({"username": self._account.username, "password": self._password}).encode("ascii")
        _, answer = await self._post(TOKEN_PATH, "application/x-www-form-urlencoded", form)
        key = answer.get("APIKey")
        if str(answer.get("maKetQua", "")) != "200" or not isinstance(key, dict):
            raise PortalRefused(f"the BHXH portal refused the login of {self._account.username!r} "
                                f"(maKetQua {answer.get('maKetQua')!r}): check plugins.bhxh.card_check.username "
                                f"and password")
        return key

    async def _post(self, path: str, content_type: str, body: bytes) -> tuple[int, dict]:
        headers = Headers({b"content-type": [content_type.encode("ascii")]})
        url = (self._account.url.rstrip("/") + path).encode("utf-8")
        try:
            response = await self._agent.request(b"POST", url, headers, FileBodyProducer(BytesIO(body))).addTimeout(
                self._timeout, self._clock)
            data = await _read(response).addTimeout(self._timeout, self._clock)
        except PortalUnavailable:
            raise
        except Exception as e:
            raise PortalUnavailable(f"no answer from the BHXH portal ({type(e).__name__})") from None
        if response.code == 401:
            return 401, {}
        if response.code != 200:
            raise PortalUnavailable(f"the BHXH portal answered HTTP {response.code}")
        try:
            answer = json.loads(data)
        except ValueError:
            raise PortalUnavailable("the BHXH portal's answer is not JSON") from None
        if not isinstance(answer, dict):
            raise PortalUnavailable("the BHXH portal's answer is not a JSON object")
        return response.code, answer


def _read(response) -> Deferred:
    body = _Body()
    response.deliverBody(body)
    return body.done


class _Body(Protocol):
    """A response body, whole, up to :data:`MAX_BODY_BYTES`."""

    def __init__(self) -> None:
        self.done = Deferred()
        self.chunks: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_BODY_BYTES and not self.done.called:
            self.done.errback(PortalUnavailable(f"the BHXH portal's answer is over {MAX_BODY_BYTES} bytes"))
            self.transport.stopProducing()
        self.chunks.append(data)

    def connectionLost(self, reason=None) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(PortalUnavailable("the BHXH portal's answer was cut short"))
