"""The cards, staff and account the bhxh plugin's tests ask a :class:`CardPortalDouble` about,
and one question per answer code of vn-standards §2.5 (:data:`SCENARIOS`)."""
from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import reactor
from twisted.internet.task import deferLater

from plugins.bhxh.testing.card_double import CardHolder, CardPortalDouble

USERNAME, PASSWORD = "79001_BV", "mat-khau-79001"
STAFF_NAME, STAFF_CCCD = "Trần Thị Lan", "079180001234"
NAME, BIRTH, PORTAL_BIRTH = "Nguyễn Văn An", "19850412", "12/04/1985"
FACILITY = "79001"


def card(n: int, group: str = "DN", benefit: str = "4", province: str = "79") -> str:
    return f"{group}{benefit}{province}{7900000000 + n:010d}"


#: The holder's own result codes: a correct question about each is answered so.
HOLDER_CODES = ("000", "001", "002", "003", "004", "010", "100", "101", "110", "120", "121", "122", "123", "124",
                "130", "500")
HOLDERS = [CardHolder(card(n), NAME, PORTAL_BIRTH, result=code, new_card=card(n, benefit="2") if code in ("003", "004")
                      else "") for n, code in enumerate(HOLDER_CODES, 1)]
BASE = card(50)  # the holder the wrong-data questions are about
HOLDERS.append(CardHolder(BASE, NAME, PORTAL_BIRTH))


@dataclass(frozen=True)
class Scenario:
    """One question and the code the portal answers it with."""

    code: str
    card: str
    name: str = NAME
    birth: str = BIRTH


SCENARIOS = [Scenario(code, holder.card) for code, holder in zip(HOLDER_CODES, HOLDERS)] + [
    Scenario("050", card(99)),
    Scenario("051", card(50, group="HT")),
    Scenario("052", card(50, province="01")),
    Scenario("053", card(50, benefit="3")),
    Scenario("060", BASE, name="Lê Văn An"),
    Scenario("061", BASE, name="Nguyễn Văn Bình"),
    Scenario("070", BASE, birth="19860412"),
]


def portal(**kwargs) -> CardPortalDouble:
    return CardPortalDouble({USERNAME: PASSWORD}, {STAFF_CCCD: STAFF_NAME}, HOLDERS, **kwargs)


def settings_table(url: str, **overrides) -> dict:
    """``[plugins.bhxh.card_check]`` for the double at ``url``; no rate limit."""
    return {"url": url, "username": USERNAME, "password": PASSWORD, "staff_name": STAFF_NAME, "staff_cccd": STAFF_CCCD,
            "requests_per_second": 0, **overrides}


async def wait_for(condition, timeout: float = 5.0, step: float = 0.01) -> None:
    """Let the real reactor run (the double's sockets) until ``condition()``."""
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError(f"not true within {timeout} s")
        await deferLater(reactor, step, lambda: None)
        waited += step
