"""The card check against the portal double over real sockets on 127.0.0.1: every answer code of
vn-standards §2.5 read into its kind and action; the token kept until it expires, renewed once on
a 401; the cache, the rate limit and the circuit breaker, timed by a ``Clock``."""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from gateway.plugin import ConfigError, mask_identifier
from plugins.bhxh.card_check import CardChecker, CardNotChecked, CheckSettings
from plugins.bhxh.card_codes import CODES, DEFINITIVE, card_code
from plugins.bhxh.card_command import check_card, describe
from plugins.bhxh.card_enrichment import read_config
from plugins.bhxh.card_client import PortalAccount, PortalClient
from plugins.bhxh.tests.portal import (BASE, BIRTH, NAME, PASSWORD, SCENARIOS, STAFF_CCCD, STAFF_NAME, USERNAME,
                                       card, portal, settings_table, wait_for)


def test_every_code_of_the_annex_has_a_kind_and_an_action():
    annex = ["000", "001", "002", "003", "004", "010", "050", "051", "052", "053", "054", "055", "060", "061", "070",
             "100", "101", "110", "120", "121", "122", "123", "124", "130", "205", "401"]
    assert set(annex) <= set(CODES)
    assert all(CODES[c].action and CODES[c].meaning for c in CODES)
    assert {c for c in CODES if CODES[c].kind in ("usable", "new_card")} == {"000", "001", "002", "003", "004"}
    assert {c for c in CODES if CODES[c].kind == "server"} == {"100", "101", "500"}
    assert card_code("999").kind == "unknown"


async def _checker(double, clock, **check):
    url = await double.listen()
    client = PortalClient(reactor, clock, PortalAccount(url, USERNAME, PASSWORD, STAFF_NAME, STAFF_CCCD), 5.0)
    return CardChecker(client, CheckSettings(**{"requests_per_second": 0, **check}), clock)


async def _stop(double, checker):
    await checker.client.close()
    await double.stop()


@pytest_twisted.ensureDeferred
async def test_every_answer_code_is_read_into_its_kind_through_the_commands_check():
    double = portal()
    url = await double.listen()
    settings = read_config(settings_table(url))
    try:
        for scenario in SCENARIOS:
            try:
                result = await check_card(reactor, settings, scenario.card, scenario.name, scenario.birth)
            except CardNotChecked as e:
                assert card_code(scenario.code).kind not in DEFINITIVE, scenario
                assert e.code == scenario.code and scenario.code in e.reason
                continue
            assert (result.code, result.kind) == (scenario.code, card_code(scenario.code).kind), scenario
            if result.kind == "new_card":
                assert result.new_card == card(int(scenario.card[-2:]), benefit="2")
                assert (result.new_valid_from, result.new_valid_to) == ("20270101", "20271231")
                masked, clear = describe(result, reveal=False), describe(result, reveal=True)
                assert (masked["new_card"], masked["holder_name"], masked["birth_date"]) == (
                    mask_identifier(result.new_card), "Nguyễn V. A.", "1985")
                assert (clear["new_card"], clear["holder_name"], clear["birth_date"]) == (
                    result.new_card, NAME, "19850412")
        assert double.issuer.logins == len(SCENARIOS)  # the command logs in for its one check
        assert double.cards.requests[0] == {"maThe": SCENARIOS[0].card, "hoTen": NAME, "ngaySinh": "12/04/1985",
                                            "hoTenCb": STAFF_NAME, "cccdCb": STAFF_CCCD}
    finally:
        await double.stop()


@pytest_twisted.ensureDeferred
async def test_the_portals_staff_and_request_codes_mean_not_checked():
    double = portal()
    checker = await _checker(double, reactor)
    try:
        for code, prepare in (("054", lambda: double.cards.staff.clear()),
                              ("055", lambda: double.cards.staff.update({STAFF_CCCD: "Lê Thị Hoa"}))):
            prepare()
            with pytest.raises(CardNotChecked, match=code):
                await checker.check(BASE, NAME, BIRTH)
        double.cards.staff[STAFF_CCCD] = STAFF_NAME
        with pytest.raises(CardNotChecked, match="205"):
            await checker.check(BASE, "", BIRTH)
        assert len(double.cards.requests) == 3  # none of them cached
    finally:
        await _stop(double, checker)


@pytest_twisted.ensureDeferred
async def test_a_token_that_expires_in_the_middle_of_a_run_is_renewed_once_and_the_check_goes_on():
    double = portal()
    checker = await _checker(double, reactor)
    try:
        assert (await checker.check(card(1), NAME, BIRTH)).code == "000"
        double.issuer.expire_all()  # the portal forgets the token before its time

        assert (await checker.check(card(2), NAME, BIRTH)).code == "001"
        assert (double.issuer.logins, double.cards.refused_tokens) == (2, 1)
    finally:
        await _stop(double, checker)


@pytest_twisted.ensureDeferred
async def test_a_token_is_kept_until_shortly_before_it_expires_then_taken_anew_without_a_401():
    clock = Clock()
    clock.advance(1_800_000_000)
    double = portal(token_lifetime=100.0, clock=clock)
    checker = await _checker(double, clock, cache_seconds=0)
    try:
        await checker.check(card(1), NAME, BIRTH)
        clock.advance(60)
        await checker.check(card(1), NAME, BIRTH)
        assert double.issuer.logins == 1
        clock.advance(15)  # 75 s: within the margin of its expiry at 100 s
        await checker.check(card(1), NAME, BIRTH)
        assert (double.issuer.logins, double.cards.refused_tokens) == (2, 0)
    finally:
        await _stop(double, checker)


@pytest_twisted.ensureDeferred
async def test_an_account_whose_fresh_token_is_refused_again_fails_clearly_instead_of_looping():
    double = portal(token_lifetime=0.0)  # every token is dead on arrival
    checker = await _checker(double, reactor)
    try:
        with pytest.raises(CardNotChecked, match="refused a fresh token"):
            await checker.check(card(1), NAME, BIRTH)
        assert (double.issuer.logins, double.cards.refused_tokens) == (2, 2)
    finally:
        await _stop(double, checker)


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_is_a_refused_login_naming_the_account():
    double = portal()
    url = await double.listen()
    client = PortalClient(reactor, reactor, PortalAccount(url, USERNAME, "sai", STAFF_NAME, STAFF_CCCD), 5.0)
    checker = CardChecker(client, CheckSettings(requests_per_second=0), reactor)
    try:
        with pytest.raises(CardNotChecked, match="refused the login of '79001_BV'"):
            await checker.check(card(1), NAME, BIRTH)
        assert double.cards.requests == []
    finally:
        await _stop(double, checker)


@pytest_twisted.ensureDeferred
async def test_a_cache_hit_avoids_a_portal_call_until_its_time_is_up():
    clock = Clock()
    double = portal()
    checker = await _checker(double, clock, cache_seconds=600)
    try:
        first = await checker.check(card(4), NAME, BIRTH)
        again = await checker.check(card(4), NAME, BIRTH)
        assert (first.cached, again.cached, again.code, again.new_card) == (False, True, "003", first.new_card)
        assert len(double.cards.requests) == 1
        await checker.check(card(4), "Lê Văn An", BIRTH)  # another question about the card
        assert len(double.cards.requests) == 2

        clock.advance(601)
        assert not (await checker.check(card(4), NAME, BIRTH)).cached
        assert len(double.cards.requests) == 3
    finally:
        await _stop(double, checker)


@pytest_twisted.ensureDeferred
async def test_the_rate_limit_spaces_requests_and_refuses_one_whose_turn_is_too_far():
    clock = Clock()
    double = portal()
    checker = await _checker(double, clock, requests_per_second=2, max_wait_seconds=1.0)
    try:
        asked = [checker.check(card(1), NAME, BIRTH), checker.check(card(2), NAME, BIRTH),
                 checker.check(card(3), NAME, BIRTH)]
        with pytest.raises(CardNotChecked, match="rate limit"):
            await checker.check(card(5), NAME, BIRTH)  # its turn would be 1.5 s away
        await wait_for(lambda: len(double.cards.requests) == 1)
        clock.advance(0.5)
        await wait_for(lambda: len(double.cards.requests) == 2)
        clock.advance(0.5)
        await wait_for(lambda: len(double.cards.requests) == 3)
        assert [(await d).code for d in asked] == ["000", "001", "002"]
    finally:
        await _stop(double, checker)


@pytest_twisted.ensureDeferred
async def test_the_circuit_opens_after_consecutive_server_failures_and_one_probe_closes_it():
    clock = Clock()
    double = portal()
    checker = await _checker(double, clock, breaker_failures=3, breaker_reset_seconds=30)
    try:
        double.cards.faults = ["http500", "garbage"]
        for _ in range(2):
            with pytest.raises(CardNotChecked):
                await checker.check(card(1), NAME, BIRTH)
        with pytest.raises(CardNotChecked, match="answered 101"):  # a server code is a failure too
            await checker.check(card(8), NAME, BIRTH)
        with pytest.raises(CardNotChecked, match="circuit open.*30 s"):
            await checker.check(card(1), NAME, BIRTH)
        assert len(double.cards.requests) == 3  # the open circuit asked nobody

        clock.advance(30)
        probe = checker.check(card(1), NAME, BIRTH)
        with pytest.raises(CardNotChecked, match="while one check probes it"):
            await checker.check(card(2), NAME, BIRTH)
        assert (await probe).code == "000"
        assert (await checker.check(card(2), NAME, BIRTH)).code == "001"
        assert checker.breaker.state == "closed"
    finally:
        await _stop(double, checker)


@pytest_twisted.ensureDeferred
async def test_a_failed_probe_opens_the_circuit_again():
    clock = Clock()
    double = portal()
    checker = await _checker(double, clock, breaker_failures=1, breaker_reset_seconds=30)
    try:
        double.cards.faults = ["http500", "http500"]
        with pytest.raises(CardNotChecked):
            await checker.check(card(1), NAME, BIRTH)
        clock.advance(30)
        with pytest.raises(CardNotChecked, match="HTTP 500"):
            await checker.check(card(1), NAME, BIRTH)
        with pytest.raises(CardNotChecked, match="circuit open"):
            await checker.check(card(1), NAME, BIRTH)
        assert checker.breaker.state == "open"
    finally:
        await _stop(double, checker)


def test_settings_are_checked_with_the_key_named():
    with pytest.raises(ConfigError, match="plugins.bhxh.card_check.staff_cccd"):
        read_config({"url": "http://x", "username": "u", "password": "p", "staff_name": "n", "facilities": ["79001"]})
    with pytest.raises(ConfigError, match="plugins.bhxh.card_check.unusable"):
        read_config({"unusable": "ignore"})
    with pytest.raises(ConfigError, match="plugins.bhxh.card_check.breaker_failures"):
        read_config({"breaker_failures": 0})
    with pytest.raises(ConfigError, match="plugins.bhxh.card_check.rate"):
        read_config({"rate": 3})
    assert read_config({"password_env": "BHXH_PW"}, {"BHXH_PW": "s3"}).password == "s3"

