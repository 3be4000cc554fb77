"""The BHXH portal's API on the gateway's own HTTP listener (vn-standards §2.2–2.4), so a HIS that
submits to the portal re-points to the gateway by changing only the host: ``POST /api/token/take``,
the check-in endpoints ``/api/qd130/checkInKcbQd130|Qd4750|Qd3176`` and the submission endpoints
``/api/qd130/guiHoSoXmlQD130|QD4750|QD3176``, with the portal's form fields, headers and answers.

A facility logs in with its own account, as it does at the portal: ``username`` and the MD5 of
its password in upper-case hex. The gateway keeps neither: ``[plugins.bhxh.accounts.USERNAME]``
holds the SHA-256 of that MD5 string and the ``[clients.NAME]`` the account sends as, whose
facilities bind what it may send for, as for every intake endpoint. A login gets a token that
expires after ``token_seconds``; the HIS sends it back in the ``accessToken`` and ``tokenId``
headers and logs in again when told ``401``, as portal clients do. Tokens live in memory: after a
restart every HIS logs in again, which is what it does when the portal's token expires.

The file (``fileHSBase64``) goes through the normal XML 130 intake, so it is journaled, answered
only after the commit, a resend answered as the first copy was, and routed to the destinations;
``maGiaoDich`` is the journal id of the file, which an operator finds with
``hssk-gateway messages show ID``.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.plugin import (CHECK_IN_DOCUMENT, CLAIM_DOCUMENT, XML_130, ConfigError, DocumentRequest,
                            GatewayConfig, HttpAnswer, HttpCall, HttpRoute, Outcome, decode_file_field, form_problem,
                            portal_body, portal_code, portal_message, wrong_parameter)

log = Logger(namespace="hssk.bhxh.intake")

#: The endpoint families of the three eras of the portal API (QĐ 130 by CV 3190, QĐ 4750 by
#: CV 1245, QĐ 3176): (path, kind of file, ``loaiHoSo``).
ENDPOINTS = tuple(
    (f"api/qd130/{name}", document, file_type)
    for era in ("130", "4750", "3176")
    for name, document, file_type in ((f"checkInKcbQd{era}", CHECK_IN_DOCUMENT, "0"),
                                      (f"guiHoSoXmlQD{era}", CLAIM_DOCUMENT, "130")))
TOKEN_PATH = "api/token/take"
#: The portal's form has five fields; a client may add a few of its own, not thousands.
MAX_FORM_FIELDS = 32
#: ``expires_in`` as a UTC date and time (the portal's field holds one, §2.2).
EXPIRY_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
#: Retry-After of a "124" (not stored now), as the gateway's own endpoints send it.
RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True)
class Account:
    """A facility's portal account: its ``username`` (``79025_BV``), the ``[clients.NAME]`` it
    sends as, and the SHA-256 of the upper-case hex MD5 of its password."""

    username: str
    client: str
    password_sha256: str

    def password_matches(self, md5_hex: str) -> bool:
        digest = hashlib.sha256(md5_hex.strip().upper().encode("utf-8")).hexdigest()
        return hmac.compare_digest(digest, self.password_sha256.lower())


@dataclass(frozen=True)
class Session:
    account: Account
    id_token: str
    expires_at: float


def password_sha256(password: str) -> str:
    """What ``password_sha256`` holds for a plain ``password``: SHA-256 of its MD5 in upper-case hex."""
    md5 = hashlib.md5(password.encode("utf-8")).hexdigest().upper()
    return hashlib.sha256(md5.encode("utf-8")).hexdigest()


def accounts_from(config: GatewayConfig, table: Mapping[str, Any], key: str) -> dict[str, Account]:
    """``[plugins.bhxh.accounts]``, each checked against the clients configured."""
    accounts = table.get("accounts", {})
    if not isinstance(accounts, Mapping):
        raise ConfigError(key, 'a table of USERNAME = { client = "...", password_sha256 = "..." }')
    clients = {c.name for c in config.clients}
    found = {}
    for username, entry in accounts.items():
        where = f"{key}.{username}"
        if not isinstance(entry, Mapping) or set(entry) != {"client", "password_sha256"}:
            raise ConfigError(where, "needs client (a [clients.NAME]) and password_sha256, and nothing else")
        if entry["client"] not in clients:
            raise ConfigError(f"{where}.client", f"{entry['client']!r} is not a configured [clients.NAME] "
                                                 f"(the client names the facilities the account may send for)")
        if not isinstance(entry["password_sha256"], str) or not _SHA256_HEX.fullmatch(entry["password_sha256"]):
            raise ConfigError(f"{where}.password_sha256", "64 hex digits: the SHA-256 of the password's upper-case "
                                                          "MD5 ('hssk-gateway bhxh password-hash' makes it)")
        found[username] = Account(username, entry["client"], entry["password_sha256"])
    return found


class Tokens:
    """The tokens handed out, by access token; ``clock`` (IReactorTime) says when one expires."""

    def __init__(self, clock, lifetime: float) -> None:
        self._clock = clock
        self.lifetime = lifetime
        self._sessions: dict[str, Session] = {}

    def issue(self, account: Account) -> tuple[str, Session]:
        now = self._clock.seconds()
        self._sessions = {t: s for t, s in self._sessions.items() if s.expires_at > now}
        token = secrets.token_urlsafe(32)
        session = Session(account, secrets.token_urlsafe(16), now + self.lifetime)
        self._sessions[token] = session
        return token, session

    def session(self, access_token: str, id_token: str) -> Session | str:
        """The session of these headers, or why there is none (the ``thongDiep`` of a 401)."""
        session = self._sessions.get(access_token) if access_token else None
        if session is None or not hmac.compare_digest(session.id_token, id_token):
            return "accessToken / tokenId không hợp lệ / unknown token: log in at /api/token/take"
        if session.expires_at <= self._clock.seconds():
            del self._sessions[access_token]
            return "Token đã hết hạn / the token has expired: log in again at /api/token/take"
        return session


class PortalIntake:
    """The routes, over one account list and token store."""

    def __init__(self, accounts: Mapping[str, Account], tokens: Tokens) -> None:
        self.accounts = dict(accounts)
        self.tokens = tokens

    def routes(self) -> list[HttpRoute]:
        routes = [HttpRoute(TOKEN_PATH, self.take_token)]
        for path, document, file_type in ENDPOINTS:
            routes.append(HttpRoute(path, _bound(self.receive, document, file_type)))
        return routes

    def take_token(self, call: HttpCall) -> HttpAnswer | Deferred:
        if call.retry_after is not None:
            return _locked_out(call)
        d = call.form(MAX_FORM_FIELDS)
        d.addCallbacks(self._login, _not_a_form, callbackArgs=(call,), errbackArgs=(call,))
        return d

    def _login(self, fields: dict[str, str], call: HttpCall) -> HttpAnswer:
        account = self.accounts.get(fields.get("username", ""))
        if account is None or not account.password_matches(fields.get("password", "")):
            call.credentials_failed()
            log.warn("refused a BHXH portal login from {peer}: {why}", peer=call.peer,
                     why="unknown username" if account is None else "wrong password")
            return HttpAnswer.json({"maKetQua": "401", "thongDiep": "Sai tên đăng nhập hoặc mật khẩu / wrong username "
                                                                    "or password (password: MD5, upper-case hex)"})
        token, session = self.tokens.issue(account)
        log.info("BHXH portal login of {username} from {peer}", username=account.username, peer=call.peer)
        expires = datetime.fromtimestamp(session.expires_at, timezone.utc).strftime(EXPIRY_FORMAT)
        return HttpAnswer.json({"maKetQua": "200", "APIKey": {
            "access_token": token, "id_token": session.id_token, "token_type": "Bearer",
            "username": account.username, "expires_in": expires}})

    def receive(self, call: HttpCall, document: str, file_type: str) -> HttpAnswer | Deferred:
        """A check-in or claim file: token, form, then the normal intake."""
        if call.retry_after is not None:
            return _locked_out(call)
        session = self.tokens.session(call.header("accessToken"), call.header("tokenId"))
        if isinstance(session, str):
            return _portal(call, "401", f"Chưa xác thực / not authenticated: {session}")
        d = call.form(MAX_FORM_FIELDS)
        d.addCallback(_with_file)
        d.addCallbacks(self._submit, _not_a_form, callbackArgs=(call, session, document, file_type),
                       errbackArgs=(call,))
        return d

    def _submit(self, form: tuple[dict[str, str], bytes | None], call: HttpCall, session: Session, document: str,
                file_type: str) -> HttpAnswer | Deferred:
        fields, raw = form
        account = session.account
        password = call.header("passwordHash")
        if fields.get("username", "") != account.username or (password and not account.password_matches(password)):
            call.credentials_failed()
            return _portal(call, "401", f"Chưa xác thực / not authenticated: the form's username and the "
                                        f"passwordHash header must be those of the token's account "
                                        f"{account.username!r}")
        problem = form_problem(fields, raw, file_type, document)
        if problem is not None:
            return _portal(call, "205", problem)
        d = call.submit(raw, source=XML_130, client=account.client,
                        request=DocumentRequest(document, fields["maCSKCB"]))
        d.addCallback(_answer, call)
        return d


def _bound(receive, document: str, file_type: str):
    return lambda call: receive(call, document, file_type)


def _with_file(fields: dict[str, str]) -> Deferred:
    """The form and its decoded file: base64 of tens of megabytes is decoded on a thread."""
    d = deferToThread(decode_file_field, fields.get("fileHSBase64", ""))
    d.addCallback(lambda raw: (fields, raw))
    return d


def _answer(outcome: Outcome, call: HttpCall) -> HttpAnswer:
    code = portal_code(outcome)
    transaction = "" if outcome.message_id is None else str(outcome.message_id)
    headers = {"retry-after": str(RETRY_AFTER_SECONDS)} if code == "124" else {}
    return HttpAnswer.json(portal_body(code, transaction, call.received_at, portal_message(code, outcome)),
                           headers=headers)


def _portal(call: HttpCall, code: str, message: str, headers: Mapping[str, str] | None = None) -> HttpAnswer:
    return HttpAnswer.json(portal_body(code, "", call.received_at, message), headers=headers)


def _locked_out(call: HttpCall) -> HttpAnswer:
    return _portal(call, "429", f"Xác thực sai quá nhiều lần / too many wrong credentials from this address: send "
                                f"again in {call.retry_after} s", {"retry-after": str(call.retry_after)})


def _not_a_form(failure: Failure, call: HttpCall) -> HttpAnswer:
    failure.trap(ValueError)
    return _portal(call, "205", wrong_parameter(failure.getErrorMessage()))
