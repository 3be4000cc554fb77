"""``/admin/messages`` and ``/admin/identity/reviews`` (what the console's pages read), over real
HTTP on a running gateway: search by each criterion, one message with its attempts and outbox
rows, its body only on its own endpoint, and the review queue's errors."""
from __future__ import annotations

import pytest_twisted

from gateway.model.outcome import ContentError, Issue
from tests.support import (
    TestPlugin, connect_mllp, hl7, http_request, send_and_receive, standard_records, start_gateway,
)

OTHER_PERSON = "PID|1||079090000999^^^BCA^NI||Trần^Văn Bình||19900101|M"


def refuse_ae(message):
    if message.control_id.startswith("AE"):
        raise ContentError([Issue(101, "PID-3: CCCD 079085000123 is required here", "PID^1^3")])
    return standard_records(message)


@pytest_twisted.async_yield_fixture
async def gw(tmp_path):
    plugin = TestPlugin()
    plugin.behaviour = refuse_ae
    gateway = await start_gateway(tmp_path / "data", plugins=[plugin], **{
        "destinations.files.kind": "file", "destinations.files.directory": "out"})
    client = await connect_mllp(gateway)
    for raw in (hl7(control_id="A1"), hl7(OTHER_PERSON, control_id="A2"),
                hl7(control_id="L1", sending_app="LIS_THU_NGHIEM", message_type="ORU^R01^ORU_R01"),
                hl7(control_id="AE1")):
        await send_and_receive(client, raw)
    client.transport.loseConnection()
    await client.closed
    yield gateway
    await gateway.stop()


async def control_ids(gateway, query: str) -> list[str]:
    answer = await http_request(gateway, "GET", "/admin/messages?" + query)
    assert answer.code == 200, answer.body
    return [m["control_id"] for m in answer.json()["messages"]]


@pytest_twisted.ensureDeferred
async def test_search_by_each_criterion(gw):
    assert await control_ids(gw, "") == ["AE1", "L1", "A2", "A1"]
    assert await control_ids(gw, "control_id=A2") == ["A2"]
    assert await control_ids(gw, "status=error") == ["AE1"]
    assert await control_ids(gw, "type=ORU*") == ["L1"]
    assert await control_ids(gw, "type=ADT^A04") == ["AE1", "A2", "A1"]
    assert await control_ids(gw, "sender=LIS_THU_NGHIEM") == ["L1"]
    assert await control_ids(gw, "facility=79001") == ["AE1", "L1", "A2", "A1"]
    assert await control_ids(gw, "facility=79002") == []
    assert await control_ids(gw, "person=079090000999") == ["A2"]
    assert await control_ids(gw, "person=079085000123") == ["L1", "A1"]
    assert await control_ids(gw, "until=2000-01-01") == []
    assert await control_ids(gw, "since=2000-01-01&limit=1") == ["AE1"]


@pytest_twisted.ensureDeferred
async def test_bad_search_parameters_are_400_naming_them(gw):
    unknown = await http_request(gw, "GET", "/admin/messages?destination=files")
    status = await http_request(gw, "GET", "/admin/messages?status=lost")
    since = await http_request(gw, "GET", "/admin/messages?since=yesterday")

    assert unknown.code == 400 and "unknown parameter destination" in unknown.json()["error"]
    assert status.code == 400 and "status='lost'" in status.json()["error"]
    assert since.code == 400 and "since='yesterday'" in since.json()["error"]


@pytest_twisted.ensureDeferred
async def test_one_message_has_its_decision_attempts_and_rows_but_not_its_body(gw):
    [ae] = (await http_request(gw, "GET", "/admin/messages?control_id=AE1")).json()["messages"]
    [a1] = (await http_request(gw, "GET", "/admin/messages?control_id=A1")).json()["messages"]
    error = (await http_request(gw, "GET", f"/admin/messages/{ae['id']}")).json()
    accepted = (await http_request(gw, "GET", f"/admin/messages/{a1['id']}")).json()
    body = (await http_request(gw, "GET", f"/admin/messages/{a1['id']}/body")).json()
    missing = await http_request(gw, "GET", "/admin/messages/999999")

    assert error["ack_code"] == "AE" and error["errors"][0]["location"] == "PID^1^3"
    assert "079085000123" not in error["errors"][0]["text"] and "0790" in error["errors"][0]["text"]
    assert "raw" not in error and "body" not in error and error["raw_bytes"] > 0
    assert [a["id"] for a in error["attempts"]] == [ae["id"]] and error["outbox"] == []
    assert [r["destination"] for r in accepted["outbox"]] == ["files"]
    assert body["body"].startswith("MSH|") and "079085000123" in body["body"] and "A1" in body["body"]
    assert missing.code == 404


@pytest_twisted.ensureDeferred
async def test_the_review_queue_is_empty_and_deciding_an_unknown_review_is_404(gw):
    listed = await http_request(gw, "GET", "/admin/identity/reviews?state=all")
    unknown = await http_request(gw, "POST", "/admin/identity/reviews/7/accept")
    bad = await http_request(gw, "GET", "/admin/identity/reviews?state=maybe")

    assert listed.code == 200 and listed.json() == {"reviews": []}
    assert unknown.code == 404 and unknown.json()["error"] == "no review 7"
    assert bad.code == 400
