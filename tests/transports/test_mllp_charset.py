"""Character sets on the MLLP listener: MSH-18 decides, a listener override beats it, and bytes
that do not decode cost one AE, never the connection."""
from __future__ import annotations

import unicodedata

import pytest_twisted

from tests.support import (TestPlugin, connect_mllp, encode_windows_1258, err_segments, hl7, segments_of, journal_person,
                           journal_rows, metric_value, msa_codes, start_gateway)

VIETNAMESE_FAMILY = "Nguyễn"
VIETNAMESE_GIVEN = "Văn Thử"


def windows_1258_message(charset_field: str, control_id: str) -> bytes:
    """A message whose PID-5 is Vietnamese in Windows-1258 bytes (tone marks combining), with
    MSH-18 set to ``charset_field`` (which may lie about it)."""
    message = hl7("PID|1||079085000123^^^BCA^NI||FAMILY^GIVEN||19850412|M", charset=charset_field,
                  control_id=control_id)
    return (message.replace(b"FAMILY", encode_windows_1258(VIETNAMESE_FAMILY))
                   .replace(b"GIVEN", encode_windows_1258(VIETNAMESE_GIVEN)))


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


@pytest_twisted.ensureDeferred
async def test_latin1_message_declared_8859_1_is_decoded_as_latin1(gateway):
    client = await connect_mllp(gateway)

    client.send(hl7("PID|1||079185000123^^^BCA^NI||Müller^Zoë Ångström||19850412|F", charset="8859/1",
                    control_id="LATIN1"))

    [ack] = await client.wait_frames(1)
    assert msa_codes([ack]) == [("AA", "LATIN1")]
    person = journal_person(gateway, "LATIN1")
    assert (person["family"], person["middle"], person["given"]) == ("Müller", "Zoë", "Ångström")
    [row] = journal_rows(gateway, control_id="LATIN1")
    assert row["charset"] == "8859/1"
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_windows_1258_vietnamese_name_is_decoded(gateway):
    client = await connect_mllp(gateway)

    client.send(windows_1258_message("WINDOWS-1258", "CP1258A"))

    [ack] = await client.wait_frames(1)
    assert msa_codes([ack]) == [("AA", "CP1258A")]
    person = journal_person(gateway, "CP1258A")
    assert nfc(person["family"]) == VIETNAMESE_FAMILY
    assert nfc(f"{person['middle']} {person['given']}") == VIETNAMESE_GIVEN
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_cp1258_alias_in_msh18_is_decoded_as_windows_1258(gateway):
    client = await connect_mllp(gateway)

    client.send(windows_1258_message("CP1258", "CP1258B"))

    [ack] = await client.wait_frames(1)
    assert msa_codes([ack]) == [("AA", "CP1258B")]
    assert nfc(journal_person(gateway, "CP1258B")["family"]) == VIETNAMESE_FAMILY
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_listener_forced_charset_wins_over_msh18(tmp_path):
    # The sender claims UTF-8 in MSH-18 but writes Windows-1258; the listener is configured to know.
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], **{"mllp.charset": "WINDOWS-1258"})
    try:
        client = await connect_mllp(gw)

        client.send(windows_1258_message("UNICODE UTF-8", "FORCED1"))

        [ack] = await client.wait_frames(1)
        assert msa_codes([ack]) == [("AA", "FORCED1")]
        assert nfc(journal_person(gw, "FORCED1")["family"]) == VIETNAMESE_FAMILY
        [row] = journal_rows(gw, control_id="FORCED1")
        assert row["charset"] == "WINDOWS-1258"
        assert metric_value(gw, "hssk_charset_errors_total", transport="mllp") == 0
        client.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_undecodable_bytes_get_ae_102_naming_the_segment_and_the_connection_stays_usable(gateway):
    client = await connect_mllp(gateway)
    broken = hl7("EVN|A04|20250315083000", "PID|1||079085000123^^^BCA^NI||BROKEN^Văn||19850412|M",
                 control_id="BADBYTES").replace(b"BROKEN", b"\xff\xfe")

    client.send(broken)
    [ack] = await client.wait_frames(1)

    assert msa_codes([ack]) == [("AE", "BADBYTES")]
    [err] = err_segments(ack)
    assert err[2] == "PID^1"
    assert err[3].split("^")[0] == "102"
    assert "UTF-8" in err[8].upper()
    assert metric_value(gateway, "hssk_charset_errors_total", transport="mllp") == 1
    [row] = journal_rows(gateway, control_id="BADBYTES")
    assert (row["status"], row["raw"]) == ("error", broken)

    client.send(hl7(control_id="AFTERBAD"))
    frames = await client.wait_frames(2)
    assert msa_codes(frames[1:]) == [("AA", "AFTERBAD")]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_the_ae_for_undecodable_bytes_mirrors_the_senders_header_as_written(gateway):
    client = await connect_mllp(gateway)
    broken = hl7("PID|1||079085000123^^^BCA^NI||BROKEN^Văn||19850412|M", control_id="BADMSH").replace(
        b"|79001|", "|79001^BV Thử Nghiệm|".encode()).replace(b"BROKEN", b"\xff\xfe")

    client.send(broken)
    [ack] = await client.wait_frames(1)
    client.transport.loseConnection()

    header = segments_of(ack)["MSH"][0]
    assert msa_codes([ack]) == [("AE", "BADMSH")]
    assert (header[4], header[5], header[17]) == ("TEST_HIS", "79001^BV Thử Nghiệm", "UNICODE UTF-8")
