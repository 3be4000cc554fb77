"""The operator console in a real headless Chromium, against a real gateway with real traffic: an
accepted child's ADT, an ADT whose CCCD has 11 digits (AE), one from an unknown sender (AR), twins
registered under their mother that wait for an identity review, and a destination that cannot
write (so every row it gets is dead). One browser session signs in and walks the pages: search →
one message, replay the error, show its body, retry a dead letter, pause and resume a destination,
accept the review, switch to English. What a person must see is checked in the DOM's text, and
each screenshot is a PNG of the window's size that is not blank."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from gateway.testing import GatewayUnderTest, require_program
from gateway.transports.console import text_en, text_vi
from plugins.immunization.tests.test_newborns import own_adt, placeholder
from tests.png_image import read_png
from tests.support import wait_until

TOKEN = "browser-secret-19"
WIDTH, HEIGHT = 1000, 700
VI, EN = text_vi.TEXT, text_en.TEXT


@pytest.fixture
def programs() -> tuple[str, str]:
    return require_program("chromium", "chromium"), require_program("chromedriver", "chromium-driver")


@pytest_twisted.async_yield_fixture
async def gateway(tmp_path, monkeypatch):
    monkeypatch.setenv("HSSK_TEST_ADMIN_TOKEN", TOKEN)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is wanted\n")
    under_test = GatewayUnderTest(tmp_path / "data", ["immunization", "dhg_his"], {
        "auth.admin_token_env": "HSSK_TEST_ADMIN_TOKEN", "outbox.poll_interval_seconds": 0.2,
        "destinations.files.kind": "file", "destinations.files.directory": str(tmp_path / "out"),
        "destinations.blocked.kind": "file", "destinations.blocked.directory": str(blocker / "out")})
    await under_test.start()
    yield under_test
    await under_test.stop()


def rows(gateway: GatewayUnderTest, sql: str, *params) -> list[tuple]:
    conn = sqlite3.connect(gateway.config.database_path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def traffic(gateway: GatewayUnderTest) -> None:
    connection = await gateway.connect_mllp()
    try:
        (await connection.send(own_adt("ADT-OK", cccd="079325000999", name="Trần^Văn Bình", mother=""))
         ).assert_accepted()
        (await connection.send(own_adt("ADT-AE", cccd="07932500099", name="Phạm^Thị Cúc", mother=""))
         ).assert_error()
        (await connection.send(own_adt("ADT-AR").replace(b"DHG_HIS", b"UNKNOWN_HIS"))).assert_rejected()
        for raw in (placeholder("TX1", niis="NIIS25000011", multiple="Y"),
                    placeholder("TX2", niis="NIIS25000012", multiple="Y"), own_adt("TWINX")):
            (await connection.send(raw)).assert_accepted()
    finally:
        connection.close()


def walk(base: str, chromium: str, chromedriver: str, shots: Path) -> dict[str, str]:
    """Sign in and click through the console; the visible text of each step, screenshots in ``shots``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.wait import WebDriverWait

    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WIDTH},{HEIGHT}", f"--user-data-dir={shots / 'profile'}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": "vi,en"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(60)
    driver.implicitly_wait(20)
    seen: dict[str, str] = {}

    def text() -> str:
        return driver.find_element(By.TAG_NAME, "body").text

    def step(name: str) -> None:
        seen[name] = text()
        driver.save_screenshot(str(shots / f"{name}.png"))

    def follow(element) -> None:
        """Click ``element`` and wait until the page it leads to has replaced this one: the old
        page carries a mark the new one lacks. While the page changes, Chromium may answer any
        question with an error about a node that has gone; the wait asks again."""
        driver.execute_script("window.hsskOldPage = true")
        element.click()
        WebDriverWait(driver, 60, ignored_exceptions=(WebDriverException,)).until(
            lambda d: d.execute_script("return window.hsskOldPage === undefined && document.readyState === 'complete'"))

    def press(xpath: str) -> None:
        follow(driver.find_element(By.XPATH, xpath))

    def open_link(text: str) -> None:
        follow(driver.find_element(By.LINK_TEXT, text))

    try:
        driver.get(base + "destinations")
        step("login")
        driver.find_element(By.NAME, "token").send_keys(TOKEN)
        press("//form[@id='login']//button")
        step("destinations")

        open_link(VI["messages"])
        driver.find_element(By.NAME, "control_id").send_keys("ADT-AE")
        press("//form[@id='search']//button")
        step("search")
        press("//table[@id='results']//tbody//a")
        step("message")
        press(f"//button[text()='{VI['replay']}']")
        step("replayed")
        press(f"//button[text()='{VI['show_body']}']")
        seen["body"] = driver.find_element(By.ID, "body").text
        step("body")

        open_link(VI["dead_letters"])
        step("dead_letters")
        press("//table[@id='dead']//tbody/tr[1]//button")
        step("retried")

        open_link(VI["destinations"])
        press("//tr[td/strong[text()='blocked']]//button")
        step("paused")
        press("//tr[td/strong[text()='blocked']]//button")
        step("resumed")

        open_link(VI["reviews"])
        step("reviews")
        driver.find_element(By.XPATH, "//section[contains(@class,'review')]//input[@name='candidate']").click()
        press(f"//section[contains(@class,'review')]//button[text()='{VI['accept']}']")
        step("accepted")

        open_link("English")
        step("english")
    finally:
        driver.quit()
    return seen


@pytest_twisted.ensureDeferred
async def test_an_operator_walks_the_console_in_a_real_browser(gateway, programs, tmp_path):
    await traffic(gateway)
    await wait_until(lambda: rows(gateway, "SELECT count(*) FROM outbox WHERE destination = 'blocked' AND state != "
                                           "'dead'") == [(0,)], what="every row for 'blocked' dead")
    [(ae_id,)] = rows(gateway, "SELECT id FROM messages WHERE control_id = 'ADT-AE'")
    host, port = gateway.address("http")
    shots = tmp_path / "shots"
    shots.mkdir()

    seen = await threads.deferToThreadPool(reactor, reactor.getThreadPool(), walk,
                                           f"http://{host}:{port}/admin/ui/", *programs, shots)

    assert VI["admin_token"] in seen["login"]
    assert "files" in seen["destinations"] and "blocked" in seen["destinations"]
    assert "ADT-AE" in seen["search"] and "ADT-OK" not in seen["search"]
    assert "AE" in seen["message"] and "CCCD" in seen["message"] and "PID" in seen["message"]
    assert VI["replayed_one"].split(" {id}")[0] in seen["replayed"]
    assert rows(gateway, "SELECT count(*) FROM messages WHERE replay_of = ?", ae_id) == [(1,)]
    assert "ADT-AE" in seen["body"] and "07932500099" in seen["body"]
    assert "07932500099" not in seen["message"] and "07932500099" not in seen["search"]
    assert "blocked" in seen["dead_letters"]
    assert VI["retried_done"].split(" {row}")[0] in seen["retried"]
    assert VI["paused_done"].format(destination="blocked") in seen["paused"]
    assert VI["resumed_done"].format(destination="blocked") in seen["resumed"]
    assert VI["reason_twins_without_birth_order"] in seen["reviews"]
    assert VI["accepted_done"].split(" {id}")[0] in seen["accepted"]
    assert rows(gateway, "SELECT state FROM person_reviews") == [("accepted",)]
    assert EN["destinations"] in seen["english"] and EN["sign_out"] in seen["english"]
    for name in ("login", "message", "body", "reviews"):
        image = read_png(shots / f"{name}.png")
        assert image.width == WIDTH and HEIGHT * 0.7 <= image.height <= HEIGHT, (name, image.width, image.height)
        assert image.distinct_colours() > 5 and image.grey_variance() > 100, name
