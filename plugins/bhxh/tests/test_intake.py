"""A HIS that submits to the BHXH portal re-points to the gateway unchanged: it logs in at
``/api/token/take`` with its own account, sends check-in and claim files to the portal's
endpoints with the portal's headers and form, and reads the portal's answers — over real sockets,
into a real journal and outbox. The token's expiry is driven by a clock the test holds."""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from urllib.parse import urlencode

import pytest
import pytest_twisted
from twisted.internet import task

from gateway.testing import GatewayUnderTest
from plugins.bhxh.intake import password_sha256
from plugins.bhxh.plugin import BhxhPlugin

SAMPLES = Path(__file__).resolve().parents[2] / "vnpt_his" / "samples"
FORM = "application/x-www-form-urlencoded"
USERNAME = "79025_BV"
PASSWORD = "mat-khau-79025"


def md5_upper(password: str) -> str:
    return hashlib.md5(password.encode("utf-8")).hexdigest().upper()


def settings(tmp_path: Path) -> dict:
    return {"plugins.vnpt_his.xml_facilities": ["79025"],
            "clients.bv_79025.facilities": ["79025"], "clients.bv_79025.addresses": ["10.79.25.0/24"],
            "plugins.bhxh.accounts": {USERNAME: {"client": "bv_79025", "password_sha256": password_sha256(PASSWORD)}},
            "plugins.bhxh.token_seconds": 600,
            "destinations.store.kind": "file", "destinations.store.directory": str(tmp_path / "out")}


@pytest.fixture
def clock():
    return task.Clock()


@pytest_twisted.async_yield_fixture
async def gateway(tmp_path, clock):
    gw = GatewayUnderTest(tmp_path / "data", plugins=["vnpt_his", BhxhPlugin(clock)], settings=settings(tmp_path))
    await gw.start()
    yield gw
    await gw.stop()


async def take_token(gateway, password: str = PASSWORD) -> dict:
    answer = await gateway.http.request("POST", "/api/token/take",
                                        urlencode({"username": USERNAME, "password": md5_upper(password)}).encode(),
                                        FORM)
    assert answer.status == 200
    return answer.json()


async def send(gateway, path: str, xml: bytes, token: dict | None, file_type: str = "130", facility: str = "79025"):
    headers = {} if token is None else {"accessToken": token["access_token"], "tokenId": token["id_token"],
                                        "passwordHash": md5_upper(PASSWORD)}
    form = urlencode({"username": USERNAME, "loaiHoSo": file_type, "maTinh": "79", "maCSKCB": facility,
                      "fileHSBase64": base64.b64encode(xml).decode("ascii")}).encode("ascii")
    answer = await gateway.http.request("POST", path, form, FORM, headers)
    assert answer.status == 200, answer.body
    return answer.json()


@pytest_twisted.ensureDeferred
async def test_a_his_logs_in_checks_in_and_submits_as_at_the_portal(gateway):
    login = await take_token(gateway)
    token = login["APIKey"]

    checkin = await send(gateway, "/api/qd130/checkInKcbQd4750", (SAMPLES / "xml4750_checkin.xml").read_bytes(),
                         token, file_type="0")
    claim = await send(gateway, "/api/qd130/guiHoSoXmlQD3176", (SAMPLES / "xml4750_noi_tru.xml").read_bytes(), token)
    again = await send(gateway, "/api/qd130/guiHoSoXmlQD130", (SAMPLES / "xml4750_noi_tru.xml").read_bytes(), token)

    assert (login["maKetQua"], token["username"], token["token_type"]) == ("200", USERNAME, "Bearer")
    assert (checkin["maKetQua"], claim["maKetQua"], again["maKetQua"]) == ("200", "200", "200")
    assert len(claim["thoiGianTiepNhan"]) == 14 and "already received" in again["thongDiep"]
    rows = {row["id"]: row for row in gateway.journal()}
    assert int(claim["maGiaoDich"]) in rows and again["maGiaoDich"] == claim["maGiaoDich"]
    assert rows[int(claim["maGiaoDich"])]["status"] == "accepted"
    assert rows[int(claim["maGiaoDich"])]["client"] == "bv_79025"
    assert {row["message_id"] for row in gateway.outbox(destination="store")} == {
        int(checkin["maGiaoDich"]), int(claim["maGiaoDich"])}


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_gets_no_token(gateway):
    login = await take_token(gateway, password="doan-sai")

    assert login["maKetQua"] == "401" and "APIKey" not in login
    assert "wrong username or password" in login["thongDiep"]


@pytest_twisted.ensureDeferred
async def test_a_file_without_a_token_is_answered_401_and_not_journaled(gateway):
    answer = await send(gateway, "/api/qd130/guiHoSoXmlQD4750", (SAMPLES / "xml4750_noi_tru.xml").read_bytes(), None)

    assert (answer["maKetQua"], answer["maGiaoDich"]) == ("401", "")
    assert gateway.journal() == []


@pytest_twisted.ensureDeferred
async def test_an_expired_token_is_answered_401_and_a_new_login_works(gateway, clock):
    token = (await take_token(gateway))["APIKey"]
    clock.advance(601)

    expired = await send(gateway, "/api/qd130/guiHoSoXmlQD4750", (SAMPLES / "xml4750_noi_tru.xml").read_bytes(), token)
    fresh = (await take_token(gateway))["APIKey"]
    accepted = await send(gateway, "/api/qd130/guiHoSoXmlQD4750", (SAMPLES / "xml4750_noi_tru.xml").read_bytes(), fresh)

    assert expired["maKetQua"] == "401" and "expired" in expired["thongDiep"]
    assert accepted["maKetQua"] == "200"


@pytest_twisted.ensureDeferred
async def test_a_malformed_file_is_answered_123_with_the_error_and_journaled(gateway):
    token = (await take_token(gateway))["APIKey"]

    answer = await send(gateway, "/api/qd130/guiHoSoXmlQD4750", b"<GIAMDINHHS><THONGTINDONVI>", token)

    assert answer["maKetQua"] == "123" and answer["maGiaoDich"]
    assert "file refused" in answer["thongDiep"]
    assert gateway.journal()[0]["id"] == int(answer["maGiaoDich"])
    assert gateway.outbox() == []


@pytest_twisted.ensureDeferred
async def test_a_form_without_the_file_is_answered_205(gateway):
    token = (await take_token(gateway))["APIKey"]
    form = urlencode({"username": USERNAME, "loaiHoSo": "130", "maTinh": "79", "maCSKCB": "79025"}).encode()

    answer = await gateway.http.request("POST", "/api/qd130/guiHoSoXmlQD4750", form, FORM,
                                        {"accessToken": token["access_token"], "tokenId": token["id_token"]})

    assert answer.json()["maKetQua"] == "205" and "fileHSBase64" in answer.json()["thongDiep"]


@pytest_twisted.ensureDeferred
async def test_a_file_of_another_facility_is_answered_403_as_the_accounts_client_may_not_send_it(gateway):
    token = (await take_token(gateway))["APIKey"]
    foreign = (SAMPLES / "xml4750_noi_tru.xml").read_bytes().replace(b"<MACSKCB>79025<", b"<MACSKCB>48202<")

    answer = await send(gateway, "/api/qd130/guiHoSoXmlQD4750", foreign, token, facility="48202")

    assert answer["maKetQua"] == "403" and "bv_79025" in answer["thongDiep"]
    assert gateway.outbox() == []


@pytest_twisted.ensureDeferred
async def test_wrong_passwords_lock_the_address_out_and_are_answered_429(tmp_path, clock):
    gw = GatewayUnderTest(tmp_path / "data", plugins=["vnpt_his", BhxhPlugin(clock)],
                          settings={**settings(tmp_path), "auth.max_failures": 2})
    await gw.start()
    try:
        first, second = await take_token(gw, "sai-1"), await take_token(gw, "sai-2")
        locked = await take_token(gw)
    finally:
        await gw.stop()

    assert (first["maKetQua"], second["maKetQua"], locked["maKetQua"]) == ("401", "401", "429")
