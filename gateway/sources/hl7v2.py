"""The HL7 v2 source (built-in plugin ``core.hl7v2``): messages over MLLP and ``POST /hl7``.

Reading a message decodes it (MSH-18, the listener's forced charset, the HTTP Content-Type's,
``mllp.default_charset``, in that order), checks its header (MSH-9, MSH-10, a supported MSH-12),
leaves inbound ACKs unanswered, and refuses a client sending for a facility (MSH-4) not its own,
all before any plugin is asked. Then ``hssk_identify`` finds the owner; the message structure
(an ADT or VXU needs its PID) is checked before the owner's adapter normalises it, and the
identity rules are located in HL7 terms (``PID^1^3``). Every message is answered with HL7 ACKs.
"""
from __future__ import annotations

from collections.abc import Collection
from functools import partial

from gateway.config import GatewayConfig
from gateway.core.clients import facility_refusal
from gateway.core.documents import DocumentRequest
from gateway.core.hookspecs import Adapter
from gateway.core.pipeline import best_header, header_in_reply_charset
from gateway.core.sources import HL7_V2, Reading, Source, Verdict
from gateway.formats.hl7_model import names_in
from gateway.formats.hl7v2 import (
    CharsetConflictError,
    CharsetError,
    Hl7Message,
    MessageFormatError,
    UnknownCharsetError,
    peek_header,
)
from gateway.model.envelope import Envelope
from gateway.model.hooks import hookimpl
from gateway.model.outcome import ERROR, REJECT, ContentError, Issue
from gateway.model.records import RecordSet
from gateway.rules.validation import check_hl7_structure

HL7_CONTENT_TYPES = ("application/hl7-v2", "x-application/hl7-v2+er7", "text/plain")


def read_message(envelope: Envelope, request: DocumentRequest | None, *, default_charset: str,
                 versions: Collection[str]) -> Reading | Verdict:
    try:
        message = Hl7Message.from_bytes(envelope.raw, envelope.forced_charset, default_charset,
                                        envelope.content_charset)
    except MessageFormatError as e:
        return Verdict(REJECT, (Issue(100, f"MSH: {e}", "MSH^1"),))
    except UnknownCharsetError as e:
        text = (f"{e}; write the message in a character set of HL7 table 0211 (UNICODE UTF-8, 8859/1, ...) "
                f"or WINDOWS-1258, and name it in MSH-18")
        return Verdict(ERROR, (Issue(102, text, "MSH^1^18"),), header_in_reply_charset(envelope.raw), decoded=False)
    except CharsetConflictError as e:
        text = (f"{e}; name the character set the bytes are written in in MSH-18, and send the same one "
                f"in the Content-Type or none")
        return Verdict(ERROR, (Issue(102, text, "MSH^1^18"),), _header_of(envelope.raw, e.charset), decoded=False)
    except CharsetError as e:
        text = (f"{e}; MSH-18 (or the listener's forced charset) must name the character set the "
                f"bytes are written in")
        return Verdict(ERROR, (Issue(102, text, f"{e.segment}^{e.sequence}"),), _header_of(envelope.raw, e.charset),
                       decoded=False)
    refusal = check_header(message, versions)
    if refusal is not None:
        return Verdict(REJECT, (refusal,), message)
    if message.message_code == "ACK":
        return Verdict(None, (), message)
    refusal = facility_refusal(envelope, (("MSH-4", message.sending_facility, "MSH^1^4"),))
    if refusal is not None:
        return Verdict(REJECT, (refusal,), message, repeatable=False)
    return Reading(message, message)


def check_header(message: Hl7Message, versions: Collection[str]) -> Issue | None:
    if not message.message_code:
        return Issue(101, "MSH-9: message type is required", "MSH^1^9")
    if not message.control_id:
        return Issue(101, "MSH-10: message control id is required", "MSH^1^10")
    if message.version not in versions:
        return Issue(203, f"MSH-12: version {message.version!r} is not supported "
                          f"(supported: {', '.join(sorted(versions))})", "MSH^1^12")
    return None


def _header_of(raw: bytes, declared_charset: str) -> Hl7Message | None:
    """The MSH of a message whose body did not decode, in the charset it declares, so the AE
    goes back in that charset with the sender's header mirrored as the sender wrote it."""
    message = peek_header(raw, declared_charset)
    if message is not None:
        message.charset = declared_charset
    return message


def identify(hook, reading: Reading, envelope: Envelope) -> Adapter | None:
    return hook.hssk_identify(message=reading.content, envelope=envelope)


def unclaimed(reading: Reading) -> Issue:
    message = reading.content
    return Issue(200, f"no plugin claims messages of type {message.message_type!r} from sending application "
                      f"{message.sending_application!r} (MSH-3), facility {message.sending_facility!r} (MSH-4)",
                 "MSH^1^3")


def normalize(adapter: Adapter, reading: Reading) -> RecordSet:
    """The structure first (an ADT without PID is the sender's AE, not the adapter's crash)."""
    structure = check_hl7_structure(reading.content)
    if structure:
        raise ContentError(structure)
    return adapter.normalize(reading.content)


@hookimpl
def hssk_sources(config: GatewayConfig) -> list[Source]:
    return [Source(
        HL7_V2,
        read=partial(read_message, default_charset=config.mllp.default_charset,
                     versions=frozenset(config.pipeline.supported_versions)),
        identify=identify, unclaimed=unclaimed, normalize=normalize,
        hl7=True, noun="message", location="MSH^1^9",
        unread=lambda envelope, request: best_header(envelope),
        names=lambda reading: names_in(reading.content),
        media_types=HL7_CONTENT_TYPES, route=b"hl7", title="HL7 v2", description="an HL7 v2 message",
    )]
