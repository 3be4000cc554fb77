"""Failed authentications per peer, over real sockets on a gateway whose time is a ``task.Clock``:
a peer that presents wrong credentials ``auth.max_failures`` times within the window is refused
for ``auth.lockout_seconds`` on every endpoint that checks credentials — with 429 and Retry-After
(the portal pair: HTTP 200, ``maKetQua`` "429"), even with a correct token, which is then not
checked at all — while other peers carry on; the limiter's memory is bounded."""
import json

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from gateway.core.auth_limits import AuthFailureLimiter
from tests.support import TestPlugin, hl7, http_request, journal_rows, metric_value, msa, start_gateway
from tests.transports.test_clients import OTHER_TOKEN, TOKEN, bearer, clients
from tests.transports.test_xml_intake import FORM, TestDocumentPlugin, noi_tru, portal_form

HL7_TYPE = "application/hl7-v2"
ADMIN_TOKEN = "admin-secret-77"
#: Three wrong credentials within a minute lock a peer out for two minutes.
LIMITS = {"auth.max_failures": 3, "auth.failure_window_seconds": 60, "auth.lockout_seconds": 120}


async def limited_gateway(tmp_path, clock: Clock, **overrides):
    return await start_gateway(tmp_path / "data", plugins=[TestPlugin(), TestDocumentPlugin()], clock=clock,
                               **{**clients(required=True), **LIMITS, **overrides})


async def send_hl7(gw, control_id: str, token: str, source: str | None = None):
    return await http_request(gw, "POST", "/hl7", hl7(control_id=control_id), HL7_TYPE, headers=bearer(token),
                              source=source)


def refused(gw, reason: str) -> float:
    return metric_value(gw, "hssk_connections_refused_total", transport="http", reason=reason)


def lockouts(log_events) -> list[dict]:
    return [e for e in log_events if e.get("log_namespace") == "hssk.auth"]


@pytest_twisted.ensureDeferred
async def test_after_ten_wrong_tokens_even_a_good_token_gets_429_with_retry_after_and_one_log_line(tmp_path,
                                                                                                   plugin,
                                                                                                   log_events):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], clock=Clock(), **clients(required=True))
    try:
        wrong = [await send_hl7(gw, f"GUESS{n}", f"guess-{n:04d}") for n in range(10)]
        good = await send_hl7(gw, "GOOD1", TOKEN)
        counted = (refused(gw, "bad_credentials"), refused(gw, "auth_rate_limited"))
    finally:
        await gw.stop()

    assert [r.code for r in wrong] == [401] * 10
    assert good.code == 429, good.body
    assert good.headers["retry-after"] == "300"
    assert b"auth.lockout_seconds" in good.body and b"127.0.0.1" in good.body
    assert journal_rows(gw) == []
    assert counted == (10, 1)
    [locked] = lockouts(log_events)
    assert (locked["peer"], locked["failures"], locked["lockout_seconds"]) == ("127.0.0.1", 10, 300)
    logged = json.dumps([{k: str(v) for k, v in e.items()} for e in log_events])
    assert "guess-" not in logged and TOKEN not in logged


@pytest_twisted.ensureDeferred
async def test_retry_after_counts_down_and_the_good_token_is_taken_once_the_lockout_ends(tmp_path):
    clock = Clock()
    gw = await limited_gateway(tmp_path, clock)
    try:
        for n in range(3):
            await send_hl7(gw, f"GUESS{n}", f"guess-{n}")
        clock.advance(119.5)
        almost = await send_hl7(gw, "GOOD1", TOKEN)
        clock.advance(0.5)
        after = await send_hl7(gw, "GOOD2", TOKEN)
    finally:
        await gw.stop()

    assert (almost.code, almost.headers["retry-after"]) == (429, "1")
    assert (after.code, msa(after.body)[1]) == (200, "AA")
    assert [r["control_id"] for r in journal_rows(gw)] == ["GOOD2"]


@pytest_twisted.ensureDeferred
async def test_wrong_tokens_spread_wider_than_the_window_do_not_lock_and_a_locked_peer_is_not_checked(tmp_path):
    clock = Clock()
    gw = await limited_gateway(tmp_path, clock)
    try:
        for n, at in enumerate((0, 30, 61)):
            clock.advance(at - clock.seconds())
            await send_hl7(gw, f"GUESS{n}", f"guess-{n}")
        spread = await send_hl7(gw, "GOOD1", TOKEN)
        clock.advance(1)
        await send_hl7(gw, "GUESS3", "guess-3")  # the 3rd within 60 s: 30, 61, 62
        locked = await send_hl7(gw, "GOOD2", TOKEN)
        guess_while_locked = await send_hl7(gw, "GUESS4", "guess-4")
        counted = (refused(gw, "bad_credentials"), refused(gw, "auth_rate_limited"))
    finally:
        await gw.stop()

    assert (spread.code, msa(spread.body)[1]) == (200, "AA")
    assert (locked.code, guess_while_locked.code) == (429, 429)
    assert counted == (4, 2)  # the guess while locked out was not checked against the tokens


@pytest_twisted.ensureDeferred
async def test_requests_without_credentials_are_no_failures(tmp_path):
    gw = await limited_gateway(tmp_path, Clock())
    try:
        anonymous = [await http_request(gw, "POST", "/hl7", hl7(control_id=f"ANON{n}"), HL7_TYPE) for n in range(5)]
        good = await send_hl7(gw, "GOOD1", TOKEN)
    finally:
        await gw.stop()

    assert [r.code for r in anonymous] == [401] * 5
    assert (good.code, msa(good.body)[1]) == (200, "AA")


@pytest_twisted.ensureDeferred
async def test_a_locked_out_peer_does_not_lock_out_another_and_its_success_does_not_free_the_first(tmp_path):
    gw = await limited_gateway(tmp_path, Clock())
    try:
        for n in range(3):
            await send_hl7(gw, f"GUESS{n}", f"guess-{n}", source="127.0.0.1")
        other = await send_hl7(gw, "OTHER1", TOKEN, source="127.0.0.2")
        first = await send_hl7(gw, "GOOD1", TOKEN, source="127.0.0.1")
    finally:
        await gw.stop()

    assert (other.code, msa(other.body)[1]) == (200, "AA")
    assert first.code == 429


def _portal_answer(response, retry_after: str) -> None:
    assert (response.code, response.json()["maKetQua"]) == (200, "429"), response.body
    assert response.headers["retry-after"] == retry_after
    assert "auth.lockout_seconds" in response.json()["thongDiep"]


def _json_answer(key: str):
    def check(response, retry_after: str) -> None:
        assert response.code == 429, response.body
        assert response.headers["retry-after"] == retry_after
        assert "auth.lockout_seconds" in json.dumps(response.json()[key])
    return check


ENDPOINTS = {
    "xml130": ("/xml130", lambda: noi_tru(b"79025.RL00000001"), "application/xml", _json_answer("errors")),
    "portal claim": ("/api/qd130/guiHoSoXmlQD4750", lambda: portal_form(noi_tru(b"79025.RL00000002")), FORM,
                     _portal_answer),
    "portal check-in": ("/api/qd130/checkInKcbQd4750", lambda: portal_form(noi_tru(b"79025.RL00000003"),
                                                                           file_type="0"), FORM, _portal_answer),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest_twisted.ensureDeferred
async def test_every_intake_endpoint_answers_a_locked_out_peer_in_its_own_form(tmp_path, endpoint):
    path, body, content_type, check = ENDPOINTS[endpoint]
    clock = Clock()
    gw = await limited_gateway(tmp_path, clock)
    try:
        wrong = [await http_request(gw, "POST", path, body(), content_type, headers=bearer(f"guess-{n}"))
                 for n in range(3)]
        clock.advance(20)
        good = await http_request(gw, "POST", path, body(), content_type, headers=bearer(OTHER_TOKEN))
        counted = refused(gw, "auth_rate_limited")
    finally:
        await gw.stop()

    assert all("retry-after" not in r.headers for r in wrong)
    check(good, "100")
    assert counted == 1
    assert journal_rows(gw) == []


@pytest_twisted.ensureDeferred
async def test_wrong_admin_tokens_lock_the_peer_out_of_the_admin_api_and_of_intake(tmp_path, monkeypatch):
    monkeypatch.setenv("HSSK_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
    gw = await limited_gateway(tmp_path, Clock(), **{"auth.admin_token_env": "HSSK_TEST_ADMIN_TOKEN"})
    try:
        missing = await http_request(gw, "GET", "/admin/outbox")
        wrong = [await http_request(gw, "GET", "/admin/outbox", headers=bearer(f"admin-{n}")) for n in range(3)]
        admin = await http_request(gw, "GET", "/admin/outbox", headers=bearer(ADMIN_TOKEN))
        intake = await send_hl7(gw, "GOOD1", TOKEN)
        counted = refused(gw, "auth_rate_limited")
    finally:
        await gw.stop()

    assert [r.code for r in [missing, *wrong]] == [401] * 4
    _json_answer("error")(admin, "120")
    assert (intake.code, intake.headers["retry-after"]) == (429, "120")
    assert counted == 2


def test_the_limiter_holds_at_most_max_tracked_peers_forgetting_the_least_recent_first():
    clock = Clock()
    limiter = AuthFailureLimiter(clock, max_failures=1, window_seconds=60, lockout_seconds=300, max_peers=3)

    for n in range(1, 6):
        limiter.failed(f"192.0.2.{n}")
        clock.advance(1)

    assert limiter.tracked_peers == 3
    assert [limiter.retry_after(f"192.0.2.{n}") for n in range(1, 6)] == [None, None, 297, 298, 299]
