"""The portal double answers as the portal does (vn-standards §2.2–2.4), over a real socket."""
from __future__ import annotations

import base64
import json
from io import BytesIO
from urllib.parse import urlencode

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from gateway.testing.gateway import read_body
from plugins.bhxh.portal import password_hash
from plugins.bhxh.portal_client import PortalClient
from plugins.bhxh.tests.conftest import ACCOUNT, PASSWORD

CLAIM = b'<GIAMDINHHS><THONGTINDONVI><MACSKCB>92001</MACSKCB></THONGTINDONVI><CHUKYDONVI/></GIAMDINHHS>'


async def post(portal, path: str, form: dict, headers: dict | None = None) -> tuple[int, dict]:
    sent = Headers({b"content-type": [b"application/x-www-form-urlencoded"]})
    for name, value in (headers or {}).items():
        sent.addRawHeader(name.encode(), value.encode())
    response = await Agent(reactor).request(b"POST", f"{portal.url}/{path}".encode(), sent,
                                            FileBodyProducer(BytesIO(urlencode(form).encode())))
    return response.code, json.loads(await read_body(response))


async def token(portal) -> dict:
    status, answer = await post(portal, "api/token/take", {"username": ACCOUNT, "password": password_hash(PASSWORD)})
    assert (status, answer["maKetQua"]) == (200, "200")
    return {"accessToken": answer["APIKey"]["access_token"], "tokenId": answer["APIKey"]["id_token"],
            "passwordHash": password_hash(PASSWORD)}


def claim_form(**changes) -> dict:
    return {"username": ACCOUNT, "loaiHoSo": "130", "maTinh": "92", "maCSKCB": "92001",
            "fileHSBase64": base64.b64encode(CLAIM).decode(), **changes}


@pytest_twisted.ensureDeferred
async def test_a_password_not_hashed_as_upper_case_md5_gets_no_token(portal):
    status, answer = await post(portal, "api/token/take",
                                {"username": ACCOUNT, "password": password_hash(PASSWORD).lower()})

    assert (status, answer["maKetQua"], portal.logins) == (200, "401", 0)


@pytest_twisted.ensureDeferred
async def test_missing_or_malformed_form_fields_are_answered_205(portal):
    headers = await token(portal)
    answers = [await post(portal, "api/qd130/guiHoSoXmlQD4750", form, headers) for form in (
        claim_form(maTinh="9"), claim_form(maCSKCB=""), claim_form(loaiHoSo="0"), claim_form(fileHSBase64="%%%"))]

    assert [(status, answer["maKetQua"]) for status, answer in answers] == [(200, "205")] * 4
    assert portal.accepted == []


@pytest_twisted.ensureDeferred
async def test_an_expired_token_is_answered_401_and_an_unsigned_file_123(portal, portal_clock):
    headers = await token(portal)
    unsigned = await post(portal, "api/qd130/guiHoSoXmlQD3176", claim_form(), headers)
    portal_clock.advance(portal.token_lifetime_seconds)

    expired = await post(portal, "api/qd130/guiHoSoXmlQD3176", claim_form(), headers)

    assert (unsigned[1]["maKetQua"], "Chữ ký số" in unsigned[1]["thongDiep"]) == ("123", True)
    assert (expired[0], expired[1]["maKetQua"]) == (401, "401")


@pytest_twisted.ensureDeferred
async def test_outside_the_window_701_and_over_the_peak_limit_1001(portal, portal_clock):
    portal_clock.advance(3 * 3600)  # 09:00 Thursday, Vietnam time: peak hours
    headers = await token(portal)
    portal.window_open = False
    closed = await post(portal, "api/qd130/guiHoSoXmlQD4750", claim_form(), headers)
    portal.window_open = True
    portal.peak_limit_bytes = 10

    too_big = await post(portal, "api/qd130/guiHoSoXmlQD4750", claim_form(), headers)

    assert (closed[1]["maKetQua"], too_big[1]["maKetQua"]) == ("701", "1001")


@pytest_twisted.ensureDeferred
async def test_another_module_mounts_its_part_of_the_portal_on_the_same_server(portal):
    class CardCheck(Resource):
        isLeaf = True

        def render_POST(self, request):
            return b'{"maKetQua": "000"}'

    portal.mount("api/egw/KQNhanLichSuKCB2024", CardCheck())

    status, answer = await post(portal, "api/egw/KQNhanLichSuKCB2024", {})

    assert (status, answer) == (200, {"maKetQua": "000"})


@pytest_twisted.ensureDeferred
async def test_rows_in_flight_without_a_token_share_one_login(portal):
    client = PortalClient(portal.url, ACCOUNT, PASSWORD, "92", "4750", reactor, reactor, 5.0, 5.0)
    check_in = base64.b64encode(b"<CHI_TIEU_TRANG_THAI_KCB><CHUKYDONVI/></CHI_TIEU_TRANG_THAI_KCB>").decode()
    try:
        answers = await gatherResults([client.send("checkin", "92001", check_in) for _ in range(3)])
    finally:
        await client.close()

    assert ([a.code for a in answers], portal.logins) == (["200"] * 3, 1)
