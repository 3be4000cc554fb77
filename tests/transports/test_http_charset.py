"""An HTTP Content-Type ``charset=`` beside MSH-18 (issue 15, item 3).

MSH-18 names the message's character set, and the header's charset is used only when MSH-18 is
empty. When both are given and name different character sets, the bytes are read in both: if they
read the same (pure ASCII, say), MSH-18 stands; if not, nobody can tell which one the sender meant,
so the answer is AE 102 naming both, and nothing is stored as text in a guessed charset.
"""
from __future__ import annotations

import json

import pytest
import pytest_twisted

from tests.support import encode_windows_1258, err_segments, hl7, http_request, journal_rows, msa, outbox_rows

NAME = "PID|1||079085000123^^^BCA^NI||Nguyễn^Văn Thử||19850412|M"
#: A name Latin-1 can write.
LATIN_NAME = "PID|1||079085000123^^^BCA^NI||Lê^Hà||19850412|M"


def windows_1258_message(control_id: str) -> bytes:
    text = (f"MSH|^~\\&|TEST_HIS|79001|HSSK_GW|SYT_79|20250315083000||ADT^A04^ADT_A01|{control_id}|P|2.5"
            f"||||||WINDOWS-1258\r{NAME}\r")
    return encode_windows_1258(text)


@pytest.mark.parametrize("payload,header,declared", [
    (hl7(NAME, control_id="CONFLICT"), "windows-1258", "UNICODE UTF-8"),
    (windows_1258_message("CONFLICT"), "utf-8", "WINDOWS-1258"),
    (hl7(LATIN_NAME, control_id="CONFLICT", charset="8859/1"), "utf-8", "8859/1"),
], ids=["utf-8 bytes, header windows-1258", "windows-1258 bytes, header utf-8", "latin-1 bytes, header utf-8"])
@pytest_twisted.ensureDeferred
async def test_content_type_charset_contradicting_msh_18_is_ae_102_naming_both(gateway, payload, header, declared):
    response = await http_request(gateway, "POST", "/hl7", payload, f"application/hl7-v2; charset={header}")

    assert response.code == 200
    assert msa(response.body, "latin-1")[1:3] == ["AE", "CONFLICT"]
    [err] = err_segments(response.body, "latin-1")
    assert (err[2], err[3].split("^")[0]) == ("MSH^1^18", "102")
    assert f"MSH-18 {declared!r}" in err[8] and f"Content-Type charset {header!r}" in err[8]
    [row] = journal_rows(gateway)
    assert (row["status"], row["raw"], row["records"]) == ("error", payload, None)
    assert outbox_rows(gateway) == []


@pytest_twisted.ensureDeferred
async def test_utf8_message_under_a_windows_1258_header_is_never_stored_as_mojibake(gateway):
    response = await http_request(gateway, "POST", "/hl7", hl7(NAME, control_id="MOJI"),
                                  "application/hl7-v2; charset=windows-1258")

    assert msa(response.body)[1] == "AE"
    assert all(row["records"] is None for row in journal_rows(gateway))


@pytest_twisted.ensureDeferred
async def test_pure_ascii_message_reads_the_same_in_both_and_keeps_msh_18(gateway):
    payload = hl7("PID|1||079085000123^^^BCA^NI||Nguyen^Van Thu||19850412|M", control_id="ASCII1")

    response = await http_request(gateway, "POST", "/hl7", payload, "application/hl7-v2; charset=windows-1258")

    assert msa(response.body)[1:3] == ["AA", "ASCII1"]
    assert response.headers["content-type"] == "application/hl7-v2; charset=utf-8"
    [row] = journal_rows(gateway)
    assert row["charset"] == "UNICODE UTF-8"


@pytest_twisted.ensureDeferred
async def test_two_names_of_one_character_set_agree(gateway):
    payload = hl7(LATIN_NAME, control_id="LATIN1", charset="8859/1")

    response = await http_request(gateway, "POST", "/hl7", payload, "application/hl7-v2; charset=ISO-8859-1")

    assert response.headers["content-type"] == "application/hl7-v2; charset=iso-8859-1"
    assert msa(response.body, "latin-1")[1:3] == ["AA", "LATIN1"]
    [row] = journal_rows(gateway)
    assert json.loads(row["records"])["person"]["family"] == "Lê"
    assert row["charset"] == "8859/1"


@pytest_twisted.ensureDeferred
async def test_content_type_charset_no_codec_knows_is_ae_102_naming_the_header(gateway):
    response = await http_request(gateway, "POST", "/hl7", hl7(NAME, control_id="NOCODEC"),
                                  "application/hl7-v2; charset=x-klingon")

    assert msa(response.body)[1:3] == ["AE", "NOCODEC"]
    [err] = err_segments(response.body)
    assert err[3].split("^")[0] == "102"
    assert "Content-Type charset: 'x-klingon' names no character set" in err[8]


@pytest.mark.parametrize("msh_18,mime", [("UNICODE UTF-8", "utf-8"), ("8859/1", "iso-8859-1"),
                                         ("WINDOWS-1258", "windows-1258"), ("8859/15", "iso-8859-15")])
@pytest_twisted.ensureDeferred
async def test_reply_content_type_names_the_charset_as_iana_does(gateway, msh_18, mime):
    payload = hl7("PID|1||079085000123^^^BCA^NI||Nguyen^Van Thu||19850412|M", control_id="MIME", charset=msh_18)

    response = await http_request(gateway, "POST", "/hl7", payload, "application/hl7-v2")

    assert msa(response.body, "latin-1")[1] == "AA"
    assert response.headers["content-type"] == f"application/hl7-v2; charset={mime}"
