"""What a destination cannot take is not the sender's error (DESIGN §4: AE means the sender must
fix the data). A record set whose format has no place for it (an ADT without an episode for an
``xml130`` destination, an XML 130 file for an ``hl7v2`` one, a message the privacy policy would
cut for ``hl7v2``, whatever a plugin's renderer says it cannot write) is accepted, queued for the
destinations that can take it, and journaled, counted and logged as not routed, with the reason;
a renderer that raises anything else is still the plugin's fault, AE 207."""
from __future__ import annotations

import json

import pytest_twisted
from twisted.logger import formatEvent

from gateway.core.hookspecs import Payload
from gateway.formats.hl7_model import records_from_hl7
from gateway.model.hooks import hookimpl
from gateway.model.outcome import NotRenderable
from tests.support import (TestPlugin, connect_mllp, err_segments, hl7, http_request, metric_value, msa, outbox_rows,
                           run_cli, select_rows, send_and_receive, start_gateway)
from tests.transports.test_xml_intake import TestDocumentPlugin, noi_tru

#: An ADT^A04 with a person and no visit: no PV1, so no MA_LK.
PERSON_ONLY = hl7(control_id="NO-EPISODE")
VISIT = hl7("PID|1||079085000123^^^BCA^NI||Nguyễn^Văn Thử||19850412|M",
            "PV1|1|O|KKB^^^79001||||||||||||||||79001.2503150001^^^79001^VN", control_id="VISIT")


class CsvRenderer:
    """A plugin's own format: ``csv`` needs a BHYT card, and ``broken`` is a renderer with a bug."""

    @hookimpl
    def hssk_render(self, records, destination, message, idempotency_key):
        if destination.format == "broken":
            raise KeyError("MA_THE")
        if destination.format != "csv":
            return None
        if records.person is None or not records.person.identifier("BHYT"):
            raise NotRenderable("no_card", "a csv row is keyed by the BHYT card, and this record set has none")
        return Payload("text/csv", f"{idempotency_key},{records.person.identifier('BHYT')}\n".encode())


def destinations(tmp_path, **formats: str) -> dict:
    return {f"destinations.{name}.{key}": value for name, fmt in formats.items()
            for key, value in (("kind", "file"), ("format", fmt), ("directory", str(tmp_path / name)))}


def not_routed(gateway) -> list[dict]:
    return select_rows(gateway, "SELECT m.control_id, n.destination, n.reason, n.text FROM not_routed n "
                                "JOIN messages m ON m.id = n.message_id", {}, alias="n.")


async def exchange(gateway, *messages: bytes) -> list[bytes]:
    client = await connect_mllp(gateway)
    try:
        return [await send_and_receive(client, raw) for raw in messages]
    finally:
        client.transport.loseConnection()
        await client.closed


@pytest_twisted.ensureDeferred
async def test_a_message_without_an_episode_is_accepted_and_not_routed_to_an_xml130_destination(tmp_path, log_events):
    plugin = TestPlugin()
    plugin.behaviour = records_from_hl7
    gateway = await start_gateway(tmp_path / "data", plugins=[plugin],
                                  **destinations(tmp_path, province="xml130", local="json"))
    try:
        person_only, visit = await exchange(gateway, PERSON_ONLY, VISIT)
    finally:
        await gateway.stop()

    assert msa(person_only)[1] == "AA" and err_segments(person_only) == []
    assert msa(visit)[1] == "AA"
    queued = {(r["message_id"], r["destination"]) for r in outbox_rows(gateway)}
    assert queued == {(1, "local"), (2, "local"), (2, "province")}
    [row] = not_routed(gateway)
    assert (row["control_id"], row["destination"], row["reason"]) == ("NO-EPISODE", "province", "no_episode")
    assert "MA_LK" in row["text"] and "PV1-19" in row["text"]
    assert metric_value(gateway, "hssk_records_not_routed_total", destination="province", reason="no_episode") == 1
    assert metric_value(gateway, "hssk_records_not_routed_total", destination="local", reason="no_episode") == 0
    decided = [formatEvent(e) for e in log_events if formatEvent(e).startswith("decided message 1:")]
    assert decided == ["decided message 1: mllp from TEST_HIS|79001, control id NO-EPISODE, ADT^A04, plugin test_his: "
                       "AA, not routed to province (no_episode)"]


@pytest_twisted.ensureDeferred
async def test_a_plugin_renderer_may_decline_a_record_set_and_a_renderer_bug_is_still_ae_207(tmp_path):
    plugin = TestPlugin()
    plugin.behaviour = records_from_hl7
    gateway = await start_gateway(tmp_path / "data", plugins=[plugin, CsvRenderer()],
                                  **destinations(tmp_path, claims="csv", local="json"))
    try:
        [declined] = await exchange(gateway, VISIT)
    finally:
        await gateway.stop()
    broken_gateway = await start_gateway(tmp_path / "broken", plugins=[plugin, CsvRenderer()],
                                         **destinations(tmp_path, claims="broken"))
    try:
        [broken] = await exchange(broken_gateway, VISIT)
    finally:
        await broken_gateway.stop()

    assert msa(declined)[1] == "AA"
    assert [(r["destination"], r["reason"]) for r in not_routed(gateway)] == [("claims", "no_card")]
    assert msa(broken)[1] == "AE"
    assert [e[3].split("^")[0] for e in err_segments(broken)] == ["207"]
    assert metric_value(broken_gateway, "hssk_plugin_exceptions_total", plugin="test_his", stage="render") == 1
    assert not_routed(broken_gateway) == []


@pytest_twisted.ensureDeferred
async def test_an_xml130_file_is_accepted_and_not_routed_to_an_hl7v2_destination(tmp_path):
    gateway = await start_gateway(tmp_path / "data", plugins=[TestDocumentPlugin()],
                                  **destinations(tmp_path, forward="hl7v2", local="json"))
    try:
        response = await http_request(gateway, "POST", "/xml130", noi_tru(), "application/xml")
    finally:
        await gateway.stop()

    assert (response.code, response.json()["status"]) == (200, "accepted")
    assert [r["destination"] for r in outbox_rows(gateway)] == ["local"]
    assert [(r["destination"], r["reason"]) for r in not_routed(gateway)] == [("forward", "not_hl7")]


@pytest_twisted.ensureDeferred
async def test_operators_see_what_was_not_routed_per_destination_and_per_message(tmp_path):
    plugin = TestPlugin()
    plugin.behaviour = records_from_hl7
    settings = destinations(tmp_path, province="xml130", local="json")
    gateway = await start_gateway(tmp_path / "data", plugins=[plugin], **settings)
    try:
        await exchange(gateway, PERSON_ONLY, VISIT, hl7(control_id="NO-EPISODE-2"))
    finally:
        await gateway.stop()
    config = tmp_path / "gateway.toml"
    config.write_text("".join(f'[destinations.{name}]\nkind = "file"\nformat = "{fmt}"\ndirectory = "{tmp_path / name}"\n'
                              for name, fmt in (("province", "xml130"), ("local", "json"))), encoding="utf-8")
    data_dir = tmp_path / "data"

    status = json.loads(run_cli("outbox", "status", "--json", "--config", config, "--data-dir", data_dir).stdout)
    table = run_cli("outbox", "status", "--config", config, "--data-dir", data_dir).stdout.decode().splitlines()
    shown = json.loads(run_cli("messages", "show", "1", "--data-dir", data_dir).stdout)

    assert (status["province"]["not_routed"], status["local"]["not_routed"]) == (2, 0)
    column = table[0].index("NOT ROUTED")
    province = next(line for line in table if line.startswith("province"))
    assert province[column:column + len("NOT ROUTED")].strip() == "2"
    assert [(n["destination"], n["reason"]) for n in shown["not_routed"]] == [("province", "no_episode")]
    assert "MA_LK" in shown["not_routed"][0]["text"]


@pytest_twisted.ensureDeferred
async def test_a_message_the_privacy_policy_would_cut_is_not_routed_to_an_hl7v2_destination(tmp_path):
    from tests.core.test_privacy_routing import HIV_VISIT, start

    gateway = await start(tmp_path)
    try:
        [ack] = await exchange(gateway, hl7(*HIV_VISIT, control_id="VISIT1"))
    finally:
        await gateway.stop()

    assert msa(ack)[1] == "AA"
    [row] = not_routed(gateway)
    assert (row["control_id"], row["destination"], row["reason"]) == ("VISIT1", "lab", "privacy")
    assert metric_value(gateway, "hssk_records_not_routed_total", destination="lab", reason="privacy") == 1
