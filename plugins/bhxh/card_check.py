"""The card check as the gateway uses it: the portal client behind a cache, a rate limit and a
circuit breaker, and the portal's answer read into a :class:`CardResult`.

- **Cache** — a card's definitive answer (usable, new card, unusable, wrong data) is kept
  ``cache_seconds`` per card, name and birth date asked (the portal's answer depends on all three),
  so a patient's several messages of one visit cost one lookup. "Not checked" is never cached.
- **Rate limit** — BHXH throttles a facility account; requests leave at most
  ``requests_per_second`` apart, and one that would wait longer than ``max_wait_seconds`` for its
  turn is not made (not checked, "rate limit").
- **Circuit breaker** — after ``breaker_failures`` server failures in a row (no answer, HTTP 5xx,
  codes 100/101/500) the portal is not asked for ``breaker_reset_seconds``: every check fails at
  once ("circuit open") instead of each waiting its timeout. Then one check is let through
  (half-open): its success closes the circuit, its failure opens it again.

All three run on the injected clock, so tests drive them with ``twisted.internet.task.Clock``.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from plugins.bhxh.card_codes import DEFINITIVE, NEW_CARD, SERVER, card_code
from plugins.bhxh.card_client import PortalClient, PortalRefused, PortalUnavailable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CardNotChecked(Exception):
    """The card could not be checked now: ``reason`` says why in words an operator acts on,
    ``code`` is the portal's maKetQua when it gave one."""

    def __init__(self, reason: str, code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class CardResult:
    """A definitive answer, as plain data (it may be pickled to a pipeline child). Dates are
    ``yyyymmdd``; the ``new_*`` fields are set for a new card (003/004)."""

    code: str
    kind: str
    meaning: str
    action: str
    field: str
    card: str
    holder_name: str = ""
    birth_date: str = ""
    valid_from: str = ""
    valid_to: str = ""
    registered_facility: str = ""
    new_card: str = ""
    new_valid_from: str = ""
    new_valid_to: str = ""
    new_registered_facility: str = ""
    cached: bool = False

    def as_plain(self) -> dict[str, Any]:
        return asdict(self)


def result_from_answer(card: str, answer: dict) -> CardResult | None:
    """The portal's answer as a :class:`CardResult`, or None when it means "not checked"."""
    entry = card_code(str(answer.get("maKetQua", "")).strip())
    if entry.kind not in DEFINITIVE:
        return None
    new = entry.kind == NEW_CARD
    return CardResult(
        entry.code, entry.kind, entry.meaning, entry.action, entry.field, card,
        holder_name=str(answer.get("hoTen") or ""), birth_date=portal_date(answer.get("ngaySinh")),
        valid_from=portal_date(answer.get("gtTheTu")), valid_to=portal_date(answer.get("gtTheDen")),
        registered_facility=str(answer.get("maDKBD") or ""),
        new_card=str(answer.get("maTheMoi") or "") if new else "",
        new_valid_from=portal_date(answer.get("gtTheTuMoi")) if new else "",
        new_valid_to=portal_date(answer.get("gtTheDenMoi")) if new else "",
        new_registered_facility=str(answer.get("maDKBDMoi") or "") if new else "")


def portal_date(value: object) -> str:
    """``dd/MM/yyyy`` (the portal's) as ``yyyymmdd``; a year alone stays a year."""
    text = str(value or "").strip()
    parts = text.split("/")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return f"{parts[2]:0>4}{parts[1]:0>2}{parts[0]:0>2}"
    return text if text.isdigit() else ""


def birth_for_portal(birth_date: str) -> str:
    """NGAY_SINH (``yyyymmdd[HHMM]``, ``0000`` for an unknown day and month) as the portal takes it:
    ``dd/MM/yyyy``, or the year alone when day and month are unknown (as clients send it)."""
    if len(birth_date) >= 8 and birth_date[4:8] != "0000":
        return f"{birth_date[6:8]}/{birth_date[4:6]}/{birth_date[:4]}"
    return birth_date[:4]


class RateLimiter:
    """Requests at least ``1 / rate`` seconds apart, in the order they ask (``rate`` 0: no limit)."""

    def __init__(self, rate: float, max_wait: float, clock: IReactorTime) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._max_wait = max_wait
        self._clock = clock
        self._next = 0.0

    def turn(self) -> Deferred:
        """Fires when this request may go; fails at once with :class:`CardNotChecked` when its
        turn is more than ``max_wait`` away."""
        now = self._clock.seconds()
        wait = max(0.0, self._next - now)
        if wait > self._max_wait:
            raise CardNotChecked(f"rate limit: the next turn to ask the BHXH portal is {wait:.1f} s away, more than "
                                 f"max_wait_seconds ({self._max_wait:g} s)")
        self._next = max(now, self._next) + self._interval
        return succeed(None) if wait == 0 else deferLater(self._clock, wait, lambda: None)


class CircuitBreaker:
    """Consecutive server failures open it; ``reset`` seconds later one probe may pass."""

    def __init__(self, failures: int, reset: float, clock: IReactorTime) -> None:
        self._threshold = failures
        self._reset = reset
        self._clock = clock
        self.failures = 0
        self.state = CLOSED
        self._opened_at = 0.0

    def refuse_if_open(self) -> None:
        """Raise :class:`CardNotChecked` when no request could go now (checked before a request
        waits for its turn, so a refused one takes no turn)."""
        if self.state == HALF_OPEN or (self.state == OPEN and self._clock.seconds() < self._opened_at + self._reset):
            raise self._refusal()

    def admit(self) -> None:
        """Raise :class:`CardNotChecked` unless a request may go now; after the delay, the first
        to ask is the probe (half-open)."""
        if self.state == CLOSED:
            return
        if self.state == OPEN and self._clock.seconds() >= self._opened_at + self._reset:
            self.state = HALF_OPEN
            return
        raise self._refusal()

    def _refusal(self) -> CardNotChecked:
        wait = max(0.0, self._opened_at + self._reset - self._clock.seconds())
        return CardNotChecked(f"circuit open: the BHXH portal failed {self.failures} times in a row; not asked "
                              + (f"for another {wait:.0f} s" if self.state == OPEN else "while one check probes it"))

    def succeeded(self) -> None:
        self.failures = 0
        self.state = CLOSED

    def failed(self) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self._threshold:
            self.state = OPEN
            self._opened_at = self._clock.seconds()


@dataclass(frozen=True)
class CheckSettings:
    cache_seconds: float = 3600.0
    cache_entries: int = 10000
    requests_per_second: float = 5.0
    max_wait_seconds: float = 2.0
    breaker_failures: int = 5
    breaker_reset_seconds: float = 60.0


class CardChecker:
    """Checks a card at the portal through the cache, the rate limit and the breaker."""

    def __init__(self, client: PortalClient, settings: CheckSettings, clock: IReactorTime) -> None:
        self.client = client
        self._settings = settings
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str, str], tuple[float, CardResult]] = OrderedDict()
        self.limiter = RateLimiter(settings.requests_per_second, settings.max_wait_seconds, clock)
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_seconds, clock)

    def check(self, card: str, name: str, birth_date: str) -> Deferred:
        """Fires with a :class:`CardResult`, or fails with :class:`CardNotChecked`."""
        key = (card.strip().upper(), " ".join(name.split()).casefold(), birth_date)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > self._clock.seconds():
            return succeed(CardResult(**{**cached[1].as_plain(), "cached": True}))
        self._cache.pop(key, None)
        return Deferred.fromCoroutine(self._ask(key, card.strip().upper(), name, birth_date))

    async def _ask(self, key: tuple[str, str, str], card: str, name: str, birth_date: str) -> CardResult:
        self.breaker.refuse_if_open()
        await self.limiter.turn()
        self.breaker.admit()  # the circuit may have opened while this one waited for its turn
        try:
            answer = await self.client.card(card, name, birth_for_portal(birth_date))
        except PortalUnavailable as e:
            self.breaker.failed()
            raise CardNotChecked(str(e)) from None
        except PortalRefused as e:
            self.breaker.succeeded()
            raise CardNotChecked(str(e), "401") from None
        except BaseException:  # cancelled, or a bug: a half-open probe must not stay out forever
            self.breaker.failed()
            raise
        entry = card_code(str(answer.get("maKetQua", "")).strip())
        if entry.kind == SERVER:
            self.breaker.failed()
        else:
            self.breaker.succeeded()
        result = result_from_answer(card, answer)
        if result is None:
            raise CardNotChecked(f"the BHXH portal answered {entry.code} ({entry.meaning}): {entry.action}", entry.code)
        self._remember(key, result)
        return result

    def _remember(self, key: tuple[str, str, str], result: CardResult) -> None:
        if self._settings.cache_seconds <= 0:
            return
        self._cache[key] = (self._clock.seconds() + self._settings.cache_seconds, result)
        while len(self._cache) > self._settings.cache_entries:
            self._cache.popitem(last=False)
