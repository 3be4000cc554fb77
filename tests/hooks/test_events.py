"""``journal.queue_event``: outbox work that no inbound message caused. A plugin's event is
journaled as an ``event`` row operators see and replay, its record set routed, rendered and
queued in the same transaction, keyed by the plugin's own stable key, and delivered in order
behind the earlier records of the person it names.

The plugin is ``tests/hooks/person_links.py`` (a person merge, ``ADT^A40``); the record store is
a real HTTP server on 127.0.0.1. Nothing under ``gateway/`` knows the plugin."""
from __future__ import annotations

import dataclasses
import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from gateway.plugin import Event, Payload, Person, RecordSet
from tests.fake_store import start_store, url_of
from tests.hooks import person_links
from tests.hooks.support import installed, run_gateway_cli
from tests.support import (TestPlugin, connect_mllp, hl7, http_request, journal_rows, run_clock_until, select_rows,
                           send_and_receive, start_gateway)

SURVIVING, RETIRED = "079085000111", "079085000999"
PERSON = f"PID|1||{SURVIVING}^^^BCA^NI||Nguyễn^Văn A||19850412|M"
OTHER = "PID|1||079190000222^^^BCA^NI||Trần^Thị B||19900101|F"


def outbox(gateway) -> list[dict]:
    return select_rows(gateway, "SELECT o.*, m.control_id, m.transport FROM outbox o JOIN messages m "
                                "ON m.id = o.message_id", {}, alias="o.")


@pytest.fixture
def store():
    """A record store on 127.0.0.1 (resource, port) that answers 200 unless told otherwise."""
    started = start_store(reactor)
    yield started
    started[1].stopListening()


@pytest.fixture
def clock():
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock


def store_destination(listening, **extra) -> dict:
    return {"store": {"kind": "http", "url": url_of(listening), "backoff_base_seconds": 10,
                      "backoff_cap_seconds": 300, **extra}}


@pytest_twisted.ensureDeferred
async def test_a_merge_event_reaches_the_store_in_order_behind_the_persons_earlier_records(tmp_path, store, clock):
    resource, listening = store
    resource.behaviour.queued.append("503")
    resource.behaviour.retry_after = "30"
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), person_links], clock=clock,
                             destinations=store_destination(listening))
    try:
        client = await connect_mllp(gw)
        for control_id, person in (("A1", PERSON), ("A2", PERSON), ("B1", OTHER)):
            await send_and_receive(client, hl7(person, control_id=control_id))
        client.transport.loseConnection()
        await run_clock_until(clock, lambda: {r["control_id"]: r["state"] for r in outbox(gw)}.get("B1") == "delivered")
        queued = await person_links.merge(person_links.JOURNAL, "CCCD", RETIRED, SURVIVING)
        states = {r["control_id"]: r["state"] for r in outbox(gw)}

        clock.advance(30)
        await run_clock_until(clock, lambda: all(r["state"] == "delivered" for r in outbox(gw)))
    finally:
        await gw.stop()

    event_key = f"merge:CCCD:{RETIRED}:{SURVIVING}"
    assert (queued.ack_code, queued.duplicate) == ("AA", False)
    assert states == {"A1": "pending", "A2": "waiting", "B1": "delivered", event_key: "waiting"}
    by_key = {r["idempotency_key"]: r["control_id"] for r in outbox(gw)}
    assert [by_key[key] for key in resource.accepted_keys()] == ["B1", "A1", "A2", event_key]
    merge = json.loads(resource.received[-1].body)
    assert merge["source"]["control_id"] == event_key and merge["records"]["kind"] == "ADT^A40"
    assert merge["records"]["person"]["previous_identifiers"] == [{"system": "CCCD", "value": RETIRED}]
    [row] = journal_rows(gw, transport="event")
    assert (row["id"], row["sender"], row["message_type"], row["plugin"], row["status"]) == (
        queued.message_id, "EVENT|person_links", "ADT^A40", "person_links", "accepted")


@pytest_twisted.ensureDeferred
async def test_an_event_queued_again_is_a_repeat_and_its_key_cannot_carry_other_content(tmp_path, store):
    _, listening = store
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), person_links],
                             destinations=store_destination(listening, message_types=["ADT^*"]))
    journal = person_links.JOURNAL
    try:
        first = await journal.queue_event(person_links.merge_event("CCCD", RETIRED, SURVIVING))
        again = await journal.queue_event(person_links.merge_event("CCCD", RETIRED, SURVIVING))
        other = await journal.queue_event(Event("person_links", f"merge:CCCD:{RETIRED}:{SURVIVING}", "ADT^A40",
                                                RecordSet(kind="ADT^A40", person=Person())))
    finally:
        await gw.stop()

    assert (again.message_id, again.ack_code, again.duplicate) == (first.message_id, "AA", True)
    assert (other.ack_code, other.issues[0].code) == ("AE", 205)
    assert len(outbox(gw)) == 1


@pytest_twisted.ensureDeferred
async def test_events_are_routed_by_kind_and_plugin_like_messages(tmp_path, store):
    _, listening = store
    destinations = {"labs": {"kind": "file", "directory": "labs", "message_types": ["ORU^*"]},
                    "mpi": {"kind": "file", "directory": "mpi", "plugins": ["person_links"]},
                    "his": {"kind": "file", "directory": "his", "plugins": ["test_his"]}}
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), person_links], destinations=destinations)
    try:
        queued = await person_links.JOURNAL.queue_event(person_links.merge_event("CCCD", RETIRED, SURVIVING))
    finally:
        await gw.stop()

    assert queued.ack_code == "AA"
    assert [r["destination"] for r in outbox(gw)] == ["mpi"]


@pytest_twisted.ensureDeferred
async def test_an_event_naming_its_destinations_goes_to_exactly_those_whatever_their_routes(tmp_path):
    destinations = {"labs": {"kind": "file", "directory": "labs", "message_types": ["ORU^*"]},
                    "mpi": {"kind": "file", "directory": "mpi", "plugins": ["person_links"]},
                    "his": {"kind": "file", "directory": "his", "plugins": ["test_his"]}}
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), person_links], destinations=destinations)
    event = dataclasses.replace(person_links.merge_event("CCCD", RETIRED, SURVIVING), destinations=("labs", "gone"))
    try:
        queued = await person_links.JOURNAL.queue_event(event)
    finally:
        await gw.stop()

    assert queued.ack_code == "AA"
    assert [r["destination"] for r in outbox(gw)] == ["labs"]


class MpiRenderer:
    """Renders format ``mpi`` for the national person index: broken for merges until fixed."""

    def __init__(self) -> None:
        self.broken = True

    def hssk_render(self, records, destination, message, idempotency_key):
        if destination.format != "mpi":
            return None
        if self.broken:
            raise KeyError("previous_identifiers")
        return Payload("application/json", json.dumps({"id": idempotency_key, "kind": records.kind}).encode())


@pytest_twisted.ensureDeferred
async def test_an_event_a_renderer_fails_is_journaled_and_an_operator_replays_it_once_fixed(tmp_path):
    renderer = MpiRenderer()
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), person_links, renderer],
                             destinations={"mpi": {"kind": "file", "directory": "mpi", "format": "mpi"}})
    try:
        failed = await person_links.JOURNAL.queue_event(person_links.merge_event("CCCD", RETIRED, SURVIVING))
        queued_before = len(outbox(gw))
        renderer.broken = False
        replayed = await http_request(gw, "POST", f"/admin/messages/{failed.message_id}/replay")
    finally:
        await gw.stop()

    assert (failed.ack_code, failed.issues[0].code) == ("AE", 207)
    assert "plugin person_links failed in render" in failed.issues[0].text and queued_before == 0
    assert replayed.code == 200, replayed.body
    [entry] = replayed.json()["replayed"]
    assert (entry["was"], entry["ack_code"], entry["queued"]) == ("AE", "AA", 1)
    assert [r["transport"] for r in outbox(gw)] == ["event"]


@pytest_twisted.ensureDeferred
async def test_a_plugin_command_queues_an_event_on_a_stopped_gateways_journal(tmp_path):
    data = tmp_path / "data"
    gw = await start_gateway(data, plugins=[TestPlugin(), person_links],
                             destinations={"mpi": {"kind": "file", "directory": "mpi"}})
    await gw.stop()
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{data}"\n[destinations.mpi]\nkind = "file"\ndirectory = "mpi"\n')
    env = installed(tmp_path, {"person_links": "tests.hooks.person_links"})

    merged = run_gateway_cli(env, "person_links", "merge", RETIRED, SURVIVING, "--config", config)
    listed = run_gateway_cli(env, "person_links", "merges", "--config", config)
    nowhere = run_gateway_cli(env, "person_links", "merges", "--data-dir", tmp_path / "nowhere")

    assert merged.returncode == 0, merged.stderr
    answer = json.loads(merged.stdout)
    assert (answer["ack_code"], answer["duplicate"]) == ("AA", False)
    assert json.loads(listed.stdout) == [{"system": "CCCD", "retired": "0790*****999", "surviving": "0790*****111"}]
    [row] = outbox(gw)
    assert (row["message_id"], row["destination"], row["state"]) == (answer["message_id"], "mpi", "pending")
    assert nowhere.returncode == 2 and "no journal at" in nowhere.stderr
