"""The operator console over plain HTTP (no browser): who gets in, CSRF, escaping, language.
The walk through its pages in a real browser is tests/transports/test_console_browser.py."""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from gateway.testing.logs import LogCapture
from gateway.transports.console import text_en, text_vi
from gateway.transports.console.language import accepted
from gateway.transports.console.sessions import IDLE_SECONDS, LIFETIME_SECONDS, Sessions
from tests.support import TestPlugin, connect_mllp, hl7, msa, outbox_rows, send_and_receive, start_gateway
from tests.transports.console_client import ConsoleClient

TOKEN = "console-secret-19"


@pytest_twisted.async_yield_fixture
async def gw(tmp_path, monkeypatch):
    monkeypatch.setenv("HSSK_TEST_ADMIN_TOKEN", TOKEN)
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin()],
                                  **{"auth.admin_token_env": "HSSK_TEST_ADMIN_TOKEN",
                                     "destinations.files.kind": "file", "destinations.files.directory": "out"})
    yield gateway
    await gateway.stop()


def console(gateway, **options) -> ConsoleClient:
    host, port = gateway.address("http")
    return ConsoleClient(f"http://{host}:{port}/admin/ui/", **options)


@pytest_twisted.ensureDeferred
async def test_a_browser_without_a_session_gets_the_login_form_with_401(gw):
    answer = await console(gw).get("messages")

    assert answer.code == 401 and 'name="token"' in answer.text and 'action="/admin/ui/login"' in answer.text


@pytest_twisted.ensureDeferred
async def test_a_wrong_token_is_refused_and_the_right_one_gives_an_httponly_strict_session_cookie(gw):
    wrong = await console(gw).sign_in("not-the-token")
    client = console(gw, follow_redirects=False)
    right = await client.sign_in(TOKEN)

    assert wrong.code == 401 and 'name="token"' in wrong.text
    assert right.code == 303 and right.headers["location"] == "/admin/ui/destinations"
    [cookie] = [c for c in right.headers.get_all("set-cookie") if c.startswith("hssk_console=")]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin/ui/" in cookie


@pytest_twisted.ensureDeferred
async def test_a_login_post_without_its_form_token_is_refused(gw):
    answer = await console(gw).post("login", {"token": TOKEN})

    assert answer.code == 403 and 'name="token"' in answer.text


@pytest_twisted.ensureDeferred
async def test_an_action_without_the_sessions_csrf_token_is_403_and_does_nothing(gw):
    client = console(gw)
    await client.sign_in(TOKEN)
    page = await client.get("destinations")

    missing = await client.post("destinations/files/pause", {"back": "destinations"})
    wrong = await client.post("destinations/files/pause", {"csrf": "guess", "back": "destinations"})
    after = await client.get("destinations")

    assert page.code == 200 and "files" in page.text
    assert (missing.code, wrong.code) == (403, 403)
    assert 'class="state running"' in after.text and 'class="state paused"' not in after.text


@pytest_twisted.ensureDeferred
async def test_pause_with_the_csrf_token_pauses_through_the_admin_api_and_is_logged_with_who(gw):
    client = console(gw)
    await client.sign_in(TOKEN)
    page = await client.get("destinations")
    log = LogCapture().start()

    try:
        paused = await client.post("destinations/files/pause", {"csrf": page.field("csrf"), "back": "destinations"})
    finally:
        log.stop()

    assert log.lines_with("console destinations/files/pause by console from 127.0.0.1")
    assert paused.code == 200 and paused.url.endswith("/admin/ui/destinations")
    assert 'class="state paused"' in paused.text
    assert text_vi.TEXT["paused_done"].format(destination="files") in paused.text


@pytest_twisted.ensureDeferred
async def test_a_script_in_a_message_field_is_shown_as_text(gw):
    client = await connect_mllp(gw)
    ack = await send_and_receive(client, hl7(control_id="<script>alert(1)</script>"))
    client.transport.loseConnection()
    await client.closed
    browser = console(gw)
    await browser.sign_in(TOKEN)

    listing = await browser.get("messages?status=accepted")
    [row] = [r for r in outbox_rows(gw)]
    one = await browser.get(f"messages/{row['message_id']}")

    assert msa(ack)[1] == "AA"
    for page in (listing, one):
        assert page.code == 200
        assert "<script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


@pytest_twisted.ensureDeferred
async def test_the_language_follows_accept_language_then_the_switch(gw):
    client = console(gw)
    english = await client.get("login", headers={"accept-language": "en-GB,en;q=0.9,vi;q=0.5"})
    vietnamese = await client.get("login", headers={"accept-language": "fr, de"})
    switched = await client.get("language?to=en&back=login", headers={"accept-language": "vi"})

    assert text_en.TEXT["sign_in"] in english.text and 'lang="en"' in english.text
    assert text_vi.TEXT["sign_in"] in vietnamese.text and 'lang="vi"' in vietnamese.text
    assert switched.url.endswith("/admin/ui/login") and 'lang="en"' in switched.text


@pytest.mark.parametrize("header, language", [
    ("vi-VN,vi;q=0.9,en;q=0.8", "vi"), ("en-US,en;q=0.9,vi;q=0.8", "en"), ("fr-FR, en;q=0.5", "en"),
    ("de", "vi"), ("", "vi"), ("en;q=0.2, vi;q=0.9", "vi"), ("en;q=bad", "vi"),
])
def test_accept_language_picks_the_preferred_catalogue(header, language):
    assert accepted(header) == language


def test_both_catalogues_hold_the_same_words():
    assert set(text_en.TEXT) == set(text_vi.TEXT)
    assert all(text_vi.TEXT[k] for k in text_vi.TEXT)


@pytest_twisted.ensureDeferred
async def test_without_a_token_a_loopback_browser_signs_in_with_the_button_alone(tmp_path):
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin()])
    try:
        client = console(gateway)
        before = await client.get("reviews")
        signed_in = await client.sign_in()
        reviews = await client.get("reviews")
    finally:
        await gateway.stop()

    assert before.code == 401 and 'name="token"' not in before.text
    assert signed_in.code == 200 and signed_in.url.endswith("/admin/ui/destinations")
    assert reviews.code == 200 and text_vi.TEXT["no_reviews"] in reviews.text


@pytest_twisted.ensureDeferred
async def test_signing_out_ends_the_session(gw):
    client = console(gw)
    page = await client.sign_in(TOKEN)

    out = await client.post("logout", {"csrf": page.field("csrf")})
    after = await client.get("destinations")

    assert out.url.endswith("/admin/ui/login") and after.code == 401


def test_a_session_ends_when_idle_or_too_old():
    clock = Clock()
    sessions = Sessions(clock)
    idle, busy = sessions.start("a"), sessions.start("b")

    clock.advance(IDLE_SECONDS - 1)
    assert sessions.find(busy.id) is busy
    clock.advance(2)
    assert sessions.find(idle.id) is None and sessions.find(busy.id) is busy
    for _ in range(LIFETIME_SECONDS // IDLE_SECONDS + 1):
        clock.advance(IDLE_SECONDS - 1)
        sessions.find(busy.id)
    assert sessions.find(busy.id) is None
