"""HTTP delivery against a real twisted.web store on 127.0.0.1 that can be told to fail.

The first group drives :class:`HttpDestination` alone (classification of every answer); the
second runs a whole gateway whose clock is a ``task.Clock``, so hours of backoff take
milliseconds while the HTTP traffic is real.
"""
from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater

from gateway.config import load_config
from gateway.core.destination import DEAD, DELIVERED, RETRY, Delivery
from gateway.core.destination_kinds import DestinationKinds
from gateway.core.outbox import get_row
from gateway.destinations.builtin import KINDS
from gateway.destinations.http import HttpDestination, parse_retry_after
from tests.fake_store import start_store, url_of
from tests.support import (TestPlugin, connect_mllp, hl7, metric_value, msa, run_clock_until, select_rows,
                           send_and_receive, start_gateway)


def destination_config(url: str, **extra):
    """The ``[destinations.store]`` table with its ``http`` settings, validated as at start-up."""
    values = {"destinations.store.kind": "http", "destinations.store.url": url}
    values.update({f"destinations.store.{k}": v for k, v in extra.items()})
    [configured] = DestinationKinds(KINDS).configure(load_config(environ={}, overrides=values).destinations)
    return configured


def delivery(payload: bytes = b'{"record": 1}', key: str = "k-1") -> Delivery:
    return Delivery(row_id=1, message_id=1, destination="store", idempotency_key=key, ordering_key="p",
                    content_type="application/json", payload=payload, attempts=0, created_at=0.0)


@pytest.fixture
def store():
    resource, listening = start_store(reactor)
    yield resource, listening
    resource.release_hanging()
    listening.stopListening()


async def deliver_once(url: str, **extra):
    configured = destination_config(url, **extra)
    destination = HttpDestination(configured.config, configured.settings, reactor)
    try:
        return await destination.deliver(delivery())
    finally:
        await destination.close()


@pytest_twisted.ensureDeferred
async def test_2xx_is_delivered_with_idempotency_key_content_type_and_auth_from_the_environment(store, monkeypatch):
    resource, listening = store
    monkeypatch.setenv("HSSK_TEST_STORE_TOKEN", "Bearer s3cret")

    result = await deliver_once(url_of(listening), auth_header_env="HSSK_TEST_STORE_TOKEN")

    assert (result.outcome, result.label) == (DELIVERED, "2xx")
    [request] = resource.received
    assert (request.idempotency_key, request.content_type, request.authorization, request.body) == (
        "k-1", "application/json", "Bearer s3cret", b'{"record": 1}')


@pytest.mark.parametrize("answer, outcome, label", [
    ("500", RETRY, "5xx"), ("502", RETRY, "5xx"), ("408", RETRY, "408"), ("429", RETRY, "429"),
    ("400", DEAD, "4xx"), ("404", DEAD, "4xx"), ("422", DEAD, "4xx")])
@pytest_twisted.ensureDeferred
async def test_status_classification(store, answer, outcome, label):
    resource, listening = store
    resource.behaviour.queued.append(answer)

    result = await deliver_once(url_of(listening))

    assert (result.outcome, result.label) == (outcome, label)
    assert result.reason.startswith(f"HTTP {answer}: ")


@pytest_twisted.ensureDeferred
async def test_dead_letter_reason_is_the_response_body(store):
    resource, listening = store
    resource.behaviour.queued.append("400")

    result = await deliver_once(url_of(listening))

    assert result.reason == "HTTP 400: rejected with 400: invalid record"


@pytest_twisted.ensureDeferred
async def test_503_retry_after_is_passed_to_the_dispatcher(store):
    resource, listening = store
    resource.behaviour.retry_after = "120"
    resource.behaviour.queued.append("503")

    result = await deliver_once(url_of(listening))

    assert (result.outcome, result.retry_after) == (RETRY, 120.0)


def test_retry_after_as_http_date():
    assert parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT", 1445412420.0) == 60.0
    assert parse_retry_after(b"soon", 0.0) is None
    assert parse_retry_after(b"\xb2", 0.0) is None  # "²" is a digit to str.isdigit, not to HTTP


@pytest_twisted.ensureDeferred
async def test_a_store_that_never_answers_times_out_as_retry(store):
    resource, listening = store
    resource.behaviour.queued.append("hang")

    result = await deliver_once(url_of(listening), response_timeout_seconds=0.3)

    assert (result.outcome, result.label) == (RETRY, "timeout")


@pytest_twisted.ensureDeferred
async def test_a_connection_dropped_mid_response_is_retry(store):
    resource, listening = store
    resource.behaviour.queued.append("drop")

    result = await deliver_once(url_of(listening))

    assert (result.outcome, result.label) == (RETRY, "connection")


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_is_retry(store):
    _, listening = store
    url = url_of(listening)
    await listening.stopListening()

    result = await deliver_once(url)

    assert (result.outcome, result.label) == (RETRY, "connection")
    assert "cannot connect" in result.reason


# --- through the dispatcher, with time under test control ---------------------------------------

PERSON_A = "PID|1||079085000111^^^BCA^NI||Nguyễn^Văn A||19850412|M"
PERSON_B = "PID|1||079190000222^^^BCA^NI||Trần^Thị B||19900101|F"


def outbox(gateway, **where) -> list[dict]:
    return select_rows(gateway, "SELECT o.*, m.control_id FROM outbox o JOIN messages m ON m.id = o.message_id",
                       where, alias="o.")


def accepted_control_ids(resource, gateway) -> list[str]:
    by_key = {row["idempotency_key"]: row["control_id"] for row in outbox(gateway)}
    return [by_key[key] for key in resource.accepted_keys()]


@pytest.fixture
def clock():
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock


@pytest_twisted.async_yield_fixture
async def delivering(tmp_path, store, clock):
    resource, listening = store
    plugin = TestPlugin()
    gateway = await start_gateway(
        tmp_path, plugins=[plugin], clock=clock, **{
            "destinations.store.kind": "http", "destinations.store.url": url_of(listening),
            "destinations.store.backoff_base_seconds": 10, "destinations.store.backoff_cap_seconds": 300,
            "destinations.store.circuit_failures": 3, "destinations.store.circuit_open_seconds": 60,
            "destinations.store.max_attempts": 5})
    client = await connect_mllp(gateway)
    yield gateway, resource, client
    client.transport.loseConnection()
    await gateway.stop()


@pytest_twisted.ensureDeferred
async def test_retried_row_is_redelivered_with_the_same_key_and_payload(delivering, clock):
    gateway, resource, client = delivering
    resource.behaviour.queued.extend(["500", "ok"])

    ack = await send_and_receive(client, hl7(PERSON_A, control_id="R1"))
    await run_clock_until(clock, lambda: outbox(gateway)[0]["attempts"] == 1)
    [row] = outbox(gateway)
    assert (msa(ack)[1], row["state"], row["last_result"]) == ("AA", "pending", "5xx")
    assert row["next_attempt_at"] <= clock.seconds() + 10

    clock.advance(10)
    await run_clock_until(clock, lambda: outbox(gateway)[0]["state"] == "delivered")

    first, second = resource.received
    assert (first.answered, second.answered) == (500, 200)
    assert first.idempotency_key == second.idempotency_key == row["idempotency_key"]
    assert first.body == second.body
    assert metric_value(gateway, "hssk_delivery_attempts_total", destination="store", outcome="pending",
                        result="5xx") == 1
    assert metric_value(gateway, "hssk_delivery_attempts_total", destination="store", outcome="delivered",
                        result="2xx") == 1


@pytest_twisted.ensureDeferred
async def test_a_persons_updates_stay_in_order_while_others_pass(delivering, clock):
    gateway, resource, client = delivering
    resource.behaviour.queued.append("503")
    resource.behaviour.retry_after = "30"

    for control_id, person in (("A1", PERSON_A), ("A2", PERSON_A), ("B1", PERSON_B)):
        await send_and_receive(client, hl7(person, control_id=control_id))
    await run_clock_until(clock, lambda: {r["control_id"]: r["state"] for r in outbox(gateway)}.get("B1") == "delivered"
               and outbox(gateway, state="pending") and outbox(gateway)[0]["attempts"] == 1)

    states = {r["control_id"]: r["state"] for r in outbox(gateway)}
    assert states == {"A1": "pending", "A2": "waiting", "B1": "delivered"}
    assert outbox(gateway)[0]["next_attempt_at"] >= clock.seconds() + 30  # Retry-After beats a shorter backoff

    clock.advance(30)
    await run_clock_until(clock, lambda: all(r["state"] == "delivered" for r in outbox(gateway)))

    assert accepted_control_ids(resource, gateway) == ["B1", "A1", "A2"]


@pytest_twisted.ensureDeferred
async def test_a_dead_row_does_not_block_the_persons_later_rows(delivering, clock):
    gateway, resource, client = delivering
    resource.behaviour.queued.append("400")

    await send_and_receive(client, hl7(PERSON_A, control_id="A1"))
    await send_and_receive(client, hl7(PERSON_A, control_id="A2"))
    await run_clock_until(clock, lambda: [r["state"] for r in outbox(gateway)] == ["dead", "delivered"])

    [dead] = outbox(gateway, state="dead")
    assert dead["last_error"] == "HTTP 400: rejected with 400: invalid record"
    assert dead["attempts"] == 1
    assert accepted_control_ids(resource, gateway) == ["A2"]


@pytest_twisted.ensureDeferred
async def test_a_store_answer_naming_the_patient_is_shown_masked_and_never_logged(delivering, clock, log_events):
    gateway, resource, client = delivering
    resource.behaviour.queued.append("400")
    resource.behaviour.reject_body = ("patient Nguyễn Văn A refused; CCCD079085000123; key=SO_CCCD_079085000123; "
                                      "card=gd4790000012345")
    await send_and_receive(client, hl7(PERSON_A, control_id="A1"))
    await run_clock_until(clock, lambda: [r["state"] for r in outbox(gateway)] == ["dead"])

    [dead] = outbox(gateway, state="dead")
    assert dead["last_error"] == ("HTTP 400: patient Nguyễn Văn A refused; CCCD0790*****123; "
                                  "key=SO_CCCD_0790*****123; card=gd47********345")
    conn = gateway.store.connect()
    try:  # stored as the store wrote it; every view of the row masks the name too
        assert get_row(conn, dead["id"])["last_error"].startswith("HTTP 400: patient Nguyễn V. A. refused;")
    finally:
        conn.close()
    [logged] = [e for e in log_events if "dead-lettered" in e.get("log_format", "")]
    assert (logged["row_id"], logged["result"]) == (dead["id"], "4xx")
    text = json.dumps([{k: str(v) for k, v in e.items()} for e in log_events], ensure_ascii=False)
    assert "Văn A" not in text and "079085000123" not in text and "4790000012345" not in text


@pytest_twisted.ensureDeferred
async def test_a_row_past_max_attempts_is_dead_lettered(delivering, clock):
    gateway, resource, client = delivering
    resource.behaviour.default = "500"

    await send_and_receive(client, hl7(PERSON_A, control_id="A1"))
    for attempt in range(1, 6):
        await run_clock_until(clock, lambda: outbox(gateway)[0]["attempts"] == attempt)
        clock.advance(300)

    [row] = outbox(gateway)
    assert row["state"] == "dead"
    assert row["last_error"].startswith("gave up after 5 attempts (max_attempts)")
    assert len(resource.received) == 5


def circuit_state(gateway) -> float:
    return metric_value(gateway, "hssk_destination_circuit_state", destination="store")


@pytest_twisted.ensureDeferred
async def test_circuit_opens_after_consecutive_failures_and_probes_once(delivering, clock):
    gateway, resource, client = delivering
    dispatcher = gateway.delivery.dispatchers["store"]
    resource.behaviour.default = "500"
    persons = [f"PID|1||0790800003{n:02d}^^^BCA^NI||Lê^Văn {n}||19800101|M" for n in range(5)]

    for n, person in enumerate(persons):
        await send_and_receive(client, hl7(person, control_id=f"P{n}"))
    await run_clock_until(clock, lambda: dispatcher.circuit.state == "open" and not dispatcher.in_flight)
    clock.advance(0)
    sent_before_opening = len(resource.received)
    assert sent_before_opening >= 3  # three failures in a row open it; requests already in flight finish

    clock.advance(59)  # every row's backoff (≤ 10 s) has ended, but the circuit stays open
    await deferLater(reactor, 0.2, clock.advance, 0)
    assert len(resource.received) == sent_before_opening
    assert circuit_state(gateway) == 2

    clock.advance(1)
    await run_clock_until(clock, lambda: len(resource.received) == sent_before_opening + 1 and not dispatcher.in_flight)
    await deferLater(reactor, 0.2, clock.advance, 0)
    assert len(resource.received) == sent_before_opening + 1  # one probe; it failed, so open again
    assert dispatcher.circuit.state == "open"

    resource.behaviour.default = "ok"
    for _ in range(5):
        clock.advance(60)
        await deferLater(reactor, 0.1, clock.advance, 0)
    await run_clock_until(clock, lambda: all(r["state"] == "delivered" for r in outbox(gateway)))
    assert circuit_state(gateway) == 0
    assert sorted(accepted_control_ids(resource, gateway)) == [f"P{n}" for n in range(5)]
