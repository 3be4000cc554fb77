"""Parse once: a message is split into segments and fields a single time, and every reader (the
mappers, the rules, the groups of OBR/OBX) gets the same lists."""
from __future__ import annotations

from gateway.formats.hl7_fields import segments_in_order
from gateway.formats.hl7v2 import Hl7Message
from tests.support import sample


def test_segments_and_all_segments_share_one_split():
    message = Hl7Message.from_bytes(sample("oru_r01.hl7"))

    ordered = message.all_segments()

    assert [fields[0] for fields in ordered] == ["MSH", "PID", "PV1", "ORC", "OBR"] + ["OBX"] * 10 + ["NTE"]
    assert [id(f) for f in ordered if f[0] == "OBX"] == [id(f) for f in message.segments("OBX")]
    assert [id(f) for _, f in segments_in_order(message, frozenset({"OBR", "OBX"}))] == [
        id(f) for f in ordered if f[0] in ("OBR", "OBX")]
    assert message.all_segments() is ordered


def test_header_fields_are_read_once_as_sent():
    message = Hl7Message("MSH|^~\\&|LIS^X|79001^Y|GW|SYT|20250315||ORU^R01^ORU_R01|C1|P^T|2.5^VN|||AL|ne", "utf-8")

    assert (message.sending_application, message.sending_facility, message.sender) == ("LIS", "79001", "LIS|79001")
    assert (message.message_code, message.trigger_event, message.message_type) == ("ORU", "R01", "ORU^R01")
    assert (message.control_id, message.processing_id, message.version) == ("C1", "P", "2.5")
    assert (message.accept_ack_type, message.application_ack_type) == ("AL", "NE")


def test_a_short_header_reads_as_empty_fields():
    message = Hl7Message("MSH|^~\\&|LIS", "utf-8")

    assert (message.sending_facility, message.message_type, message.control_id, message.version) == ("", "", "", "")
    assert message.all_segments() == [["MSH", "^~\\&", "LIS"]]
