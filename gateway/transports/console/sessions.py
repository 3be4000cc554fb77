"""Console sessions: a browser proves itself once (the admin token on the login form, or being on
the gateway host when there is no token) and then carries a random session id in a cookie that
scripts cannot read (HttpOnly), other sites cannot send (SameSite=Strict) and that lives on the
server only as long as the session: idle for :data:`IDLE_SECONDS` or older than
:data:`LIFETIME_SECONDS`, it is gone. Each session has its own CSRF token, which every form posts.

Sessions are kept in memory: a restart signs everyone out, which for an operator console is a
fair price for holding no credential on disk."""
from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime

IDLE_SECONDS = 30 * 60
LIFETIME_SECONDS = 12 * 3600
#: Sessions kept at most; the oldest goes when a login would pass it (a login loop costs no memory).
MAX_SESSIONS = 200


@dataclass
class Session:
    id: str
    csrf: str
    started: float
    seen: float
    #: Who acts, for logs and decisions (``console from 127.0.0.1``).
    actor: str
    #: Notes for the next page shown (what the last action did), as (kind, text).
    flash: list[tuple[str, str]] = field(default_factory=list)

    def csrf_matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode("utf-8"), self.csrf.encode("utf-8"))


class Sessions:
    """The signed-in browsers, by session id; time from the injected clock."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._by_id: dict[str, Session] = {}

    def start(self, actor: str) -> Session:
        self._expire()
        while len(self._by_id) >= MAX_SESSIONS:
            del self._by_id[min(self._by_id.values(), key=lambda s: s.started).id]
        now = self._clock.seconds()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now, actor)
        self._by_id[session.id] = session
        return session

    def find(self, session_id: str) -> Session | None:
        """The live session with this id, its idle time reset; None when unknown or expired."""
        session = self._by_id.get(session_id)
        if session is None:
            return None
        now = self._clock.seconds()
        if now - session.seen > IDLE_SECONDS or now - session.started > LIFETIME_SECONDS:
            del self._by_id[session_id]
            return None
        session.seen = now
        return session

    def end(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def _expire(self) -> None:
        now = self._clock.seconds()
        for session in [s for s in self._by_id.values()
                        if now - s.seen > IDLE_SECONDS or now - s.started > LIFETIME_SECONDS]:
            del self._by_id[session.id]
