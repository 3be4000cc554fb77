"""Hostile XML is refused fast with a clear error (DESIGN.md §7): external entities (local file and
network URL), entity expansion, DTDs hidden in another encoding or inside a FILEHOSO table, and
documents over the size bound. The network tests listen on a real socket and prove nothing connects."""
import base64
import os
import socket
import threading
import time

import pytest

from gateway.formats.xml130 import DEFAULT_MAX_BYTES, UnsafeXmlError, XmlTooLargeError, read_xml130
from gateway.formats.xml_safety import parse_untrusted_xml
from gateway.model.outcome import ContentError
from tests.formats.support import INPATIENT_4750, edit_table, sample

FAST = 0.5  # seconds; a refusal that takes longer is doing work it should not


@pytest.fixture
def listener():
    """A real TCP listener on 127.0.0.1: a parser that fetches a URL would connect to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.05)
    yield server
    server.close()


def assert_nobody_connected(server):
    with pytest.raises(TimeoutError):
        server.accept()


def refused(data: bytes, error=UnsafeXmlError, **options):
    started = time.perf_counter()
    with pytest.raises(error) as caught:
        read_xml130(data, **options)
    assert time.perf_counter() - started < FAST
    return caught.value


def test_external_entity_reading_a_local_file_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    data = (f'<?xml version="1.0"?><!DOCTYPE GIAMDINHHS [<!ENTITY x SYSTEM "file://{secret}">]>'
            '<GIAMDINHHS><THONGTINDONVI><MACSKCB>&x;</MACSKCB></THONGTINDONVI></GIAMDINHHS>').encode()

    error = refused(data)

    assert "DOCTYPE declarations are not accepted" in str(error) and "TOP-SECRET" not in str(error)
    assert error.issues[0].code == 102


def test_external_entity_fetching_a_network_url_is_refused_without_connecting(listener):
    port = listener.getsockname()[1]
    data = (f'<?xml version="1.0"?><!DOCTYPE GIAMDINHHS [<!ENTITY x SYSTEM "http://127.0.0.1:{port}/leak">]>'
            '<GIAMDINHHS>&x;</GIAMDINHHS>').encode()

    refused(data)

    assert_nobody_connected(listener)


def test_external_dtd_is_not_loaded(listener):
    port = listener.getsockname()[1]
    data = f'<!DOCTYPE GIAMDINHHS SYSTEM "http://127.0.0.1:{port}/evil.dtd"><GIAMDINHHS/>'.encode()

    refused(data)

    assert_nobody_connected(listener)


def billion_laughs() -> str:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{n} "{("&lol%d;" % (n - 1)) * 10}">' for n in range(1, 10))
    return f'<?xml version="1.0"?><!DOCTYPE GIAMDINHHS [{entities}]><GIAMDINHHS>&lol9;</GIAMDINHHS>'


def test_billion_laughs_is_refused_fast():
    error = refused(billion_laughs().encode())

    assert "DOCTYPE" in error.issues[0].text


def test_doctype_hidden_by_utf16_encoding_is_still_refused_and_not_expanded():
    data = billion_laughs().replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")

    refused(data)


@pytest.mark.parametrize("codec", ["utf-32", "utf-32-le", "utf-32-be"])
def test_doctype_in_utf32_is_refused_alike_whether_the_file_it_names_exists(tmp_path, codec):
    """Issue 23, item 1: libxml2 opened the SYSTEM file of a UTF-32 document, and its error told
    a sender whether that file existed."""
    existing = tmp_path / "secret.txt"
    existing.write_text("TOP-SECRET")
    answers = set()
    for path in (existing, tmp_path / "missing.dtd"):
        document = f'<?xml version="1.0" encoding="UTF-32"?><!DOCTYPE GIAMDINHHS SYSTEM "file://{path}"><GIAMDINHHS/>'
        answers.add(_refusal_text(document.encode(codec)))

    [answer] = answers
    assert "DOCTYPE declarations are not accepted" in answer


def test_the_parser_opens_no_file_a_doctype_names_in_an_encoding_the_prolog_check_cannot_read(tmp_path):
    """UTF-7 writes ``<!`` as ``+ADwAIQ-``, past the byte-level check; the file named is a FIFO, so
    a parser that opens it blocks until someone writes, and the test sees that."""
    fifo = tmp_path / "probe.dtd"
    os.mkfifo(fifo)
    data = (b'<?xml version="1.0" encoding="UTF-7"?>+ADwAIQ-DOCTYPE GIAMDINHHS SYSTEM "file://'
            + str(fifo).encode() + b'"><GIAMDINHHS/>')
    outcome = []
    parsing = threading.Thread(target=lambda: outcome.append(_refusal_text(data)), daemon=True)

    parsing.start()
    parsing.join(2.0)
    opened = parsing.is_alive()
    if opened:  # release the parser, which is blocked in open(2)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        parsing.join(2.0)

    assert not opened, "the parser opened the file the DOCTYPE names"
    assert outcome and "DOCTYPE declarations are not accepted" in outcome[0]


def _refusal_text(data: bytes) -> str:
    with pytest.raises(ContentError) as caught:
        parse_untrusted_xml(data)
    return str(caught.value)


def test_external_entity_inside_a_base64_filehoso_table_is_refused_naming_the_table(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    hostile = (f'<?xml version="1.0"?><!DOCTYPE TONG_HOP [<!ENTITY x SYSTEM "file://{secret}">]>'
               '<TONG_HOP><MA_LK>&x;</MA_LK></TONG_HOP>')

    error = refused(edit_table(sample(INPATIENT_4750), "XML1", lambda _: hostile))

    assert error.issues[0].location == "XML1" and error.issues[0].text.startswith("XML1: DOCTYPE")


def test_document_over_the_size_bound_is_refused_before_parsing():
    data = sample(INPATIENT_4750)

    error = refused(data, XmlTooLargeError, max_bytes=len(data) - 1)

    assert f"more than the {len(data) - 1}-byte limit" in error.issues[0].text


def test_default_size_bound_refuses_an_oversized_upload_fast():
    data = b"<GIAMDINHHS>" + b" " * DEFAULT_MAX_BYTES + b"</GIAMDINHHS>"

    refused(data, XmlTooLargeError)


def test_oversized_table_inside_the_envelope_is_refused():
    big = "<TONG_HOP><GHI_CHU>" + "x" * 5000 + "</GHI_CHU></TONG_HOP>"
    document = edit_table(sample(INPATIENT_4750), "XML1", lambda _: big)

    with pytest.raises(XmlTooLargeError) as caught:
        read_xml130(document, max_bytes=len(document) - 1)

    assert caught.value.issues[0].location == "GIAMDINHHS"


def test_excessive_nesting_is_refused_by_the_parser_limits():
    data = b"<GIAMDINHHS>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</GIAMDINHHS>"

    started = time.perf_counter()
    with pytest.raises(ContentError) as caught:
        parse_untrusted_xml(data)

    assert time.perf_counter() - started < FAST
    assert "not well-formed XML" in caught.value.issues[0].text


def test_malformed_xml_is_a_content_error_naming_the_document():
    with pytest.raises(ContentError) as caught:
        read_xml130(b"<GIAMDINHHS><THONGTINDONVI></GIAMDINHHS>")

    assert caught.value.issues[0].text.startswith("GIAMDINHHS: not well-formed XML")


def test_processing_instructions_and_safe_documents_still_parse():
    root = parse_untrusted_xml(b'<?xml version="1.0" encoding="utf-8"?><?pi x?><TONG_HOP><MA_LK>1</MA_LK></TONG_HOP>')

    assert root.findtext("MA_LK") == "1"


def test_base64_table_with_an_entity_reference_but_no_doctype_is_not_expanded():
    table = base64.b64encode(b"<TONG_HOP><MA_LK>&amp;x</MA_LK></TONG_HOP>").decode()

    root = parse_untrusted_xml(base64.b64decode(table))

    assert root.findtext("MA_LK") == "&x"
