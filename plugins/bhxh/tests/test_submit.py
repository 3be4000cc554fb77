"""A claim through a real gateway to the portal double over real sockets: signed, checked in,
submitted; retried, dead-lettered and re-logged-in as the portal's answers say."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from gateway.testing import edit_xml130, read_sample
from plugins.bhxh.signing import signature_problem
from plugins.bhxh.testing import Fault
from plugins.bhxh.tests.conftest import ACCOUNT, FACILITY, SAMPLE

FINISHED = ("delivered", "dead")


async def submitted(gateway, http, raw: bytes | None = None) -> dict:
    """POST the sample claim, wait until its bhxh row is delivered or dead, return the row."""
    answer = await http.post_xml130(raw or read_sample(SAMPLE))
    assert answer.status == 200, answer.body
    message_id = answer.json()["message_id"]
    for _ in range(500):
        rows = gateway.outbox(message_id=message_id, destination="bhxh")
        if rows and rows[0]["state"] in FINISHED:
            return rows[0]
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"the bhxh row of message {message_id} did not finish: {rows}")


def outbox_show(gateway, row_id: int) -> dict:
    cli = Path(sys.executable).parent / "hssk-gateway"
    result = subprocess.run([str(cli), "outbox", "show", str(row_id), "--data-dir", gateway.config.data_dir],
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest_twisted.ensureDeferred
async def test_claim_is_signed_checked_in_and_accepted_with_its_ma_giao_dich_in_outbox_show(
        hssk_gateway, hssk_http, portal, certificate):
    row = await submitted(hssk_gateway, hssk_http)

    assert (row["state"], row["attempts"]) == ("delivered", 1)
    check_in, claim = portal.accepted
    assert (check_in.kind, claim.kind) == ("checkin", "claim")
    assert (claim.standard, claim.username, claim.ma_cskcb, claim.ma_tinh) == ("4750", ACCOUNT, FACILITY, "92")
    assert signature_problem(claim.file, certificate.pem_bytes) is None
    assert b"<MA_LK>92001.2505100001</MA_LK>" in check_in.file
    detail = json.loads(outbox_show(hssk_gateway, row["id"])["last_detail"])
    assert detail == {"checkInMaGiaoDich": check_in.ma_giao_dich, "maKetQua": "200",
                      "maGiaoDich": claim.ma_giao_dich, "thoiGianTiepNhan": "20261203060000"}


@pytest_twisted.ensureDeferred
async def test_a_5xx_from_the_portal_is_retried_without_a_second_check_in(hssk_gateway, hssk_http, portal):
    portal.fail_next(1, http_status=503)

    row = await submitted(hssk_gateway, hssk_http)

    assert (row["state"], row["attempts"]) == ("delivered", 2)
    assert [a.kind for a in portal.accepted] == ["checkin", "claim"]
    assert portal.answers == [("token", "200"), ("checkin", "200"), ("claim", "HTTP 503"), ("claim", "200")]


@pytest_twisted.ensureDeferred
async def test_a_save_error_124_is_retried_until_accepted(hssk_gateway, hssk_http, portal):
    portal.fail_next(2, "124")

    row = await submitted(hssk_gateway, hssk_http)

    assert (row["state"], row["attempts"]) == ("delivered", 3)
    assert [kind for kind, code in portal.answers if code == "124"] == ["claim", "claim"]


@pytest_twisted.ensureDeferred
async def test_a_file_format_error_123_is_dead_lettered_with_the_portals_message(hssk_gateway, hssk_http, portal):
    portal.fail_next(1, "123")

    row = await submitted(hssk_gateway, hssk_http)

    assert (row["state"], row["attempts"]) == ("dead", 1)
    assert "portal answered claim with 123" in row["last_error"]
    assert json.loads(outbox_show(hssk_gateway, row["id"])["last_detail"])["maKetQua"] == "123"
    assert [a.kind for a in portal.accepted] == ["checkin"]


@pytest_twisted.ensureDeferred
async def test_a_token_that_expires_in_the_middle_of_a_run_costs_one_login_and_no_failure(
        hssk_gateway, hssk_http, portal, portal_clock):
    first = await submitted(hssk_gateway, hssk_http)
    portal_clock.advance(portal.token_lifetime_seconds + 1)

    second = await submitted(hssk_gateway, hssk_http, read_sample(SAMPLE).replace(b"20250510", b"20250511"))

    assert (first["state"], second["state"], second["attempts"]) == ("delivered", "delivered", 1)
    assert portal.logins == 2
    assert ("checkin", "401") in portal.answers
    assert len(portal.accepted) == 4


@pytest.mark.parametrize("bhxh_settings", [{"response_timeout_seconds": 0.3}])
@pytest_twisted.ensureDeferred
async def test_a_portal_slower_than_the_response_timeout_is_retried(hssk_gateway, hssk_http, portal):
    portal.script(Fault("claim", delay_seconds=1.0))

    row = await submitted(hssk_gateway, hssk_http)

    assert (row["state"], row["attempts"]) == ("delivered", 2)
    # The portal took the first claim and answered too late: delivery is at least once.
    assert [a.kind for a in portal.accepted] == ["checkin", "claim", "claim"]


@pytest.mark.parametrize("bhxh_settings", [{"ma_cskcb": "92002"}])
@pytest_twisted.ensureDeferred
async def test_another_facilitys_claim_is_not_routed_to_this_facilitys_account(hssk_gateway, hssk_http, portal):
    answer = await hssk_http.post_xml130(read_sample(SAMPLE))

    assert answer.status == 200
    [not_routed] = hssk_gateway.not_routed(message_id=answer.json()["message_id"])
    assert (not_routed["destination"], not_routed["reason"]) == ("bhxh", "other_facility")
    assert portal.answers == []


@pytest_twisted.ensureDeferred
async def test_an_emergency_is_submitted_without_a_check_in(hssk_gateway, hssk_http, portal):
    emergency = edit_xml130(read_sample(SAMPLE), lambda xml: xml.replace(
        b"<MA_DOITUONG_KCB>1.1</MA_DOITUONG_KCB>", b"<MA_DOITUONG_KCB>2</MA_DOITUONG_KCB>"))

    row = await submitted(hssk_gateway, hssk_http, emergency)

    assert row["state"] == "delivered"
    assert [a.kind for a in portal.accepted] == ["claim"]



@pytest.mark.parametrize("bhxh_settings", [{"limit_bytes": 4096}])
@pytest_twisted.ensureDeferred
async def test_a_file_over_the_limit_at_any_hour_is_dead_lettered_without_asking_the_portal(
        hssk_gateway, hssk_http, portal):
    row = await submitted(hssk_gateway, hssk_http)

    assert (row["state"], row["attempts"]) == ("dead", 1)
    assert "over the portal's limit of 4096 bytes at any hour" in row["last_error"]
    assert portal.answers == []
