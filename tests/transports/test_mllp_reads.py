"""MLLPProtocol driven one read at a time on an in-memory transport, as Twisted's own protocol
tests do (``twisted.internet.testing.StringTransport``).

The real-socket tests in test_mllp_framing.py write the pieces of a stream one after another, but
the kernel may hand them to the gateway as one read, so they pass even with a decoder that
forgets a partial frame between reads. Here each piece is one ``dataReceived``: every framing
case is proven for reads that end wherever the pattern cuts, with the gateway's own factory,
intake and journal behind the protocol.
"""
from __future__ import annotations

import hashlib

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from gateway.app import Gateway
from gateway.formats.framing import FrameDecoder, Violation, wrap
from tests.support import (TestPlugin, err_segments, hl7, journal_person, journal_rows, metric_value, msa_codes,
                           replace_msh_field, run_clock_until, sample, start_gateway, wait_until)

VIOLATIONS = "hssk_mllp_framing_violations_total"
FRAMING_BYTES = b"\x0b\x1c\r"


def one_read(stream: bytes) -> list[bytes]:
    return [stream]


def one_byte_per_read(stream: bytes) -> list[bytes]:
    return [stream[i:i + 1] for i in range(len(stream))]


def cut_at_every_framing_byte(stream: bytes) -> list[bytes]:
    """Reads that end just before and just after each VT, FS and CR of the framing, and one in
    the middle of every stretch between them: mid-segment, after the start block, between the end
    block and its CR."""
    cuts = {0, len(stream)}
    for i, byte in enumerate(stream):
        if bytes([byte]) in FRAMING_BYTES:
            cuts |= {i, i + 1}
    bounds = sorted(cuts)
    cuts |= {(a + b) // 2 for a, b in zip(bounds, bounds[1:])}
    bounds = sorted(cuts)
    return [stream[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


READ_PATTERNS = [one_read, one_byte_per_read, cut_at_every_framing_byte]


class InMemoryConnection:
    """One MLLP connection to ``gateway``'s own factory, whose bytes go through a StringTransport:
    each :meth:`read` is exactly one ``dataReceived``, never coalesced with the next."""

    def __init__(self, gateway: Gateway, host: str = "127.0.0.1") -> None:
        address = IPv4Address("TCP", host, 40000)
        self.transport = StringTransport(peerAddress=address)
        self.protocol = gateway.mllp_factory.buildProtocol(address)
        self.protocol.makeConnection(self.transport)

    def read(self, reads: list[bytes]) -> None:
        for data in reads:
            self.protocol.dataReceived(data)

    def answers(self) -> list[bytes]:
        """The ACK frames written so far, in order."""
        return [item for item in FrameDecoder(1 << 26).feed(self.transport.value())
                if not isinstance(item, Violation)]

    async def wait_answers(self, count: int) -> list[bytes]:
        await wait_until(lambda: len(self.answers()) >= count, what=f"{count} answers")
        return self.answers()

    def close(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


async def exchange(gateway: Gateway, reads: list[bytes], count: int) -> list[bytes]:
    """Feed ``reads`` on a fresh in-memory connection and return the first ``count`` answers."""
    connection = InMemoryConnection(gateway)
    try:
        connection.read(reads)
        return (await connection.wait_answers(count))[:count]
    finally:
        connection.close()


@pytest.mark.parametrize("pattern", READ_PATTERNS)
@pytest_twisted.ensureDeferred
async def test_several_frames_are_each_answered_in_order(gateway, pattern):
    ids = ["MULTI1", "MULTI2", "MULTI3"]
    stream = b"".join(wrap(hl7(control_id=i)) for i in ids)

    answers = await exchange(gateway, pattern(stream), 3)

    assert msa_codes(answers) == [("AA", i) for i in ids]
    assert metric_value(gateway, VIOLATIONS, kind="missing_trailing_cr") == 0


@pytest.mark.parametrize("pattern", READ_PATTERNS)
@pytest_twisted.ensureDeferred
async def test_a_frame_in_pieces_yields_one_ack_and_one_journal_row(gateway, pattern):
    answers = await exchange(gateway, pattern(wrap(sample("adt_a04.hl7"))), 1)

    # The sample asks for enhanced mode (MSH-15 AL, MSH-16 NE): one accept ACK.
    assert msa_codes(answers) == [("CA", "ADT20250315000001")]
    assert len(journal_rows(gateway, control_id="ADT20250315000001")) == 1


@pytest_twisted.ensureDeferred
async def test_two_frames_cut_into_two_reads_anywhere_are_both_answered(gateway):
    stream = wrap(hl7(control_id="SPLIT1")) + wrap(hl7(control_id="SPLIT2"))

    for cut in range(1, len(stream)):
        answers = await exchange(gateway, [stream[:cut], stream[cut:]], 2)

        assert msa_codes(answers) == [("AA", "SPLIT1"), ("AA", "SPLIT2")], f"cut at byte {cut}"
    assert metric_value(gateway, VIOLATIONS, kind="missing_trailing_cr") == 0
    assert metric_value(gateway, VIOLATIONS, kind="junk_before_start_block") == 0


@pytest.mark.parametrize("pattern", READ_PATTERNS)
@pytest_twisted.ensureDeferred
async def test_bytes_before_the_start_block_are_skipped_and_counted(gateway, pattern):
    junk = b"GET / HTTP/1.0\r\n\r\n"

    answers = await exchange(gateway, pattern(junk + wrap(hl7(control_id="JUNK1"))), 1)

    assert msa_codes(answers) == [("AA", "JUNK1")]
    assert metric_value(gateway, VIOLATIONS, kind="junk_before_start_block") == len(junk)


@pytest.mark.parametrize("pattern", READ_PATTERNS)
@pytest_twisted.ensureDeferred
async def test_cr_lf_and_crlf_segment_ends_are_the_same_content(gateway, pattern):
    with_cr = hl7("EVN|A04|20250315083000", "PID|1||079085000123^^^BCA^NI||Lê^Thị Mẫu", control_id="ENDS1")
    variants = [with_cr, with_cr.replace(b"\r", b"\n"), with_cr.replace(b"\r", b"\r\n")]

    answers = await exchange(gateway, pattern(b"".join(wrap(v) for v in variants)), 3)

    assert msa_codes(answers) == [("AA", "ENDS1")] * 3
    [row] = journal_rows(gateway, control_id="ENDS1")
    assert row["repeat_count"] == 2
    assert row["content_sha256"] == hashlib.sha256(replace_msh_field(with_cr, 7, "").rstrip(b"\r")).hexdigest()
    assert journal_person(gateway, "ENDS1")["family"] == "Lê"


@pytest.mark.parametrize("pattern", READ_PATTERNS)
@pytest_twisted.ensureDeferred
async def test_utf8_bom_before_msh_is_stripped(gateway, pattern):
    message = hl7(control_id="BOM1")

    answers = await exchange(gateway, pattern(wrap(b"\xef\xbb\xbf" + message)), 1)

    assert msa_codes(answers) == [("AA", "BOM1")]
    [row] = journal_rows(gateway, control_id="BOM1")
    assert row["content_sha256"] == hashlib.sha256(replace_msh_field(message, 7, "").rstrip(b"\r")).hexdigest()
    assert journal_person(gateway, "BOM1")["family"] == "Nguyễn"


@pytest.mark.parametrize("pattern", READ_PATTERNS)
@pytest_twisted.ensureDeferred
async def test_frame_without_trailing_cr_is_answered_without_waiting_for_more_bytes(gateway, pattern):
    answers = await exchange(gateway, pattern(b"\x0b" + hl7(control_id="NOCR1") + b"\x1c"), 1)

    assert msa_codes(answers) == [("AA", "NOCR1")]


@pytest.mark.parametrize("pattern", READ_PATTERNS)
@pytest_twisted.ensureDeferred
async def test_missing_trailing_cr_is_counted_once_when_the_next_frame_follows_directly(gateway, pattern):
    stream = b"\x0b" + hl7(control_id="NOCR1") + b"\x1c" + wrap(hl7(control_id="NOCR2"))

    answers = await exchange(gateway, pattern(stream), 2)

    assert msa_codes(answers) == [("AA", "NOCR1"), ("AA", "NOCR2")]
    assert metric_value(gateway, VIOLATIONS, kind="missing_trailing_cr") == 1
    assert metric_value(gateway, VIOLATIONS, kind="junk_before_start_block") == 0


@pytest.mark.parametrize("pattern", READ_PATTERNS)
@pytest_twisted.ensureDeferred
async def test_frame_of_max_frame_bytes_exactly_is_accepted(tmp_path, pattern):
    message = hl7(control_id="EXACT1")
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], **{"mllp.max_frame_bytes": len(message)})
    try:
        answers = await exchange(gw, pattern(wrap(message)), 1)

        assert msa_codes(answers) == [("AA", "EXACT1")]
    finally:
        await gw.stop()


@pytest.mark.parametrize("pattern", READ_PATTERNS)
@pytest_twisted.ensureDeferred
async def test_frame_growing_over_max_frame_bytes_across_reads_gets_ar_then_close(tmp_path, pattern):
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], **{"mllp.max_frame_bytes": 1000})
    connection = InMemoryConnection(gw)
    try:
        message = hl7("PID|1||079085000123^^^BCA^NI||Nguyễn^Văn Thử||19850412|M", "NTE|1||" + "x" * 2000,
                      control_id="TOOBIG1")

        connection.read(pattern(wrap(message)))

        [ack] = await connection.wait_answers(1)
        assert msa_codes([ack]) == [("AR", "TOOBIG1")]
        assert "mllp.max_frame_bytes" in err_segments(ack)[0][8]
        assert connection.transport.disconnecting
        assert metric_value(gw, VIOLATIONS, kind="frame_too_large") == 1
        assert journal_rows(gw) == []
    finally:
        connection.close()
        await gw.stop()


@pytest.mark.parametrize("pattern", READ_PATTERNS)
@pytest_twisted.ensureDeferred
async def test_partial_frame_kept_across_reads_is_answered_ar_at_idle_timeout(tmp_path, pattern):
    clock = Clock()
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], clock=clock,
                             **{"mllp.idle_timeout_seconds": 30})
    connection = InMemoryConnection(gw)
    try:
        message = hl7(control_id="HALF1")
        partial = message[:message.index(b"\r")]

        connection.read(pattern(b"\x0b" + partial))
        assert connection.protocol.decoder.pending == partial
        clock.advance(30)
        await run_clock_until(clock, lambda: connection.answers())

        assert msa_codes(connection.answers()) == [("AR", "HALF1")]
        assert "mllp.idle_timeout_seconds" in err_segments(connection.answers()[0])[0][8]
        assert connection.transport.disconnecting
    finally:
        connection.close()
        await gw.stop()
