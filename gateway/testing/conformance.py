"""The conformance suite: what every plugin must do, checked against a real gateway.

A plugin runs it with one class in its tests::

    from pathlib import Path

    from gateway.testing.conformance import PluginConformance

    class TestConformance(PluginConformance):
        plugin = "my_his"                                   # its entry-point name
        samples = Path(__file__).parent.parent / "samples"  # *.hl7 and *.xml (XML 130) files
        settings = {"plugins.my_his.xml_facilities": ["79025"]}   # what a site would configure
        foreign_samples = [OTHER_VENDOR / "adt_a04.hl7"]    # traffic it must leave to others

Each test starts a gateway with only that plugin (loaded through its entry point, as ``serve``
loads it), destinations of kind ``http`` in each of :attr:`PluginConformance.formats` posting to a
:class:`~gateway.testing.recording.RecordingDestination`, all with ``privacy = "filtered"``, and
checks one promise:

- it declares a plugin contract this gateway loads, and describes what it claims;
- every sample is accepted (AA/CA over MLLP for HL7, 200 on ``/xml130`` for XML 130) and delivered
  in every format, or journaled as not routed there with a reason (an ADT^A40 has no XML 130
  form), each payload carrying its idempotency key;
- it claims only its own traffic: its samples from another MSH-3 (or, for XML, another facility)
  and ``foreign_samples`` are refused as unclaimed;
- bad input is answered AE (422 for XML) with an ERR naming the field: each sample with its CCCD
  made to start with ``000`` (no province; ERR 103 saying CCCD), each ADT without its PID, each
  XML 130 file without HO_TEN;
- no CCCD, CMND, card or BHXH number, and no full name from its samples, reaches the log, whatever
  was sent (samples, broken ones, foreign ones, replays);
- idempotency keys are stable: the same message sent twice, replayed, replayed after a restart,
  and decided by another gateway, has the same outbox keys and nothing is queued twice;
- the privacy policy holds for its records: each sample with HIV (B20) and drug-use (F11.2)
  diagnoses added (a DG1 for HL7, MA_BENH_KT for XML 130) has them in the journal and in no
  payload a ``filtered`` destination receives. A message kind without DG1 of its own (a VXU)
  gets them too when it is named in :attr:`PluginConformance.diagnoses_added_to`.

A sample is read as it is sent (:func:`gateway.testing.samples.read_sample`); a variant gets a
control id of its own, so the gateway never takes it for a resend of the original.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest_twisted

from gateway.core.contract import contract_problem
from gateway.formats.hl7v2 import Hl7Message
from gateway.testing.gateway import ACCEPTED, GatewayUnderTest
from gateway.testing.logs import LogCapture
from gateway.testing.recording import Delivery, RecordingDestination, recording_settings
from gateway.testing.samples import (
    edit_xml130,
    is_hl7,
    is_xml130,
    read_sample,
    with_msh_field,
    with_segment_after,
    without_segments,
    xml130_tables,
)

#: Identifier systems masked everywhere an operator reads (README "Masking").
SECRET_SYSTEMS = frozenset({"CCCD", "CMND", "BHYT", "BHXH", "PASSPORT"})
#: What the privacy test adds (in ASCII, which every charset a sample may be in can carry), and
#: what a filtered payload must then not hold.
HIV_DG1 = "DG1|{n}||B20^Benh do HIV^I10|Benh do HIV||W"
DRUG_DG1 = "DG1|{n}||F11.2^Nghien opioid^I10|Nghien opioid||W"
PRIVATE = re.compile(r"\bB20\b|\bF11\b|\bHIV\b|opioid", re.IGNORECASE)
_MA_BENH_KT = re.compile(rb"<MA_BENH_KT>([^<]*)</MA_BENH_KT>")
_HO_TEN = re.compile(rb"\s*<HO_TEN>.*?</HO_TEN>", re.DOTALL)


@dataclass
class Sample:
    """One sample file and, once the gateway has taken it, what it was journaled as."""

    path: Path
    raw: bytes
    records: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def hl7(self) -> bool:
        return is_hl7(self.path)

    @property
    def message(self) -> Hl7Message:
        return Hl7Message.from_bytes(self.raw)

    def variant(self, raw: bytes, tag: str) -> bytes:
        """``raw`` (an edit of this sample) under a control id of its own (HL7; an XML file's
        identity is its content already), so the gateway does not answer it as a conflicting resend."""
        return with_msh_field(raw, 10, f"{self.message.control_id}{tag}") if self.hl7 else raw

    def persons(self) -> Iterator[dict]:
        for records in self.records:
            person = records.get("person") or {}
            yield person
            yield from person.get("related", ())

    def identifiers(self, systems: frozenset[str] = SECRET_SYSTEMS) -> set[str]:
        return {i["value"] for person in self.persons() for i in person.get("identifiers", ())
                if i.get("system") in systems and i.get("value")}

    def names(self) -> set[str]:
        """Full names, and for names of three words or more the words after the family name:
        masking keeps only the family name and initials, so neither may appear."""
        found = set()
        for person in self.persons():
            parts = [p for p in (person.get("family"), person.get("middle"), person.get("given")) if p]
            if len(parts) > 1:
                found.add(" ".join(parts))
            rest = " ".join(parts[1:])
            if len(rest.split()) > 1:
                found.add(rest)
        return found


class PluginConformance:
    """Subclass it in a test module (name it ``Test…``) and set :attr:`plugin` and :attr:`samples`."""

    #: The plugin's name in the ``hssk_gateway.plugins`` entry-point group.
    plugin: ClassVar[str] = ""
    #: The folder of its sample files: ``*.hl7`` (one segment per line) and ``*.xml`` (XML 130).
    samples: ClassVar[Path | None] = None
    #: Files of other vendors (HL7 or XML 130), or folders of them, that it must not claim.
    foreign_samples: ClassVar[Sequence[Path]] = ()
    #: Config keys, dotted, as a site would set them (``plugins.<name>.xml_facilities``…).
    settings: ClassVar[Mapping[str, Any]] = {}
    #: One destination per format; add the formats your plugin renders itself.
    formats: ClassVar[Sequence[str]] = ("json", "fhir", "xml130")
    #: Message codes (MSH-9.1, ``VXU``) whose samples have no DG1 of their own but whose plugin maps
    #: a DG1 a sender adds: the privacy check appends its HIV and drug-use DG1 to those samples.
    diagnoses_added_to: ClassVar[frozenset[str]] = frozenset()
    #: An MSH-3 and a facility code no plugin under test may claim.
    unclaimed_sending_application: ClassVar[str] = "HSSK_CONFORMANCE_NOBODY"
    unclaimed_facility: ClassVar[str] = "96999"

    # --- the gateway each test runs -------------------------------------------------------------

    def _gateway(self, data_dir: Path, recording: RecordingDestination) -> GatewayUnderTest:
        """Only this plugin, loaded through its entry point, with :attr:`settings` over one
        destination per format."""
        return GatewayUnderTest(data_dir, [self.plugin], {**recording_settings(recording, self.formats), **self.settings})

    async def _start(self, data_dir: Path, recording: RecordingDestination) -> GatewayUnderTest:
        return await self._gateway(data_dir, recording).start()

    def _samples(self) -> list[Sample]:
        assert self.plugin, f"{type(self).__name__}: set plugin = '<entry-point name>'"
        assert self.samples is not None and Path(self.samples).is_dir(), \
            f"{type(self).__name__}: samples = {self.samples!r} is not a folder"
        return [Sample(p, read_sample(p)) for p in sorted(Path(self.samples).iterdir()) if is_hl7(p) or is_xml130(p)]

    async def _send(self, gateway: GatewayUnderTest, sample: Sample, raw: bytes | None = None) -> tuple[str, int | None]:
        """Send over the sample's transport; (the answer's code, its journal id when accepted).
        The code is the ACK's MSA-1 for HL7, and for XML 130 ``AA``/``AE``/``AR`` by HTTP 200/422/403."""
        raw = sample.raw if raw is None else raw
        if sample.hl7:
            ack = await gateway.send_mllp(raw)
            rows = [r for r in gateway.journal(control_id=ack.control_id) if r["replay_of"] is None]
            return ack.code, rows[0]["id"] if rows and ack.code in ACCEPTED else None
        answer = await gateway.http.post_xml130(raw)
        code = {200: "AA", 422: "AE"}.get(answer.status, "AR")
        return code, answer.json().get("message_id") if answer.status == 200 else None

    async def _accept_all(self, gateway: GatewayUnderTest, samples: list[Sample]) -> dict[str, int]:
        """Send each sample; each must be accepted. Fills in what each was journaled as."""
        ids = {}
        for sample in samples:
            code, message_id = await self._send(gateway, sample)
            assert code in ACCEPTED and message_id is not None, \
                f"{sample.name}: answered {code}, expected AA/CA; {self._errors_of(gateway, sample)}"
            [row] = gateway.journal(id=message_id)
            records = json.loads(row["records"])
            sample.records = records if isinstance(records, list) else [records]
            ids[sample.name] = message_id
        return ids

    @staticmethod
    def _errors_of(gateway: GatewayUnderTest, sample: Sample) -> str:
        rows = gateway.journal()
        return f"journal says: {rows[-1]['errors'] if rows else 'nothing'}"

    # --- the checks ---------------------------------------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_declares_a_contract_this_gateway_loads_and_describes_its_claims(self, tmp_path):
        recording = RecordingDestination().start()
        try:
            gateway = self._gateway(tmp_path / "data", recording)
        finally:
            await recording.stop()
        [plugin] = [p for name, p in gateway.plugins.list_name_plugin() if name == self.plugin]

        assert contract_problem(getattr(plugin, "hssk_contract", None)) is None
        describe = getattr(plugin, "hssk_describe", None)
        assert callable(describe), "the plugin must implement hssk_describe"
        description = describe()
        assert description.name and description.claims, "hssk_describe must say what the plugin claims"

    @pytest_twisted.ensureDeferred
    async def test_every_sample_is_accepted_and_delivered_in_every_format(self, tmp_path):
        samples = self._samples()
        assert samples, f"{self.samples}: no *.hl7 or *.xml sample to check"
        recording = RecordingDestination().start()
        gateway = await self._start(tmp_path / "data", recording)
        try:
            ids = await self._accept_all(gateway, samples)
            rows = [r for r in gateway.outbox() if r["message_id"] in ids.values()]
            await recording.wait_for_keys({r["idempotency_key"] for r in rows})
            not_routed = gateway.not_routed()
        finally:
            await gateway.stop()
            await recording.stop()

        for sample in samples:
            message_id = ids[sample.name]
            for destination in self.formats:
                queued = [r for r in rows if r["message_id"] == message_id and r["destination"] == destination]
                skipped = [n for n in not_routed if n["message_id"] == message_id and n["destination"] == destination]
                assert queued or skipped, f"{sample.name}: neither delivered to {destination} nor journaled as not routed"
                assert all(s["reason"] for s in skipped)
                for row in queued:
                    [delivery] = recording.deliveries(destination, row["idempotency_key"])
                    assert delivery.content_type == row["content_type"]
                    if destination != "hl7v2":
                        assert row["idempotency_key"] in _payload_text(delivery), \
                            f"{sample.name}: the {destination} payload does not carry its idempotency key"
        assert any(r["destination"] == "json" for r in rows), "no sample reached the json destination"

    @pytest_twisted.ensureDeferred
    async def test_only_its_own_traffic_is_claimed(self, tmp_path):
        samples = self._samples()
        foreign = [(s.name + " from another MSH-3",
                    s.variant(with_msh_field(s.raw, 3, self.unclaimed_sending_application), "F"), True)
                   for s in samples if s.hl7]
        foreign += [(s.name + " from another facility", self._with_facility(s), False)
                    for s in samples if not s.hl7]
        foreign += [(f"{p.parent.parent.name}/{p.name}", read_sample(p), is_hl7(p)) for p in self._foreign_files()]
        recording = RecordingDestination().start()
        gateway = await self._start(tmp_path / "data", recording)
        try:
            answers = []
            for name, raw, hl7 in foreign:
                if hl7:
                    answers.append((name, (await gateway.send_mllp(raw)).code))
                else:
                    answers.append((name, (await gateway.http.post_xml130(raw)).status))
            claimed = [row for row in gateway.journal() if row["plugin"]]
        finally:
            await gateway.stop()
            await recording.stop()

        assert [(name, code) for name, code in answers if code not in ("AR", "CR", 403)] == []
        assert claimed == [], f"claimed by {self.plugin}: {[(r['sender'], r['control_id']) for r in claimed]}"

    def _foreign_files(self) -> list[Path]:
        files = []
        for path in map(Path, self.foreign_samples):
            files += sorted(path.iterdir()) if path.is_dir() else [path]
        return [p for p in files if is_hl7(p) or is_xml130(p)]

    def _with_facility(self, sample: Sample) -> bytes:
        """An XML 130 file moved to :attr:`unclaimed_facility`: every facility code it names that
        the original named as its own (MACSKCB, MA_CSKCB) is replaced."""
        own = set(re.findall(rb"<(?:MACSKCB|MA_CSKCB)>(\w+)</", b"".join(xml130_tables(sample.raw))))
        new = self.unclaimed_facility.encode("ascii")

        def move(xml: bytes) -> bytes:
            return re.sub(rb"(<(?:MACSKCB|MA_CSKCB)>)(\w+)(</)",
                          lambda m: m.group(1) + (new if m.group(2) in own else m.group(2)) + m.group(3), xml)

        return edit_xml130(sample.raw, move)

    @pytest_twisted.ensureDeferred
    async def test_a_broken_cccd_or_a_missing_field_is_answered_ae_naming_it(self, tmp_path):
        samples = self._samples()
        recording = RecordingDestination().start()
        gateway = await self._start(tmp_path / "data", recording)
        try:
            await self._accept_all(gateway, samples)
            cases = list(self._broken(samples))
            assert any(what == "CCCD" for _, what, _, _ in cases), \
                "no sample carries a CCCD: add one whose person has a CCCD, so the check has something to break"
            answers = [(sample, what, shown, await self._errors_for(gateway, sample, raw))
                       for sample, what, raw, shown in cases]
        finally:
            await gateway.stop()
            await recording.stop()

        for sample, what, shown, (code, errors) in answers:
            assert code in ("AE", "CE"), f"{sample.name} with {what} broken: answered {code}, expected AE"
            named = [e for e in errors if what in e["text"] or what in e["location"]]
            assert named, f"{sample.name} with {what} broken: no error names {what}: {errors}"
            assert all(e["location"] for e in named), f"{sample.name}: an error without a location: {named}"
            assert shown is None or not any(shown in e["text"] for e in errors), \
                f"{sample.name}: the error quotes the identifier unmasked"

    def _broken(self, samples: list[Sample]) -> Iterator[tuple[Sample, str, bytes, str | None]]:
        """(sample, the field an error must name, the broken bytes, a value no error may quote)."""
        for sample in samples:
            for n, cccd in enumerate(sorted(sample.identifiers(frozenset({"CCCD"})))):
                # Still 12 digits, so a plugin that files a SO_CCCD by its shape (CCCD, CMND,
                # passport) keeps it a CCCD; but no province has the code 00.
                broken = "000" + cccd[3:]
                raw = edit_xml130(sample.raw, lambda xml: xml.replace(cccd.encode(), broken.encode())) \
                    if not sample.hl7 else sample.raw.replace(cccd.encode("ascii"), broken.encode("ascii"))
                yield sample, "CCCD", sample.variant(raw, f"C{n}"), broken
            if sample.hl7 and sample.message.message_code == "ADT":
                yield sample, "PID", sample.variant(without_segments(sample.raw, "PID"), "P"), None
            if not sample.hl7 and any(b"<TONG_HOP>" in t and b"<HO_TEN>" in t for t in xml130_tables(sample.raw)):
                raw = edit_xml130(sample.raw, lambda xml: _HO_TEN.sub(b"", xml) if b"<TONG_HOP>" in xml else xml)
                yield sample, "HO_TEN", raw, None

    @staticmethod
    async def _errors_for(gateway: GatewayUnderTest, sample: Sample, raw: bytes) -> tuple[str, list[dict]]:
        if sample.hl7:
            ack = await gateway.send_mllp(raw)
            return ack.code, [{"location": e.location, "code": e.code, "text": e.text} for e in ack.errors]
        answer = await gateway.http.post_xml130(raw)
        return {200: "AA", 422: "AE"}.get(answer.status, "AR"), answer.json().get("errors", [])

    @pytest_twisted.ensureDeferred
    async def test_no_identifier_or_name_from_the_samples_reaches_the_log(self, tmp_path):
        samples = self._samples()
        recording = RecordingDestination().start()
        log = LogCapture().start()
        gateway = await self._start(tmp_path / "data", recording)
        try:
            ids = await self._accept_all(gateway, samples)
            for sample, _, raw, _ in list(self._broken(samples)):
                await self._errors_for(gateway, sample, raw)
            for sample in samples:
                await self._send(gateway, sample)
                await gateway.replay(ids[sample.name])
            await gateway.restart()
            for message_id in ids.values():
                await gateway.replay(message_id)
        finally:
            await gateway.stop()
            await recording.stop()
            log.stop()

        assert log.lines_with(self.plugin), "the gateway logged no decision by the plugin: nothing was checked"
        secrets = set().union(*(s.identifiers() | s.names() for s in samples))
        assert secrets, "the samples carry no identifier or name to look for"
        log.assert_not_logged(sorted(secrets))

    @pytest_twisted.ensureDeferred
    async def test_idempotency_keys_survive_a_resend_a_replay_and_a_restart(self, tmp_path):
        samples = self._samples()
        recording = RecordingDestination().start()
        gateway = await self._start(tmp_path / "data", recording)
        elsewhere = None
        try:
            ids = await self._accept_all(gateway, samples)
            first = {name: gateway.outbox_keys([i]) for name, i in ids.items()}
            rows = len(gateway.outbox())
            for sample in samples:
                code, _ = await self._send(gateway, sample)
                assert code in ACCEPTED, f"{sample.name}: the resend was answered {code}"
            replays = [await gateway.replay(i) for i in ids.values()]
            await gateway.restart()
            replays += [await gateway.replay(i) for i in ids.values()]
            after = {name: gateway.outbox_keys([i]) for name, i in ids.items()}
            rows_after = len(gateway.outbox())
            await recording.wait_for_keys(set().union(*first.values()))
            delivered = list(recording.received)
            elsewhere = await self._start(tmp_path / "elsewhere", recording)
            other = {sample.name: elsewhere.outbox_keys([(await self._accept_all(elsewhere, [sample]))[sample.name]])
                     for sample in samples}
        finally:
            await gateway.stop()
            if elsewhere is not None:
                await elsewhere.stop()
            await recording.stop()

        assert all(first.values()), f"a sample queued nothing: {first}"
        assert (after, rows_after) == (first, rows), "a resend or a replay queued new rows"
        assert [(e["ack_code"], e["queued"]) for answer in replays for e in answer["replayed"]] == \
            [("AA", 0)] * len(replays), f"a replay was not accepted, or queued rows: {replays}"
        assert other == first, "another gateway deciding the same bytes made other keys"
        assert len(delivered) == len({d.idempotency_key for d in delivered}), "a key was delivered twice"

    @pytest_twisted.ensureDeferred
    async def test_hiv_and_drug_use_diagnoses_never_reach_a_filtered_destination(self, tmp_path):
        samples = self._samples()
        cases = [(s, raw) for s in samples for raw in [self._with_private_diagnoses(s)] if raw is not None]
        assert cases, ("no sample has a diagnosis (an HL7 DG1, an XML 130 MA_BENH_KT) to add to: add one, so the "
                       "privacy check has something to filter")
        recording = RecordingDestination().start()
        gateway = await self._start(tmp_path / "data", recording)
        try:
            sent = []
            for sample, raw in cases:
                code, message_id = await self._send(gateway, sample, raw)
                assert code in ACCEPTED, f"{sample.name} with B20 and F11.2 added: answered {code}"
                [row] = gateway.journal(id=message_id)
                keys = gateway.outbox_keys([message_id])
                sent.append((sample, row, keys))
            await recording.wait_for_keys(set().union(*(keys for _, _, keys in sent)))
        finally:
            await gateway.stop()
            await recording.stop()

        for sample, row, keys in sent:
            assert "B20" in row["records"] and "F11.2" in row["records"], \
                f"{sample.name}: the added diagnoses are not in the journaled records; the plugin dropped them"
            for key in keys:
                for delivery in recording.deliveries(key=key):
                    found = PRIVATE.search(_payload_text(delivery))
                    assert found is None, (f"{sample.name}: {delivery.destination} received {found.group(0)!r}, "
                                           f"which privacy = \"filtered\" removes")

    def _with_private_diagnoses(self, sample: Sample) -> bytes | None:
        """The sample with B20 and F11.2 among its diagnoses, or None when it has none to add to."""
        if sample.hl7:
            count = len(sample.message.segments("DG1"))
            if not count and sample.message.message_code not in self.diagnoses_added_to:
                return None
            raw = with_segment_after(sample.raw, "DG1", HIV_DG1.format(n=count + 1))
            raw = with_segment_after(raw, "DG1", DRUG_DG1.format(n=count + 2))
            return sample.variant(raw, "H")
        if not any(_MA_BENH_KT.search(t) for t in xml130_tables(sample.raw)):
            return None

        def add(match: re.Match) -> bytes:
            codes = [c for c in match.group(1).split(b";") if c] + [b"B20", b"F11.2"]
            return b"<MA_BENH_KT>" + b";".join(codes) + b"</MA_BENH_KT>"

        return edit_xml130(sample.raw, lambda xml: _MA_BENH_KT.sub(add, xml))


def _payload_text(delivery: Delivery) -> str:
    """A payload as text to search, an XML 130 file's base64 tables decoded."""
    if "xml" in delivery.content_type:
        return "\n".join(t.decode("utf-8", "replace") for t in xml130_tables(delivery.body))
    return delivery.body.decode("utf-8", "replace")
