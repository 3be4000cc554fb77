"""The plugin kit (gateway.testing) as a plugin's author uses it: the hssk_* fixtures pytest loads
through the gateway's pytest11 entry point, the ACK assertions, the log capture, and the
conformance suite, which must fail a plugin that breaks each of its promises."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest
import pytest_twisted

from gateway.testing import Ack, GatewayUnderTest, read_sample, with_msh_field
from tests.support import REPO, TestPlugin, hl7

DHG_SAMPLES = REPO / "plugins" / "dhg_his" / "samples"


@pytest.fixture
def hssk_plugins():
    return [TestPlugin()]


@pytest_twisted.ensureDeferred
async def test_a_message_sent_over_mllp_is_acked_journaled_and_delivered_with_its_key(
        hssk_gateway, hssk_mllp, hssk_recording_store):
    ack = await hssk_mllp.send(hl7(control_id="KIT1"))

    ack.assert_accepted()
    [row] = hssk_gateway.journal(control_id="KIT1")
    [key] = hssk_gateway.outbox_keys([row["id"]])
    await hssk_recording_store.wait_for_keys({key})
    [delivery] = hssk_recording_store.deliveries("json", key)
    assert (row["plugin"], delivery.content_type) == ("test_his", "application/json")
    assert f'"id":"{key}"' in delivery.text


@pytest_twisted.ensureDeferred
async def test_hl7_over_http_answers_with_the_same_ack(hssk_http):
    answer = await hssk_http.post_hl7(hl7(control_id="KIT2"))

    assert answer.status == 200
    assert (answer.ack.code, answer.ack.control_id) == ("AA", "KIT2")


@pytest_twisted.ensureDeferred
async def test_an_error_ack_is_read_into_its_err_segments(hssk_mllp):
    ack = await hssk_mllp.send(hl7("PID|1||07908500012^^^BCA^NI||Nguyễn^Văn Thử||19850412|M", control_id="KIT3"))

    error = ack.assert_error(location="PID^1^3", code=102, text="CCCD")
    assert error.severity == "E" and "0790****012" in error.text
    with pytest.raises(AssertionError, match="no ERR with location='PID\\^1\\^7'"):
        ack.assert_error(location="PID^1^7")
    with pytest.raises(AssertionError, match="expected AA/CA, got AE"):
        ack.assert_accepted()


@pytest_twisted.ensureDeferred
async def test_an_unclaimed_sender_is_read_as_rejected(hssk_mllp):
    ack = await hssk_mllp.send(hl7(sending_app="NOBODY_HIS", control_id="KIT4"))

    ack.assert_rejected(location="MSH^1^3", code=200)


@pytest_twisted.ensureDeferred
async def test_the_log_capture_renders_what_the_gateway_writes(hssk_log, hssk_mllp):
    await hssk_mllp.send(hl7(control_id="KIT5"))

    assert hssk_log.lines_with("plugin test_his: AA")
    hssk_log.assert_not_logged(["079085000123", "Văn Thử"])
    with pytest.raises(AssertionError, match="reached the log"):
        hssk_log.assert_not_logged(["test_his"])


def test_ack_of_an_enhanced_mode_message_keeps_its_code():
    ack = Ack(b"MSH|^~\\&|GW|SYT|HIS|79001|20250101||ACK|1|P|2.5\rMSA|CE|MSG1\rERR||PID^1^3|102^Data type error^HL70357|E"
              b"||||PID-3\\T\\x\r")

    assert (ack.code, ack.control_id, ack.errors[0].text) == ("CE", "MSG1", "PID-3&x")
    ack.assert_error(location="PID^1^3", code=102)


def test_an_unknown_plugin_name_says_which_are_installed(tmp_path):
    with pytest.raises(LookupError,
                       match="no installed plugin is named no_such_his .* dhg_his, immunization, viettel_his"):
        GatewayUnderTest(tmp_path, ["no_such_his"])


#: Three plugins that each break one promise of the conformance suite, built on dhg_his so that
#: everything else about them conforms: they claim the DHG samples like dhg_his does.
MISBEHAVING = '''
import json

from twisted.logger import Logger

from gateway.plugin import Payload, hookimpl
from plugins.dhg_his.plugin import DEFAULTS, DhgHisPlugin


class Greedy(DhgHisPlugin):
    """Claims every message by its type alone."""

    @hookimpl
    def hssk_identify(self, message, envelope):
        return self.adapter


class Leaky(DhgHisPlugin):
    """Logs the CCCD it checked."""

    @hookimpl
    def hssk_check(self, message, records):
        if records.person is not None:
            Logger(namespace="leaky").info("checked {cccd}", cccd=records.person.identifier("CCCD"))


class Unfiltered(DhgHisPlugin):
    """Renders json from the message as received, not from the records the privacy policy left."""

    @hookimpl
    def hssk_render(self, records, destination, message, idempotency_key):
        if destination.format == "json" and hasattr(message, "text"):
            return Payload("application/json", json.dumps({"id": idempotency_key, "hl7": message.text}).encode())


greedy = Greedy("greedy_his", DEFAULTS, contract="1.0")
leaky = Leaky("leaky_his", DEFAULTS, contract="1.0")
unfiltered = Unfiltered("unfiltered_his", DEFAULTS, contract="1.0")
'''

CONFORMANCE = '''
from pathlib import Path

from gateway.testing.conformance import PluginConformance

SAMPLES = Path({samples!r})


class Suite(PluginConformance):
    samples = SAMPLES
    foreign_samples = [SAMPLES.parent.parent / "vnpt_his" / "samples"]


class TestGreedy(Suite):
    plugin = "greedy_his"
    settings = {{"plugins.greedy_his.xml_facilities": ["92001"]}}


class TestLeaky(Suite):
    plugin = "leaky_his"
    settings = {{"plugins.leaky_his.xml_facilities": ["92001"]}}


class TestUnfiltered(Suite):
    plugin = "unfiltered_his"
    settings = {{"plugins.unfiltered_his.xml_facilities": ["92001"]}}
'''


def test_the_conformance_suite_fails_each_plugin_on_the_promise_it_breaks(tmp_path):
    site = tmp_path / "site"
    info = site / "hssk_misbehaving-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "hssk_misbehaving.py").write_text(MISBEHAVING)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hssk-misbehaving\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[hssk_gateway.plugins]\n" + "".join(
        f"{name}_his = hssk_misbehaving:{name}\n" for name in ("greedy", "leaky", "unfiltered")))
    (tmp_path / "test_misbehaving.py").write_text(CONFORMANCE.format(samples=str(DHG_SAMPLES)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}

    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml",
                          str(tmp_path / "results.xml"), str(tmp_path / "test_misbehaving.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    cases = ElementTree.parse(tmp_path / "results.xml").getroot().iter("testcase")
    failed = {(case.get("classname").rpartition(".")[2], case.get("name")) for case in cases
              if case.find("failure") is not None or case.find("error") is not None}
    assert failed == {
        ("TestGreedy", "test_only_its_own_traffic_is_claimed"),
        ("TestLeaky", "test_no_identifier_or_name_from_the_samples_reaches_the_log"),
        ("TestUnfiltered", "test_hiv_and_drug_use_diagnoses_never_reach_a_filtered_destination"),
    }, run.stdout[-3000:]
    assert "3 failed, 18 passed" in run.stdout, run.stdout[-3000:]


def test_the_samples_edits_keep_every_other_byte():
    raw = read_sample(DHG_SAMPLES / "adt_a04.hl7")

    edited = with_msh_field(raw, 3, "OTHER")

    assert edited.split(b"\r")[1:] == raw.split(b"\r")[1:]
    assert edited.split(b"|")[2] == b"OTHER" and raw.endswith(b"\r") and b"\n" not in raw
