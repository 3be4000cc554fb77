"""XML 130 files as pipeline input: who sent a file, what it is called in the journal, and what
the transport asked of it.

An HL7 message names itself (MSH-3/4 sender, MSH-10 control id); an XML 130 file does not, so the
gateway names it: the sender is ``XML|<MACSKCB>`` (the ``XML|`` prefix keeps it apart from every
HL7 ``APP|FACILITY`` sender) and the control id is a hash of the file's bytes. A re-sent identical
file therefore meets its first copy in the journal and gets the same answer without being queued
again, and two different files can never share a control id. :class:`DocumentSource` carries
those names to the journal, to ``hssk_render`` (where it stands in for the HL7 message, so the
core JSON renderer works unchanged) and to the outbox keys.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.core.clients import facility_refusal
from gateway.formats.xml130 import CHECK_IN_DOCUMENT, CHECK_IN_KIND, CLAIM_DOCUMENT, CLAIM_KIND, ClaimFile
from gateway.model.envelope import Envelope
from gateway.model.masking import mask_identifier
from gateway.model.outcome import Issue
from gateway.model.records import RecordSet

#: The journal sender prefix for XML files: ``XML|79025``.
SENDER_PREFIX = "XML|"
#: Hex digits of the file's SHA-256 used as its control id: 128 bits, collision-free in practice.
CONTROL_ID_LENGTH = 32


@dataclass(frozen=True)
class DocumentSource:
    """The names one XML 130 file goes by (or any input other than an HL7 message: a source's
    :attr:`gateway.core.sources.Reading.origin`), shaped like the parts of an HL7 message that the
    journal, the outbox keys and the renderers read (``sender``, ``control_id``,
    ``message_type``, ``sending_facility``)."""

    sender: str
    control_id: str
    message_type: str
    sending_facility: str
    content_digest: str
    version: str = ""
    charset: str = "UTF-8"
    records: int = 0

    @classmethod
    def of_file(cls, document: ClaimFile, raw: bytes) -> DocumentSource:
        digest = hashlib.sha256(raw).hexdigest()
        kind = CHECK_IN_KIND if document.document == CHECK_IN_DOCUMENT else CLAIM_KIND
        return cls(SENDER_PREFIX + document.facility, digest[:CONTROL_ID_LENGTH], kind, document.facility, digest,
                   document.standard, records=len(document.records))

    @classmethod
    def unread(cls, raw: bytes, request: DocumentRequest | None) -> DocumentSource:
        """A file whose content the gateway has not (or could not) read: named by its bytes and
        by what the transport was told, so its journal row is still findable."""
        facility = request.facility if request is not None else ""
        kind = CHECK_IN_KIND if request is not None and request.document == CHECK_IN_DOCUMENT else CLAIM_KIND
        return cls.named_by_content(raw, SENDER_PREFIX + facility, kind, facility)

    @classmethod
    def named_by_content(cls, raw: bytes, sender: str, message_type: str, facility: str,
                         records: int = 0) -> DocumentSource:
        """An input that names no control id of its own, named by its bytes: an identical copy
        sent again (a file fed twice) meets the first in the journal and is not queued again,
        and two different inputs never share a control id. ``sender`` should carry a prefix of
        its source's own (``XML|``), so that it is never an HL7 ``APP|FACILITY``."""
        digest = hashlib.sha256(raw).hexdigest()
        return cls(sender, digest[:CONTROL_ID_LENGTH], message_type, facility, digest, records=records)


@dataclass(frozen=True)
class DocumentRequest:
    """What the transport was told about a file beside its bytes, for the pipeline to hold the
    file to: the BHXH-style endpoints say which kind of file they take (``document``, the
    ``ClaimFile.document`` value) and whose it is (``facility``, the form's maCSKCB). Empty means
    "any"."""

    document: str = ""
    facility: str = ""


def request_issues(document: ClaimFile, request: DocumentRequest | None) -> tuple[Issue, ...]:
    """Where the file contradicts what the sender said about it. These depend on the request as
    well as on the file, so the pipeline answers them AR (never a final answer the journal
    would repeat for the same file sent correctly); the location names the form field."""
    if request is None:
        return ()
    issues = []
    if request.document and document.document != request.document:
        issues.append(Issue(200, f"loaiHoSo: this endpoint takes a {request.document} file, the file is a "
                                 f"{document.document} file", "loaiHoSo"))
    if request.facility and document.facility != request.facility:
        issues.append(Issue(204, f"maCSKCB: {request.facility!r} differs from the file's facility code "
                                 f"{document.facility!r} (THONGTINDONVI/MACSKCB or MA_CSKCB)", "maCSKCB"))
    return tuple(issues)


#: Where a file names its facility, and where an episode does (``{}``: the episode's number):
#: (field as the sender knows it, ERR-2 location) for each kind of file.
_FACILITY_FIELDS = {
    CLAIM_DOCUMENT: (("file MACSKCB", "THONGTINDONVI^MACSKCB"),
                     ("HOSO {} XML1 MA_CSKCB", "HOSO^{}^XML1^MA_CSKCB")),
    CHECK_IN_DOCUMENT: (("file MA_CSKCB", "CHECKIN^1^MA_CSKCB"),
                        ("TRANG_THAI_KCB {} MA_CSKCB", "CHECKIN^{}^MA_CSKCB")),
}


def file_facility_refusal(envelope: Envelope, document: ClaimFile, request: DocumentRequest | None) -> Issue | None:
    """ERR 204 when an authenticated client's file names a facility that is not the client's: its
    MACSKCB (a check-in file's first MA_CSKCB), an episode's own MA_CSKCB that differs from it, or
    the form's maCSKCB. The core reads all of them before any plugin does, so a file that is
    another hospital's inside, under its sender's own header, cannot pass."""
    (file_field, file_location), (episode_field, episode_location) = _FACILITY_FIELDS[document.document]
    named = [(file_field, document.facility, file_location)]
    for n, records in enumerate(document.records, 1):
        facility = records.encounter.facility if records.encounter is not None else ""
        if facility and facility != document.facility:
            named.append((episode_field.format(n), facility, episode_location.format(n)))
    if request is not None and request.facility:
        # The form says whose file this is; when it names another's, the file's facility field is at fault.
        named.append(("form maCSKCB", request.facility, file_location))
    return facility_refusal(envelope, named)


def record_identity(records: RecordSet) -> str:
    """The episode key MA_LK, which links every table of one HOSO: the record set's identity
    inside its file, and so part of each outbox row's idempotency key."""
    return records.encounter.ma_lk if records.encounter is not None else ""


def repeated_episodes(record_sets: tuple[RecordSet, ...]) -> tuple[Issue, ...]:
    """MA_LK must be unique within a file: two HOSO with one MA_LK would claim one idempotency
    key, and a receiver could keep only one of them."""
    first: dict[str, int] = {}
    issues = []
    for n, records in enumerate(record_sets, 1):
        identity = record_identity(records)
        if identity in first:
            issues.append(Issue(205, f"MA_LK: HOSO {n} repeats the MA_LK {mask_identifier(identity)} of HOSO "
                                     f"{first[identity]}; each episode appears once per file", f"HOSO^{n}^XML1^MA_LK"))
        else:
            first[identity] = n
    return tuple(issues)


def located(issue: Issue, n: int, count: int) -> Issue:
    """``issue`` of the n-th record set, its location prefixed with ``HOSO^n`` when the file
    holds more than one, so the sender knows which episode to fix."""
    if count <= 1:
        return issue
    return Issue(issue.code, f"HOSO {n}: {issue.text}", f"HOSO^{n}^{issue.location}", issue.severity)
