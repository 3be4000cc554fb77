"""The core's own renderers, chosen by the destination's ``format``:

- ``json``: canonical JSON, the format every destination can take;
- ``xml130``: a QĐ 130/4750 file (GIAMDINHHS, or the check-in file for a check-in record set),
  ``application/xml`` — what the provincial record store takes by default;
- ``fhir``: a FHIR R4 collection Bundle, ``application/fhir+json``, for a store that says so;
- ``hl7v2``: the original message forwarded as it came (for ``mllp`` destinations).

Registered like a plugin (``trylast``), so every plugin gets them and a vendor plugin that
renders one of these formats differently wins. A record set a format has no place for raises
:class:`NotRenderable`: that destination does not get it, and the sender's answer stays as the
checks decided it.
"""
from __future__ import annotations

import json

from gateway.core.hookspecs import Payload
from gateway.formats.charsets import codec_for
from gateway.formats.fhir import render_fhir_json
from gateway.formats.hl7v2 import Hl7Message, with_msh_field
from gateway.formats.xml130 import CHECK_IN_DOCUMENT, CHECK_IN_KIND, CLAIM_DOCUMENT, ClaimFile, write_xml130
from gateway.model.hooks import PluginDescription, hookimpl
from gateway.model.outcome import NotRenderable
from gateway.model.records import RecordSet

UTF8_CHARSET = "UNICODE UTF-8"


@hookimpl
def hssk_describe() -> PluginDescription:
    return PluginDescription("core.render", "formats json, xml130, fhir, hl7v2, after any plugin that renders them")


@hookimpl(trylast=True)
def hssk_render(records, destination, message, idempotency_key) -> Payload | None:
    if destination.format == "json":
        return render_json(records, message, idempotency_key)
    if destination.format == "xml130":
        return render_xml130(records, message, idempotency_key)
    if destination.format == "fhir":
        return Payload("application/fhir+json", render_fhir_json(records, idempotency_key))
    if destination.format == "hl7v2":
        return render_hl7v2(message)
    return None


def render_xml130(records: RecordSet, message, idempotency_key: str) -> Payload:
    """One record set as one XML 130 file with one HOSO. An XML 130 file is an episode's file:
    a record set without MA_LK (an ADT^A28/A31 person update, a result with no PV1-19) has no
    place in one, so it is not routed here rather than written invalid; the message itself may
    be perfectly valid HL7. NGAYLAP is the message's date (MSH-7), else the episode's admission
    date."""
    encounter = records.encounter
    if encounter is None or not encounter.ma_lk:
        raise NotRenderable("no_episode", f"{records.kind} has no episode key (MA_LK, HL7 PV1-19), and an XML 130 "
                                          f"file is an episode's file; route such messages to a json or fhir "
                                          f"destination")
    created_on = message.msh(7)[:8] if isinstance(message, Hl7Message) else ""
    document = CHECK_IN_DOCUMENT if records.kind == CHECK_IN_KIND else CLAIM_DOCUMENT
    claim = ClaimFile((records,), facility=encounter.facility,
                      created_on=created_on if created_on.isdigit() else encounter.admitted_at[:8], document=document)
    return Payload("application/xml", write_xml130(claim, document_id=idempotency_key))


def render_json(records, message: Hl7Message, idempotency_key: str) -> Payload:
    head = json.dumps({"id": idempotency_key, "source": {
        "sender": message.sender, "control_id": message.control_id, "message_type": message.message_type}},
        ensure_ascii=False, separators=(",", ":"))
    return Payload("application/json", f'{head[:-1]},"records":{records.json_text}}}'.encode("utf-8"))


def render_hl7v2(message) -> Payload:
    """The message as received, segments ending in CR, always encoded as UTF-8.

    The receiver dedupes on MSH-10, which is forwarded unchanged, so the idempotency key needs no
    place of its own. A message that arrived in another character set is re-encoded, and its
    MSH-18 says so, because a receiver decodes by MSH-18. An XML 130 file is no HL7 message and
    is not forwarded.
    """
    if not isinstance(message, Hl7Message):
        raise NotRenderable("not_hl7", "format hl7v2 forwards HL7 messages as received, and this is an XML 130 "
                                       "file; route XML intake to a json, xml130 or fhir destination")
    text = message.text.rstrip("\r")
    if codec_for(message.charset) != "utf-8":
        text = with_msh_field(text, message.field_separator, 18, UTF8_CHARSET)
    return Payload("application/hl7-v2", (text + "\r").encode("utf-8"))
