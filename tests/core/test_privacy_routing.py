"""The privacy policy in a running gateway: each destination's queued payload is what its
``privacy`` setting allows, the removals are counted, and nothing removed reaches the log."""
from __future__ import annotations

import dataclasses
import json

import pytest_twisted
from twisted.logger import formatEvent

from gateway.formats.hl7_model import records_from_hl7
from gateway.model.records import Encounter
from tests.support import (TestPlugin, connect_mllp, free_port, hl7, metric_value, msa, select_rows,
                           send_and_receive, start_gateway)

HIV_VISIT = ("PID|1||079085000123^^^BCA^NI||Nguyễn^Văn Thử||19850412|M",
             "PV1|1|O|KKB^^^79001||||||||||||||||KCB1^^^79001",
             "DG1|1||B20.7^Bệnh HIV^ICD10|Bệnh do HIV||F|||||||||1",
             "DG1|2||J18.9^Viêm phổi^ICD10|Viêm phổi||F")


async def start(tmp_path):
    plugin = TestPlugin()
    plugin.behaviour = records_from_hl7
    destinations = {
        "destinations.ehr.kind": "file", "destinations.ehr.directory": str(tmp_path / "ehr"),
        "destinations.bhxh.kind": "file", "destinations.bhxh.directory": str(tmp_path / "bhxh"),
        "destinations.bhxh.privacy": "full",
        "destinations.lab.kind": "mllp", "destinations.lab.format": "hl7v2",
        "destinations.lab.endpoint": f"tcp:127.0.0.1:{free_port()}",
        "destinations.lab.backoff_base_seconds": 3600, "destinations.lab.backoff_cap_seconds": 3600,
    }
    return await start_gateway(tmp_path / "data", plugins=[plugin], **destinations)


def payloads(gateway, control_id: str) -> dict[str, bytes]:
    rows = select_rows(gateway, "SELECT o.destination, o.payload FROM outbox o JOIN messages m ON m.id = o.message_id",
                       {"control_id": control_id}, alias="m.")
    return {row["destination"]: row["payload"] for row in rows}


@pytest_twisted.ensureDeferred
async def test_each_destination_gets_what_its_privacy_setting_allows(tmp_path, log_events):
    gateway = await start(tmp_path)
    try:
        client = await connect_mllp(gateway)
        ack = await send_and_receive(client, hl7(*HIV_VISIT, control_id="VISIT1"))
        plain = await send_and_receive(client, hl7(*HIV_VISIT[:2], "DG1|1||J18.9^Viêm phổi^ICD10|Viêm phổi||F",
                                                   control_id="PLAIN1"))
        client.transport.loseConnection()
    finally:
        await gateway.stop()

    assert msa(ack)[:3] == ["MSA", "AA", "VISIT1"] and msa(plain)[1] == "AA"
    sent = payloads(gateway, "VISIT1")
    assert set(sent) == {"ehr", "bhxh"}  # lab forwards the message as received: withheld
    ehr = json.loads(sent["ehr"])["records"]
    assert ehr["diagnosis"] == {"secondary": ["J18.9"]}
    assert "B20" not in json.dumps(ehr) and "HIV" not in json.dumps(ehr, ensure_ascii=False)
    assert json.loads(sent["bhxh"])["records"]["diagnosis"]["main"] == "B20.7"
    assert set(payloads(gateway, "PLAIN1")) == {"ehr", "bhxh", "lab"}

    assert metric_value(gateway, "hssk_privacy_removed_total", destination="ehr", category="hiv",
                        part="diagnosis") == 1
    assert metric_value(gateway, "hssk_privacy_removed_total", destination="ehr", category="hiv", part="text") == 1
    assert metric_value(gateway, "hssk_privacy_removed_total", destination="lab", category="hiv",
                        part="message") == 1
    assert metric_value(gateway, "hssk_privacy_removed_total", destination="bhxh", category="hiv",
                        part="diagnosis") == 0

    logged = [e for e in log_events if e.get("log_namespace") == "hssk.intake" and "privacy" in e.get("log_format", "")]
    assert len(logged) == 1 and logged[0]["control_id"] == "VISIT1"
    assert "B20" not in json.dumps({k: str(v) for k, v in logged[0].items()})


@dataclasses.dataclass(frozen=True)
class VendorEncounter(Encounter):
    """A vendor plugin's own visit record, with a field the privacy policy was never taught."""

    hiv_status: str = ""


@pytest_twisted.ensureDeferred
async def test_a_part_the_policy_does_not_know_is_withheld_from_filtered_destinations(tmp_path, log_events):
    """Fail-closed: the policy cannot say what ``hiv_status`` holds, so no filtered destination gets
    the record set; the full one does, and the sender's answer is unchanged."""
    plugin = TestPlugin()
    plugin.behaviour = lambda message: dataclasses.replace(
        records_from_hl7(message), encounter=VendorEncounter(ma_lk="KCB1", facility="79001", hiv_status="dương tính"))
    gateway = await start_gateway(tmp_path / "data", plugins=[plugin], **{
        "destinations.ehr.kind": "file", "destinations.ehr.directory": str(tmp_path / "ehr"),
        "destinations.bhxh.kind": "file", "destinations.bhxh.directory": str(tmp_path / "bhxh"),
        "destinations.bhxh.privacy": "full"})
    try:
        client = await connect_mllp(gateway)
        ack = await send_and_receive(client, hl7(*HIV_VISIT[:2], control_id="VENDOR1"))
        client.transport.loseConnection()
    finally:
        await gateway.stop()

    assert msa(ack)[1:3] == ["AA", "VENDOR1"]
    assert set(payloads(gateway, "VENDOR1")) == {"bhxh"}
    [withheld] = select_rows(gateway, "SELECT destination, reason, text FROM not_routed", {})
    assert (withheld["destination"], withheld["reason"]) == ("ehr", "privacy_unknown")
    assert "VendorEncounter.hiv_status" in withheld["text"] and "dương tính" not in withheld["text"]
    assert metric_value(gateway, "hssk_records_not_routed_total", destination="ehr", reason="privacy_unknown") == 1
    [logged] = [formatEvent(e) for e in log_events if e.get("log_namespace") == "hssk.intake"
                and "not routed" in formatEvent(e)]
    assert "not routed to ehr (privacy_unknown)" in logged and "dương tính" not in logged
