"""An HTTP client that half-closes after sending its whole request still reads: it gets the answer,
then the gateway closes (issue 15, item 6). twisted.web alone read the end of input as the client
gone, journaled the message and dropped the ACK."""
from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.support import hl7, journal_rows


def post(body: bytes) -> bytes:
    return (b"POST /hl7 HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/hl7-v2\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def send_then_half_close(port: int, data: bytes) -> bytes:
    """Blocking, on a thread: write ``data``, shut down the write side, read until the gateway closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


@pytest_twisted.ensureDeferred
async def test_client_that_half_closes_after_its_request_gets_the_ack(gateway):
    port = gateway.address("http")[1]

    answer = await deferToThread(send_then_half_close, port, post(hl7(control_id="HTTPHALF1")))

    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"MSA|AA|HTTPHALF1" in answer
    assert [row["control_id"] for row in journal_rows(gateway)] == ["HTTPHALF1"]


@pytest_twisted.ensureDeferred
async def test_two_pipelined_requests_then_half_close_are_both_answered_in_order(gateway):
    port = gateway.address("http")[1]
    data = post(hl7(control_id="PIPE1")) + post(hl7(control_id="PIPE2"))

    answer = await deferToThread(send_then_half_close, port, data)

    assert answer.count(b"HTTP/1.1 200 ") == 2
    assert answer.index(b"MSA|AA|PIPE1") < answer.index(b"MSA|AA|PIPE2")


@pytest_twisted.ensureDeferred
async def test_half_close_inside_a_request_body_closes_without_an_answer_or_a_journal_row(gateway):
    port = gateway.address("http")[1]
    whole = post(hl7(control_id="CUTBODY"))

    answer = await deferToThread(send_then_half_close, port, whole[:-20])

    assert answer == b""
    assert journal_rows(gateway) == []
