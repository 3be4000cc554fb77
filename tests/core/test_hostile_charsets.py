"""Issue 22, item 1: nothing a sender writes in MSH-18 may end a pipeline worker.

A NUL byte in MSH-18 made ``codecs.lookup`` raise inside ``Hl7Message.from_bytes``; two such
frames ended both workers and every later message, from every facility, was answered AR until a
restart. A codec that exists but is no character set (``undefined``, ``idna``) failed later, on the
timeout path or when the ACK was encoded. A charset name is now checked against an allow-list, and
a worker that dies anyway is replaced and counted.
"""
from __future__ import annotations

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import load_config
from gateway.core.ack import acknowledgements, encode_reply
from gateway.core.pipeline import Pipeline, best_header, undecided
from gateway.core.plugins import build_plugin_manager
from gateway.formats.charsets import codec_for
from gateway.model.envelope import Envelope
from gateway.model.outcome import REJECT, Issue
from tests.support import (connect_mllp, err_segments, hl7, metric_value, msa, replace_msh_field, send_and_receive,
                           standard_records, start_gateway)

HOSTILE_CHARSETS = ["UTF-8\x00", "\x00", "undefined", "idna", "punycode", "hex", "rot13", "base64", "utf-7",
                    "raw_unicode_escape", "unicode_escape", "x" * 300, "../../etc/passwd", "UTF-8\x00\x00\x00"]


def with_charset(raw: bytes, charset: str) -> bytes:
    return replace_msh_field(raw, 18, charset)


@pytest.mark.parametrize("name", HOSTILE_CHARSETS)
def test_a_name_that_is_no_character_set_has_no_codec(name):
    assert codec_for(name) is None


@pytest.mark.parametrize("name,codec", [("UNICODE UTF-8", "utf-8"), ("8859/1", "latin-1"), ("WINDOWS-1258", "cp1258"),
                                        ("iso-8859-15", "iso8859-15"), ("windows-1252", "cp1252"), ("GB 18030-2000",
                                                                                                   "gb18030")])
def test_character_sets_hl7_and_vietnamese_senders_use_keep_their_codec(name, codec):
    assert codec_for(name) == codec


@pytest_twisted.ensureDeferred
async def test_two_frames_with_a_nul_in_msh18_get_ae_102_and_intake_keeps_answering(tmp_path, plugin):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **{"pipeline.workers": 2,
                                                                     "pipeline.timeout_seconds": 2})
    try:
        client = await connect_mllp(gw)
        hostile = [await send_and_receive(client, with_charset(hl7(control_id=f"NUL{n}"), "UTF-8\x00"))
                   for n in (1, 2, 3)]
        good = await send_and_receive(client, hl7(control_id="GOOD1"))

        assert [msa(a)[1:3] for a in hostile] == [["AE", f"NUL{n}"] for n in (1, 2, 3)]
        [err] = err_segments(hostile[0])
        assert (err[2], err[3].split("^")[0]) == ("MSH^1^18", "102")
        assert "MSH-18" in err[8]
        assert b"\x00" not in hostile[0]
        assert msa(good)[1:3] == ["AA", "GOOD1"]
        assert metric_value(gw, "hssk_pipeline_worker_deaths_total") == 0
        client.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("charset", ["undefined", "idna"])
async def test_a_codec_that_is_no_character_set_is_answered_ae_102_in_utf8(tmp_path, plugin, charset):
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **{"pipeline.timeout_seconds": 2})
    try:
        client = await connect_mllp(gw)
        answer = await send_and_receive(client, with_charset(hl7(control_id="CODEC1"), charset))
        good = await send_and_receive(client, hl7(control_id="GOOD2"))

        assert msa(answer)[1:3] == ["AE", "CODEC1"]
        assert err_segments(answer)[0][3].split("^")[0] == "102"
        assert answer.split(b"\r")[0].split(b"|")[17] == b"UNICODE UTF-8"
        assert msa(good)[1:3] == ["AA", "GOOD2"]
        client.transport.loseConnection()
    finally:
        await gw.stop()


@pytest.mark.parametrize("charset", HOSTILE_CHARSETS)
def test_the_answer_for_an_undecided_message_can_be_built_whatever_its_msh18(charset):
    """The timeout path builds its AR on the reactor from the raw bytes: ``undefined`` crashed it."""
    envelope = Envelope(with_charset(hl7(control_id="LATE1"), charset), "mllp", "127.0.0.1:1", 0.0, "mllp")

    decision = undecided(envelope, REJECT, Issue(207, "too slow", "MSH^1^9"))
    [reply] = acknowledgements(decision.message, REJECT, decision.issues, 0.0)

    assert best_header(envelope).control_id == "LATE1"
    assert encode_reply(reply, decision.message.charset).split(b"\r")[1] == b"MSA|AR|LATE1|too slow"


class KeyboardInterruptInNormalize:
    """What ``Pipeline.decide`` cannot catch without catching too much: a plugin raising a
    ``BaseException`` that is not ``Exception`` or ``SystemExit``."""

    def __call__(self, message):
        if message.control_id.startswith("KILL"):
            raise KeyboardInterrupt
        return standard_records(message)


@pytest_twisted.ensureDeferred
async def test_a_worker_that_dies_anyway_is_replaced_counted_and_its_message_answered(tmp_path, plugin):
    plugin.behaviour = KeyboardInterruptInNormalize()
    gw = await start_gateway(tmp_path / "data", plugins=[plugin], **{"pipeline.workers": 2,
                                                                     "pipeline.timeout_seconds": 3})
    try:
        client = await connect_mllp(gw)
        killed = [await send_and_receive(client, hl7(control_id=f"KILL{n}")) for n in range(5)]
        good = await send_and_receive(client, hl7(control_id="GOOD3"))

        assert [msa(a)[1] for a in killed] == ["AE"] * 5
        [err] = err_segments(killed[0])
        assert err[3].split("^")[0] == "207" and "KeyboardInterrupt" in err[8] and "replayed" in err[8]
        assert msa(good)[1:3] == ["AA", "GOOD3"]
        assert metric_value(gw, "hssk_pipeline_worker_deaths_total") == 5
        assert metric_value(gw, "hssk_plugin_exceptions_total", plugin="test_his", stage="worker") == 5
        client.transport.loseConnection()
    finally:
        await gw.stop()


@pytest.fixture(scope="module")
def shipped_pipeline():
    config = load_config("config/gateway.toml", environ={})
    return Pipeline(build_plugin_manager(config).hook, config)


MSH_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n|"), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(charset=st.one_of(st.sampled_from(HOSTILE_CHARSETS + ["UNICODE UTF-8", "8859/1", "WINDOWS-1258", "",
                                                             "UNICODE UTF-16", "BIG-5"]), MSH_TEXT),
       forced=st.sampled_from(["", "WINDOWS-1258"]),
       fields=st.lists(MSH_TEXT, min_size=8, max_size=8), body=st.binary(max_size=200))
def test_decide_never_raises_and_its_answer_can_always_be_sent(shipped_pipeline, charset, forced, fields, body):
    app, facility, event, control_id, version, accept, application, extra = fields
    header = (f"MSH|^~\\&|{app}|{facility}|HSSK|79|20250101||ADT^{event}|{control_id}|P|{version}|||{accept}|"
              f"{application}||{charset}|{extra}")
    raw = header.encode("utf-8", "surrogatepass") + b"\r" + body
    envelope = Envelope(raw, "mllp", "127.0.0.1:1", 0.0, "mllp", forced_charset=forced)

    decision = shipped_pipeline.decide(envelope)

    if decision.ack_code is not None:
        for reply in acknowledgements(decision.message, decision.ack_code, decision.issues, 0.0):
            encode_reply(reply, decision.message.charset if decision.message else "utf-8")
    assert decision.fault is None or decision.fault[0] != "core", decision.issues


@pytest.mark.parametrize("charset", ["^", " ", "~", "^UNICODE UTF-8"])
def test_an_msh18_read_as_empty_is_answered_with_the_charset_the_ack_is_written_in(shipped_pipeline, charset):
    """``^`` or a space in MSH-18 names no charset, so the message is read in the default one;
    the ACK said ``^`` back, which names none either."""
    envelope = Envelope(with_charset(hl7(control_id="EMPTY18"), charset), "mllp", "127.0.0.1:1", 0.0, "mllp")

    decision = shipped_pipeline.decide(envelope)
    [reply] = acknowledgements(decision.message, decision.ack_code, decision.issues, 0.0)

    assert reply.split("\r")[0].split("|")[17] == "UNICODE UTF-8"
