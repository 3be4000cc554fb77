"""MLLP framing over real sockets: whatever the reads look like, every frame gets its answer."""
from __future__ import annotations

import hashlib

import pytest_twisted

from gateway.formats.framing import wrap
from tests.support import (connect_mllp, hl7, journal_person, journal_rows, metric_value, msa_codes, replace_msh_field,
                           sample)

VIOLATIONS = "hssk_mllp_framing_violations_total"


@pytest_twisted.ensureDeferred
async def test_several_frames_in_one_write_are_each_answered_in_order(gateway):
    client = await connect_mllp(gateway)
    ids = ["MULTI1", "MULTI2", "MULTI3"]

    client.transport.write(b"".join(wrap(hl7(control_id=i)) for i in ids))

    frames = await client.wait_frames(3)
    assert msa_codes(frames) == [("AA", i) for i in ids]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_frame_split_one_byte_per_write_yields_one_ack(gateway):
    client = await connect_mllp(gateway)
    stream = wrap(sample("adt_a04.hl7"))

    for i in range(len(stream)):
        client.transport.write(stream[i:i + 1])

    [ack] = await client.wait_frames(1)
    # The sample asks for enhanced mode (MSH-15 AL, MSH-16 NE): one accept ACK.
    assert msa_codes([ack]) == [("CA", "ADT20250315000001")]
    assert len(journal_rows(gateway, control_id="ADT20250315000001")) == 1
    assert metric_value(gateway, VIOLATIONS, kind="missing_trailing_cr") == 0
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_frames_split_across_writes_mid_segment_and_between_end_block_and_cr_are_answered(gateway):
    client = await connect_mllp(gateway)
    stream = wrap(hl7(control_id="SPLIT1")) + wrap(hl7(control_id="SPLIT2"))
    first_end = stream.index(b"\x1c")
    cuts = [0, 5, 40, first_end, first_end + 1, first_end + 30, len(stream)]

    for a, b in zip(cuts, cuts[1:]):
        client.transport.write(stream[a:b])

    frames = await client.wait_frames(2)
    assert msa_codes(frames) == [("AA", "SPLIT1"), ("AA", "SPLIT2")]
    assert metric_value(gateway, VIOLATIONS, kind="missing_trailing_cr") == 0
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_bytes_before_the_start_block_are_skipped_and_counted(gateway):
    client = await connect_mllp(gateway)
    junk = b"GET / HTTP/1.0\r\n\r\n"

    client.transport.write(junk + wrap(hl7(control_id="JUNK1")))

    [ack] = await client.wait_frames(1)
    assert msa_codes([ack]) == [("AA", "JUNK1")]
    assert metric_value(gateway, VIOLATIONS, kind="junk_before_start_block") == len(junk)
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_cr_lf_and_crlf_segment_ends_are_accepted_as_the_same_content(gateway):
    client = await connect_mllp(gateway)
    with_cr = hl7("EVN|A04|20250315083000", "PID|1||079085000123^^^BCA^NI||Lê^Thị Mẫu", control_id="ENDS1")
    variants = [with_cr, with_cr.replace(b"\r", b"\n"), with_cr.replace(b"\r", b"\r\n")]

    client.transport.write(b"".join(wrap(v) for v in variants))

    frames = await client.wait_frames(3)
    assert msa_codes(frames) == [("AA", "ENDS1")] * 3
    # Same sender, control id and content digest: the LF and CRLF copies are repeats of the first.
    [row] = journal_rows(gateway, control_id="ENDS1")
    assert row["repeat_count"] == 2
    # The digest of the text without MSH-7, the message time a rebuilt resend changes.
    assert row["content_sha256"] == hashlib.sha256(replace_msh_field(with_cr, 7, "").rstrip(b"\r")).hexdigest()
    assert journal_person(gateway, "ENDS1")["family"] == "Lê"
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_utf8_bom_before_msh_is_stripped(gateway):
    client = await connect_mllp(gateway)
    message = hl7(control_id="BOM1")

    client.send(b"\xef\xbb\xbf" + message)

    [ack] = await client.wait_frames(1)
    assert msa_codes([ack]) == [("AA", "BOM1")]
    [row] = journal_rows(gateway, control_id="BOM1")
    assert row["content_sha256"] == hashlib.sha256(replace_msh_field(message, 7, "").rstrip(b"\r")).hexdigest()
    assert journal_person(gateway, "BOM1")["family"] == "Nguyễn"
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_frame_without_trailing_cr_is_answered_without_waiting_for_more_bytes(gateway):
    client = await connect_mllp(gateway)

    client.transport.write(b"\x0b" + hl7(control_id="NOCR1") + b"\x1c")

    [ack] = await client.wait_frames(1)
    assert msa_codes([ack]) == [("AA", "NOCR1")]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_missing_trailing_cr_is_counted_when_the_next_frame_follows_directly(gateway):
    client = await connect_mllp(gateway)

    client.transport.write(b"\x0b" + hl7(control_id="NOCR1") + b"\x1c" + wrap(hl7(control_id="NOCR2")))

    frames = await client.wait_frames(2)
    assert msa_codes(frames) == [("AA", "NOCR1"), ("AA", "NOCR2")]
    assert metric_value(gateway, VIOLATIONS, kind="missing_trailing_cr") == 1
    assert metric_value(gateway, VIOLATIONS, kind="junk_before_start_block") == 0
    client.transport.loseConnection()
