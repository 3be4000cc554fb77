"""Failed authentications per peer address, so that a token cannot be guessed at line rate.

After ``auth.max_failures`` wrong credentials within ``auth.failure_window_seconds``, a peer
address is refused for ``auth.lockout_seconds``, whatever it sends: a correct token from a locked
peer is not even looked at, or guessing would simply go on and the first hit would get through.
The HTTP resources ask :meth:`AuthFailureLimiter.retry_after` before they check credentials and
tell it about each wrong credential with :meth:`AuthFailureLimiter.failed`.

What counts is a credential presented and wrong (an ``Authorization`` header that names no
client, a wrong admin token). A request with no credentials guesses nothing, and is refused or
let in by ``auth.required`` as before. A success does not clear a peer's failures: several
systems behind one NAT address share it, and a working HIS there must not wipe out the count of
a guesser beside it. Failures simply age out of the window.

State is held per peer address for at most ``auth.max_tracked_peers`` peers; past that the peer
that failed least recently is forgotten, so a flood from many addresses costs bounded memory
(and frees the oldest lockouts first). Time comes from the injected clock (invariant 7).

    >>> from twisted.internet.task import Clock
    >>> clock = Clock()
    >>> limiter = AuthFailureLimiter(clock, max_failures=2, window_seconds=60, lockout_seconds=300)
    >>> limiter.failed("192.0.2.7"); limiter.failed("192.0.2.7")
    >>> limiter.retry_after("192.0.2.7"), limiter.retry_after("192.0.2.8")
    (300, None)
    >>> clock.advance(300); limiter.retry_after("192.0.2.7") is None
    True
"""
from __future__ import annotations

import math
from collections import OrderedDict, deque

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.config import AuthConfig

log = Logger(namespace="hssk.auth")

#: The ``hssk_connections_refused_total`` reason of a request refused because its peer is locked out.
AUTH_RATE_LIMITED = "auth_rate_limited"


class _Peer:
    """One address: the times of its latest failures (at most ``max_failures``), and the end of
    its lockout, if it is locked out."""

    __slots__ = ("failures", "locked_until")

    def __init__(self, max_failures: int) -> None:
        self.failures: deque[float] = deque(maxlen=max_failures)
        self.locked_until: float | None = None


class AuthFailureLimiter:
    """Counts wrong credentials per peer address and locks a peer out once it has too many."""

    def __init__(self, clock: IReactorTime, max_failures: int = 10, window_seconds: float = 60.0,
                 lockout_seconds: float = 300.0, max_peers: int = 10_000) -> None:
        self._clock = clock
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.lockout_seconds = lockout_seconds
        self._max_peers = max_peers
        self._peers: OrderedDict[str, _Peer] = OrderedDict()

    @classmethod
    def from_config(cls, auth: AuthConfig, clock: IReactorTime) -> AuthFailureLimiter:
        return cls(clock, auth.max_failures, auth.failure_window_seconds, auth.lockout_seconds,
                   auth.max_tracked_peers)

    @property
    def tracked_peers(self) -> int:
        """Addresses held now: never more than ``auth.max_tracked_peers``."""
        return len(self._peers)

    def retry_after(self, peer: str) -> int | None:
        """Whole seconds (at least 1) until ``peer`` may present credentials again; None when it
        is not locked out. A lockout that has run out is forgotten here, failures and all."""
        state = self._peers.get(peer)
        if state is None or state.locked_until is None:
            return None
        remaining = state.locked_until - self._clock.seconds()
        if remaining <= 0:
            del self._peers[peer]
            return None
        return max(1, math.ceil(remaining))

    def failed(self, peer: str) -> None:
        """``peer`` presented wrong credentials. The failure that makes ``max_failures`` within
        the window locks it out, and that is logged once (the address and the count, never
        what was presented)."""
        now = self._clock.seconds()
        state = self._peers.pop(peer, None)
        if state is None or state.locked_until is not None and state.locked_until <= now:
            state = _Peer(self.max_failures)
        self._peers[peer] = state
        if state.locked_until is not None:
            return
        state.failures.append(now)
        if len(state.failures) == self.max_failures and now - state.failures[0] <= self.window_seconds:
            state.locked_until = now + self.lockout_seconds
            state.failures.clear()
            log.warn("locking out peer {peer} for {lockout_seconds:g} s: {failures} failed authentications within "
                     "{window_seconds:g} s (auth.max_failures, auth.failure_window_seconds)", peer=peer,
                     failures=self.max_failures, window_seconds=self.window_seconds,
                     lockout_seconds=self.lockout_seconds)
        while len(self._peers) > self._max_peers:
            self._peers.popitem(last=False)

    def refusal_text(self, peer: str, retry_after: int) -> str:
        """What a locked-out peer is told: why, and when it may try again."""
        return (f"{peer} presented wrong credentials {self.max_failures} times within {self.window_seconds:g} s "
                f"(auth.max_failures); no credentials from it are checked for {retry_after} s more "
                f"(auth.lockout_seconds)")
