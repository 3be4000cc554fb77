"""The ``mllp`` destination against a real MLLP receiver on 127.0.0.1: what each ACK means,
one message at a time over one connection, reconnecting when the stream cannot be trusted, and
the gateway forwarding an accepted message end to end."""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock

from gateway.config import ConfigError, load_config
from gateway.core.destination import DEAD, DELIVERED, RETRY, Delivery
from gateway.core.destination_kinds import DestinationKinds
from gateway.destinations.builtin import KINDS
from gateway.destinations.mllp import MllpDestination
from gateway.formats.framing import FrameDecoder, Violation, wrap
from tests.support import (connect_mllp, hl7, msa, outbox_rows, replace_msh_field, send_and_receive, start_gateway,
                           wait_until)

#: What the receiver's AE says; it quotes a CCCD, as real receivers do.
AE_TEXT = "PID-3: CCCD 079085000123 is not registered"


def control_id(frame: bytes) -> str:
    """MSH-10 of a received frame, read with plain splitting (no gateway code on this side)."""
    return frame.split(b"\r")[0].split(b"|")[9].decode("ascii")


def answer_to(mode: str, frame: bytes) -> bytes | None:
    """The receiver's answer in ``mode``: an ACK code, ``wrong_msa2``, ``junk`` or ``silence``."""
    if mode == "silence":
        return None
    if mode == "junk":
        return b"this is not an HL7 message"
    received = control_id(frame)
    code, answered = ("AA", "SOMEONE-ELSE") if mode == "wrong_msa2" else (mode, received)
    header = f"MSH|^~\\&|LAB|LAB01|HSSK_GW|SYT_79|20250315083001||ACK^A04^ACK|ACK{received}|P|2.5"
    segments = [header, f"MSA|{code}|{answered}"]
    if code in ("AE", "CE"):
        segments[1] += "|Rejected"
        segments.append(f"ERR||PID^1^3^1|103^Table value not found^HL70357|E||||{AE_TEXT}")
    return ("\r".join(segments) + "\r").encode("ascii")


class ReceiverConnection(Protocol):
    def __init__(self, receiver: Receiver, number: int) -> None:
        self.receiver = receiver
        self.number = number
        self.decoder = FrameDecoder(1024 * 1024)
        self.unanswered = 0

    def dataReceived(self, data: bytes) -> None:
        for item in self.decoder.feed(data):
            if not isinstance(item, Violation):
                self.receiver.received(self, item)

    def answer(self, reply: bytes) -> None:
        self.unanswered -= 1
        self.transport.write(wrap(reply))

    def connectionLost(self, reason=None) -> None:
        self.receiver.lost(self)


class Receiver(Factory):
    """A test MLLP receiver: answers each message by the next entry of ``script`` (then by
    ``default``): an ACK code, ``wrong_msa2``, ``junk``, ``silence`` or ``hangup``; records every
    frame with the number of the connection it came on."""

    def __init__(self) -> None:
        self.script: list[str] = []
        self.default = "AA"
        self.answer_later = False
        self.frames: list[tuple[int, bytes]] = []
        self.unanswered_at_arrival: list[int] = []
        self.connections = 0
        self.closed_connections = 0
        self.open: list[ReceiverConnection] = []
        self.port = None
        self._frame_waiters: list[tuple[int, Deferred]] = []
        self._lost_waiters: list[tuple[int, Deferred]] = []

    @property
    def endpoint(self) -> str:
        return f"tcp:127.0.0.1:{self.port.getHost().port}"

    def buildProtocol(self, addr) -> ReceiverConnection:
        self.connections += 1
        connection = ReceiverConnection(self, self.connections)
        self.open.append(connection)
        return connection

    def received(self, connection: ReceiverConnection, frame: bytes) -> None:
        self.frames.append((connection.number, frame))
        self.unanswered_at_arrival.append(connection.unanswered)
        mode = self.script.pop(0) if self.script else self.default
        if mode == "hangup":
            connection.transport.loseConnection()
        else:
            reply = answer_to(mode, frame)
            if reply is not None:
                connection.unanswered += 1
                if self.answer_later:
                    reactor.callLater(0, connection.answer, reply)
                else:
                    connection.answer(reply)
        self._wake()

    def lost(self, connection: ReceiverConnection) -> None:
        self.open.remove(connection)
        self.closed_connections += 1
        self._wake()

    def _wake(self) -> None:
        for waiters, count in ((self._frame_waiters, len(self.frames)), (self._lost_waiters, self.closed_connections)):
            ready = [(n, d) for n, d in waiters if count >= n]
            waiters[:] = [(n, d) for n, d in waiters if count < n]
            for _, d in ready:
                d.callback(None)

    def _wait(self, waiters: list, count: int) -> Deferred:
        d: Deferred = Deferred()
        waiters.append((count, d))
        d.addTimeout(10, reactor)
        self._wake()
        return d

    def wait_frames(self, count: int) -> Deferred:
        """Fires once ``count`` frames have arrived in all."""
        return self._wait(self._frame_waiters, count)

    def wait_closed(self, count: int) -> Deferred:
        """Fires once ``count`` connections have been closed in all."""
        return self._wait(self._lost_waiters, count)

    def control_ids(self) -> list[tuple[int, str]]:
        return [(number, control_id(frame)) for number, frame in self.frames]


@pytest_twisted.async_yield_fixture
async def receiver():
    listening = Receiver()
    listening.port = reactor.listenTCP(0, listening, interface="127.0.0.1")
    yield listening
    await listening.port.stopListening()
    for connection in list(listening.open):
        connection.transport.abortConnection()


def destination(endpoint: str, clock=None, **settings) -> MllpDestination:
    """An mllp destination built from a validated ``[destinations.lab]`` table."""
    config = load_config(environ={}, overrides={
        "destinations": {"lab": {"kind": "mllp", "format": "hl7v2", "endpoint": endpoint, **settings}}})
    [configured] = DestinationKinds(KINDS).configure(config.destinations)
    return MllpDestination(configured.config, configured.settings, reactor, clock)


def delivery(control: str, row_id: int = 1, payload: bytes | None = None) -> Delivery:
    return Delivery(row_id=row_id, message_id=row_id, destination="lab", idempotency_key=f"key-{row_id}",
                    ordering_key="person-1", content_type="application/hl7-v2",
                    payload=hl7(control_id=control) if payload is None else payload, attempts=0, created_at=0.0)


@pytest.mark.parametrize(("answer", "outcome"), [
    ("AA", DELIVERED), ("CA", DELIVERED), ("AE", DEAD), ("CE", DEAD), ("AR", RETRY), ("CR", RETRY)])
@pytest_twisted.ensureDeferred
async def test_ack_code_decides_the_outcome_and_is_the_label(receiver, answer, outcome):
    receiver.default = answer
    lab = destination(receiver.endpoint)

    result = await lab.deliver(delivery("MSG00001"))

    assert (result.outcome, result.label) == (outcome, answer)
    assert receiver.control_ids() == [(1, "MSG00001")]
    await lab.close()


@pytest_twisted.ensureDeferred
async def test_dead_letter_reason_is_the_receivers_error_text_masked(receiver):
    receiver.default = "AE"
    lab = destination(receiver.endpoint)

    result = await lab.deliver(delivery("MSG00001"))

    assert result.outcome == DEAD
    assert result.reason == "receiver answered AE: Rejected; PID-3: CCCD 0790*****123 is not registered"
    await lab.close()


@pytest.mark.parametrize(("dead_letter_codes", "answer", "outcome"), [
    (["AE", "AR"], "AR", DEAD), ([], "AE", RETRY), (["CE"], "AE", RETRY)])
@pytest_twisted.ensureDeferred
async def test_dead_letter_codes_are_configurable_per_code(receiver, dead_letter_codes, answer, outcome):
    receiver.default = answer
    lab = destination(receiver.endpoint, dead_letter_codes=dead_letter_codes)

    result = await lab.deliver(delivery("MSG00001"))

    assert (result.outcome, result.label) == (outcome, answer)
    await lab.close()


@pytest_twisted.ensureDeferred
async def test_refusals_keep_the_connection(receiver):
    receiver.script = ["AR", "AE"]
    lab = destination(receiver.endpoint)

    first = await lab.deliver(delivery("MSG00001", 1))
    second = await lab.deliver(delivery("MSG00002", 2))
    third = await lab.deliver(delivery("MSG00003", 3))

    assert [first.label, second.label, third.label] == ["AR", "AE", "AA"]
    assert receiver.control_ids() == [(1, "MSG00001"), (1, "MSG00002"), (1, "MSG00003")]
    await lab.close()


@pytest_twisted.ensureDeferred
async def test_deliveries_go_one_at_a_time_in_order_over_one_connection(receiver):
    receiver.answer_later = True  # a pipelining client would send the next frame before this answer
    lab = destination(receiver.endpoint)
    finished: list[str] = []
    attempts = []
    for n in range(1, 6):
        d = lab.deliver(delivery(f"MSG0000{n}", n))
        d.addCallback(lambda result, n=n: finished.append(f"MSG0000{n}") or result)
        attempts.append(d)

    results = await gatherResults(attempts)

    assert [(r.outcome, r.label) for r in results] == [(DELIVERED, "AA")] * 5
    assert receiver.control_ids() == [(1, f"MSG0000{n}") for n in range(1, 6)]
    assert receiver.unanswered_at_arrival == [0] * 5
    assert finished == [f"MSG0000{n}" for n in range(1, 6)]
    assert receiver.connections == 1
    await lab.close()


@pytest_twisted.ensureDeferred
async def test_msa2_mismatch_is_a_retry_and_the_next_message_goes_over_a_new_connection(receiver):
    receiver.script = ["wrong_msa2"]
    lab = destination(receiver.endpoint)

    mismatched = await lab.deliver(delivery("MSG00001", 1))
    await receiver.wait_closed(1)
    after = await lab.deliver(delivery("MSG00002", 2))

    assert (mismatched.outcome, mismatched.label) == (RETRY, "msa_mismatch")
    assert "SOMEONE-ELSE" in mismatched.reason and "MSG00001" in mismatched.reason
    assert (after.outcome, after.label) == (DELIVERED, "AA")
    assert receiver.control_ids() == [(1, "MSG00001"), (2, "MSG00002")]
    await lab.close()


@pytest_twisted.ensureDeferred
async def test_an_answer_that_is_not_an_ack_is_a_retry_and_reconnects(receiver):
    receiver.script = ["junk"]
    lab = destination(receiver.endpoint)

    unreadable = await lab.deliver(delivery("MSG00001", 1))
    after = await lab.deliver(delivery("MSG00002", 2))

    assert (unreadable.outcome, unreadable.label) == (RETRY, "bad_ack")
    assert (after.outcome, after.label) == (DELIVERED, "AA")
    assert receiver.control_ids() == [(1, "MSG00001"), (2, "MSG00002")]
    await lab.close()


@pytest_twisted.ensureDeferred
async def test_silence_times_out_as_a_retry_and_the_connection_is_replaced(receiver):
    receiver.script = ["silence"]
    clock = Clock()
    lab = destination(receiver.endpoint, clock, response_timeout_seconds=5)
    waiting = lab.deliver(delivery("MSG00001", 1))
    await receiver.wait_frames(1)

    clock.advance(4.9)
    assert not waiting.called
    clock.advance(0.1)
    timed_out = await waiting
    await receiver.wait_closed(1)
    after = await lab.deliver(delivery("MSG00002", 2))

    assert (timed_out.outcome, timed_out.label) == (RETRY, "timeout")
    assert (after.outcome, after.label) == (DELIVERED, "AA")
    assert receiver.control_ids() == [(1, "MSG00001"), (2, "MSG00002")]
    await lab.close()


@pytest_twisted.ensureDeferred
async def test_receiver_hanging_up_before_answering_is_a_connection_retry(receiver):
    receiver.script = ["hangup"]
    lab = destination(receiver.endpoint)

    lost = await lab.deliver(delivery("MSG00001", 1))
    after = await lab.deliver(delivery("MSG00002", 2))

    assert (lost.outcome, lost.label) == (RETRY, "connection")
    assert (after.outcome, after.label) == (DELIVERED, "AA")
    assert receiver.connections == 2
    await lab.close()


@pytest_twisted.ensureDeferred
async def test_connection_refused_is_a_connection_retry():
    closed = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    endpoint = f"tcp:127.0.0.1:{closed.getHost().port}"
    await closed.stopListening()
    lab = destination(endpoint)

    result = await lab.deliver(delivery("MSG00001"))

    assert (result.outcome, result.label) == (RETRY, "connection")
    assert endpoint in result.reason
    await lab.close()


@pytest.mark.parametrize("payload", [
    b"MSH|^~\\&|TEST_HIS|79001|HSSK_GW|SYT_79|20250315083000||ADT^A04^ADT_A01||P|2.5\rPID|1\r",
    b"this is not HL7 at all",
])
@pytest_twisted.ensureDeferred
async def test_payload_without_a_control_id_is_dead_and_never_sent(receiver, payload):
    lab = destination(receiver.endpoint)

    result = await lab.deliver(delivery("unused", payload=payload))

    assert (result.outcome, result.label) == (DEAD, "no_control_id")
    assert receiver.connections == 0
    await lab.close()


@pytest_twisted.ensureDeferred
async def test_a_full_queue_of_payloads_without_control_id_drains_after_the_one_in_flight(receiver):
    receiver.default = "silence"
    clock = Clock()
    lab = destination(receiver.endpoint, clock, response_timeout_seconds=5)
    in_flight = lab.deliver(delivery("MSG00001", 1))
    await receiver.wait_frames(1)
    unreadable = [lab.deliver(delivery("unused", n, payload=b"not HL7")) for n in range(2, 258)]

    clock.advance(5)
    results = await gatherResults([in_flight, *unreadable])

    assert [r.label for r in results] == ["timeout"] + ["no_control_id"] * 256
    await lab.close()


@pytest_twisted.ensureDeferred
async def test_close_answers_waiting_deliveries_with_a_retry_and_closes_the_connection(receiver):
    receiver.default = "silence"
    lab = destination(receiver.endpoint)
    sent = lab.deliver(delivery("MSG00001", 1))
    queued = lab.deliver(delivery("MSG00002", 2))
    await receiver.wait_frames(1)

    await lab.close()

    assert [(r.outcome, r.label) for r in (await sent, await queued)] == [(RETRY, "connection")] * 2
    await receiver.wait_closed(1)
    assert receiver.control_ids() == [(1, "MSG00001")]


def test_an_endpoint_that_is_not_an_endpoint_string_names_the_key():
    with pytest.raises(ConfigError) as raised:
        destination("carrier-pigeon:loft")

    assert raised.value.key == "destinations.lab.endpoint"


async def _forwarding_gateway(tmp_path, plugin, receiver):
    return await start_gateway(tmp_path / "data", plugins=[plugin], destinations={
        "lab": {"kind": "mllp", "format": "hl7v2", "endpoint": receiver.endpoint}})


@pytest_twisted.ensureDeferred
async def test_gateway_forwards_an_accepted_message_to_the_mllp_receiver(tmp_path, plugin, receiver):
    gw = await _forwarding_gateway(tmp_path, plugin, receiver)
    try:
        client = await connect_mllp(gw)
        sent = hl7(control_id="FWD00001")

        ack = await send_and_receive(client, sent)
        await receiver.wait_frames(1)
        await wait_until(lambda: not any(d.in_flight for d in gw.delivery.dispatchers.values()),
                         what="every delivery recorded")

        assert msa(ack)[1:3] == ["AA", "FWD00001"]
        [(_, forwarded)] = receiver.frames
        assert control_id(forwarded) == "FWD00001"
        assert forwarded == sent
        [row] = outbox_rows(gw)
        assert {k: row[k] for k in ("destination", "state", "attempts", "last_result", "last_error",
                                    "content_type")} == {
            "destination": "lab", "state": "delivered", "attempts": 1, "last_result": "AA", "last_error": None,
            "content_type": "application/hl7-v2"}
        client.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_gateway_forwards_a_latin1_message_re_encoded_as_utf8(tmp_path, plugin, receiver):
    gw = await _forwarding_gateway(tmp_path, plugin, receiver)
    try:
        client = await connect_mllp(gw)
        sent = hl7("PID|1||079085000123^^^BCA^NI||Müller^José||19850412|M", charset="8859/1", control_id="FWD00002")

        await send_and_receive(client, sent)
        await receiver.wait_frames(1)
        await wait_until(lambda: not any(d.in_flight for d in gw.delivery.dispatchers.values()),
                         what="every delivery recorded")

        [(_, forwarded)] = receiver.frames
        assert forwarded == replace_msh_field(sent, 18, "UNICODE UTF-8").decode("latin-1").encode("utf-8")
        assert "Müller^José".encode() in forwarded
        assert [row["state"] for row in outbox_rows(gw)] == ["delivered"]
        client.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_gateway_dead_letters_what_the_receiver_rejects_with_ae(tmp_path, plugin, receiver):
    receiver.default = "AE"
    gw = await _forwarding_gateway(tmp_path, plugin, receiver)
    try:
        client = await connect_mllp(gw)

        await send_and_receive(client, hl7(control_id="FWD00003"))
        await receiver.wait_frames(1)
        await wait_until(lambda: not any(d.in_flight for d in gw.delivery.dispatchers.values()),
                         what="every delivery recorded")

        [row] = outbox_rows(gw)
        assert (row["state"], row["last_result"]) == ("dead", "AE")
        assert "0790*****123" in row["last_error"] and "079085000123" not in row["last_error"]
        client.transport.loseConnection()
    finally:
        await gw.stop()
