"""The card check before ACK, end to end: a real gateway with the bhxh plugin and a HIS plugin
(dhg_his), MLLP on 127.0.0.1, and the portal double as the BHXH portal. Each answer code decides
the ACK as the code table says; a new card reaches the person index under the same person; a
portal that is silent or failing never blocks intake, and the ACK says what happened; a token
that dies in the middle of a run costs one new login and no unchecked card."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import pytest_twisted

from gateway.plugin import mask_identifier
from gateway.testing import read_sample
from plugins.bhxh.card_codes import card_code
from plugins.bhxh.tests.portal import (BASE, BIRTH, HOLDERS, NAME, SCENARIOS, STAFF_CCCD, card, portal,
                                       settings_table, wait_for)

SAMPLE = Path(__file__).resolve().parents[2] / "dhg_his" / "samples" / "adt_a04.hl7"
FACILITY = "92001"  # the sample's MSH-4


def admission(control_id: str, card_code_: str, name: str = NAME, birth: str = BIRTH) -> bytes:
    """The DHG sample with only the card as PID-3 (no IN1) and another name, birth date, control id."""
    family, _, given = name.partition(" ")
    segments = read_sample(SAMPLE).split(b"\r")
    msh = segments[0].replace(b"DHG20250510000001", control_id.encode()).replace(b"|AL|NE|", b"|||")  # original mode
    pid = f"PID|1||{card_code_}^^^BHXH^BHYT||{family}^{given}^^^^^L||{birth}|M".encode()
    kept = [s for s in segments[1:] if s and not s.startswith((b"PID", b"IN1"))]
    return b"\r".join([msh, kept[0], pid, *kept[1:]]) + b"\r"


@pytest_twisted.async_yield_fixture
async def double():
    d = portal()
    d.url = await d.listen()
    yield d
    await d.stop()


@pytest.fixture
def card_settings():
    return {}


@pytest.fixture
def hssk_plugins():
    return ["bhxh", "dhg_his"]


@pytest.fixture
def hssk_settings(double, card_settings):
    return {"plugins.bhxh.card_check": settings_table(double.url, **{"facilities": [FACILITY], **card_settings})}


def card_errors(ack):
    return [e for e in ack.errors if "BHYT card" in e.text]


@pytest_twisted.ensureDeferred
async def test_every_answer_code_decides_the_ack_as_the_code_table_says(hssk_gateway, hssk_mllp, double):
    for n, scenario in enumerate(SCENARIOS):
        if n == len(SCENARIOS) // 2:
            double.issuer.expire_all()  # the token dies in the middle of the run
        ack = await hssk_mllp.send(admission(f"CARD{n:03d}", scenario.card, scenario.name, scenario.birth))
        kind = card_code(scenario.code).kind
        errors = card_errors(ack)
        if kind == "usable":
            assert ack.code == "AA" and errors == [], (scenario, ack)
        elif kind == "new_card":
            [info] = errors
            assert ack.code == "AA" and info.severity == "I" and info.location == "PID^1^3", (scenario, ack)
            assert f"the new card is {mask_identifier(card(int(scenario.card[-2:]), benefit='2'))}" in info.text
        elif kind in ("unusable", "wrong_data"):
            [error] = errors
            where = {"060": "PID^1^5", "061": "PID^1^5", "070": "PID^1^7"}.get(scenario.code, "PID^1^3")
            assert ack.code == "AE" and (error.location, error.code, error.severity) == (where, 103, "E"), (scenario, ack)
            assert f"{scenario.code} {card_code(scenario.code).meaning}" in error.text
            assert scenario.card not in error.text and mask_identifier(scenario.card) in error.text
        else:  # server codes: not checked, accepted with a warning saying so
            [warning] = errors
            assert ack.code == "AA" and warning.severity == "W", (scenario, ack)
            assert f"not checked at the BHXH portal (failed: CardNotChecked: the BHXH portal answered {scenario.code}" \
                   in warning.text
    for code, prepare in (("054", lambda: double.cards.staff.clear()),
                          ("055", lambda: double.cards.staff.update({STAFF_CCCD: "Lê Thị Hoa"}))):
        prepare()
        ack = await hssk_mllp.send(admission(f"STAFF{code}", BASE))
        [warning] = card_errors(ack)
        assert ack.code == "AA" and warning.severity == "W" and f"answered {code}" in warning.text
    assert hssk_gateway.journal(control_id="CARD000")[0]["status"] == "accepted"
    assert (double.issuer.logins, double.cards.refused_tokens) == (2, 1)  # one new login, no card left unchecked


@pytest.mark.parametrize("card_settings", [{"unusable": "warning"}])
@pytest_twisted.ensureDeferred
async def test_an_unusable_card_is_a_warning_when_configured_so(hssk_mllp, card_settings):
    expired = next(h.card for h in HOLDERS if h.result == "010")
    ack = await hssk_mllp.send(admission("EXPIRED", expired))
    [warning] = card_errors(ack)
    assert ack.code == "AA" and (warning.location, warning.code, warning.severity) == ("PID^1^3", 103, "W")
    assert "010 card expired" in warning.text


@pytest_twisted.ensureDeferred
async def test_a_new_card_is_added_to_the_same_persons_identifiers_in_the_person_index(hssk_gateway, hssk_mllp):
    old = next(h for h in HOLDERS if h.result == "003")
    (await hssk_mllp.send(admission("BEFORE", old.card))).assert_accepted()  # the person, known by the old card
    # (the first message already learnt of the new card: the person index gets it either way)

    def identifiers():
        conn = sqlite3.connect(hssk_gateway.config.database_path)
        try:
            return conn.execute("SELECT person_id, system, value FROM person_identifiers WHERE system = 'BHYT' "
                                "ORDER BY first_seen, value").fetchall()
        finally:
            conn.close()

    await wait_for(lambda: len(identifiers()) == 2)
    rows = identifiers()
    assert {value for _, _, value in rows} == {old.card, old.new_card}
    assert len({person for person, _, _ in rows}) == 1
    [event] = hssk_gateway.journal(message_type="BHYT^NEWCARD")
    assert event["status"] == "accepted" and event["sender"] == "EVENT|bhxh"


@pytest.mark.parametrize("card_settings", [{"timeout_seconds": 0.3}])
@pytest_twisted.ensureDeferred
async def test_a_silent_portal_does_not_block_intake_and_the_ack_says_so(hssk_mllp, double, card_settings):
    double.cards.faults = ["hang"]
    ack = await hssk_mllp.send(admission("SILENT", card(1)))
    [warning] = card_errors(ack)
    assert ack.code == "AA" and warning.severity == "W" and "not checked at the BHXH portal (timeout" in warning.text


@pytest.mark.parametrize("card_settings", [{"breaker_failures": 1, "breaker_reset_seconds": 600,
                                            "not_checked": "reject"}])
@pytest_twisted.ensureDeferred
async def test_an_open_circuit_answers_at_once_and_reject_makes_it_ar_to_send_again(hssk_mllp, double, card_settings):
    double.cards.faults = ["http500"]
    first = await hssk_mllp.send(admission("DOWN1", card(1)))
    first.assert_rejected(location="PID^1^3", code=207, text="HTTP 500")
    second = await hssk_mllp.send(admission("DOWN2", card(2)))
    second.assert_rejected(location="PID^1^3", code=207, text="circuit open")
    assert len(double.cards.requests) == 1


@pytest.mark.parametrize("card_settings", [{"facilities": ["79001"]}])
@pytest_twisted.ensureDeferred
async def test_a_facility_not_listed_is_not_checked(hssk_mllp, double, card_settings):
    ack = await hssk_mllp.send(admission("OTHER", card(6)))
    assert card_errors(ack) == [] and double.cards.requests == []
