"""The XML 130 source (built-in plugin ``core.xml130``): QĐ 4750 (and 4210) claim and check-in
files over ``POST /xml130`` and the BHXH portal's pair of endpoints.

Reading a file parses it safely (no DTD, no entities, no network, at most ``http.max_body_bytes``)
into one record set per HOSO, names it by its bytes (:class:`DocumentSource`), and refuses, before
any plugin is asked, a file that names a facility its client may not send for, or that
contradicts the portal form it came with. ``hssk_identify_document`` finds the owner; each
episode is checked by the claim and identity rules, and an issue says which HOSO it is about.
"""
from __future__ import annotations

from functools import partial

from gateway.config import GatewayConfig
from gateway.core.documents import (
    DocumentRequest,
    DocumentSource,
    file_facility_refusal,
    located,
    record_identity,
    repeated_episodes,
    request_issues,
)
from gateway.core.hookspecs import DocumentAdapter
from gateway.core.sources import XML_130, Reading, Source, Verdict
from gateway.formats.xml130 import CHECK_IN_KIND, CLAIM_KIND, read_xml130
from gateway.model.envelope import Envelope
from gateway.model.hooks import hookimpl
from gateway.model.masking import names_in_records
from gateway.model.outcome import REJECT, Issue

XML_CONTENT_TYPES = ("application/xml", "text/xml")


def read_file(envelope: Envelope, request: DocumentRequest | None, *, max_bytes: int) -> Reading | Verdict:
    document = read_xml130(envelope.raw, max_bytes=max_bytes)
    source = DocumentSource.of_file(document, envelope.raw)
    foreign = file_facility_refusal(envelope, document, request)
    refusal = (foreign,) if foreign else request_issues(document, request)
    if refusal:
        return Verdict(REJECT, refusal, source, repeatable=False)
    return Reading(source, document)


def identify(hook, reading: Reading, envelope: Envelope) -> DocumentAdapter | None:
    return hook.hssk_identify_document(document=reading.content, envelope=envelope)


def unclaimed(reading: Reading) -> Issue:
    document = reading.content
    return Issue(200, f"no plugin claims facility MACSKCB={document.facility!r} ({document.document} file); "
                      f"the gateway's plugin config lists the facilities it takes", "THONGTINDONVI^MACSKCB")


@hookimpl
def hssk_sources(config: GatewayConfig) -> list[Source]:
    return [Source(
        XML_130,
        read=partial(read_file, max_bytes=config.http.max_body_bytes),
        identify=identify, unclaimed=unclaimed, many=True, identity=record_identity,
        check_input=repeated_episodes, locate=located,
        noun="file", location="GIAMDINHHS",
        unread=lambda envelope, request: DocumentSource.unread(envelope.raw, request),
        names=lambda reading: names_in_records([r.to_dict() for r in reading.content.records]),
        message_types=frozenset({CLAIM_KIND, CHECK_IN_KIND}),
        media_types=XML_CONTENT_TYPES, route=b"xml130", title="XML", description="an XML 130 file",
    )]
