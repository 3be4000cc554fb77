"""The five steps every message goes through, as one synchronous function.

``Pipeline.decide`` runs on a worker thread (see :mod:`gateway.core.intake`): it decodes the
frame, checks the header, asks the plugins who owns the message, normalises it and runs the
policy checks. It never raises: every failure becomes a :class:`Decision` with an ACK code and
ERR issues, because a message that crashes the pipeline must still be journaled and answered.
Routing and rendering for the outbox join this function with the delivery work.

``Pipeline.decide_document`` is the same five steps for an XML 130 file: parse safely, ask
``hssk_identify_document``, normalise into one record set per episode, validate and check each,
route each. Its Decision names the file through a :class:`DocumentSource` instead of a message.
"""
from __future__ import annotations

import hashlib
import traceback
from dataclasses import dataclass, field

from twisted.logger import Logger

from gateway.config import GatewayConfig
from gateway.core.ack_profile import AckProfile, with_ack_profile
from gateway.core.clients import facility_refusal
from gateway.core.documents import (
    DocumentRequest,
    DocumentSource,
    file_facility_refusal,
    located,
    record_identity,
    repeated_episodes,
    request_issues,
)
from gateway.core.envelope import Envelope
from gateway.core.events import EVENT_TRANSPORT, event_source, read_event
from gateway.core.masking import mask_text, names_in_records
from gateway.core.model import RecordSet
from gateway.core.hookspecs import NotRenderable
from gateway.core.outbox import NotRouted, OutboxItem, idempotency_key, ordering_key
from gateway.core.outcome import ACCEPT, ERROR, REJECT, STATUS_BY_CODE, ContentError, Issue
from gateway.core.privacy import PrivacyPolicy, Removal
from gateway.core.validation import (
    check_hl7_structure,
    rules_from_config,
    validate_hl7_identity,
    validate_record_set,
)
from gateway.formats.hl7_model import names_in
from gateway.formats.hl7v2 import (
    CharsetConflictError,
    CharsetError,
    Hl7Message,
    MessageFormatError,
    UnknownCharsetError,
    peek_header,
    with_msh_field,
)
from gateway.formats.xml130 import read_xml130

log = Logger(namespace="hssk.pipeline")

IGNORED = "ignored"
#: What an answer is written in when the sender's MSH-18 names no charset the gateway knows.
REPLY_CHARSET = "UNICODE UTF-8"


@dataclass
class Decision:
    """What the pipeline concluded, before the journal commit makes it an Outcome.

    ``message`` is the HL7 message, or ``document`` names the XML file; ``source`` is whichever
    is set, read by the journal for sender, control id, version and charset.
    """

    envelope: Envelope
    message: Hl7Message | None
    ack_code: str | None
    issues: tuple[Issue, ...] = ()
    plugin: str = ""
    records_json: str | None = None
    decoded: bool = True
    outbox: tuple[OutboxItem, ...] = ()
    document: DocumentSource | None = None
    #: ``(plugin, stage)`` when a plugin (or the core's file reader) raised: the intake counts it,
    #: because a decision may be made in a child process whose metrics nobody scrapes.
    fault: tuple[str, str] | None = None
    #: ``(destination, removal)`` for what the privacy policy took out before rendering; counted
    #: by the intake once the outbox rows are committed.
    privacy: tuple[tuple[str, Removal], ...] = ()
    #: False for a refusal of what came with the message rather than of its content (a client
    #: sending for a facility not its own, form fields that contradict the file): the journal
    #: never answers it from an earlier copy of the same bytes, which was sent differently.
    repeatable: bool = True
    #: What the transport said about a file (the portal's form fields), journaled with it so a
    #: replay holds the file to the same request.
    request: DocumentRequest | None = None
    #: Destinations that wanted a record set their format cannot carry; journaled with the
    #: message and counted by the intake, the answer unchanged.
    not_routed: tuple[NotRouted, ...] = ()
    #: What the plugins ask of this message's ACK (``hssk_ack_profile``); every ACK built for it uses it.
    ack_profile: AckProfile | None = None

    @property
    def source(self) -> Hl7Message | DocumentSource | None:
        return self.message if self.message is not None else self.document

    @property
    def status(self) -> str:
        return IGNORED if self.ack_code is None else STATUS_BY_CODE[self.ack_code]

    @property
    def sender(self) -> str:
        source = self.source
        return source.sender if source else ""

    @property
    def control_id(self) -> str:
        source = self.source
        return source.control_id if source else ""

    @property
    def message_type(self) -> str:
        source = self.source
        return source.message_type if source else ""

    @property
    def digest(self) -> str:
        """Content identity for duplicate detection; raw bytes when the text could not be decoded."""
        if self.message is not None and self.decoded:
            return self.message.content_digest
        if self.document is not None:
            return self.document.content_digest
        return hashlib.sha256(self.envelope.raw).hexdigest()


class Pipeline:
    """Holds what every decision needs: the plugin hooks and the limits from config. It counts
    nothing itself (see :attr:`Decision.fault`), so it runs the same in a child process."""

    def __init__(self, hook, config: GatewayConfig) -> None:
        self._hook = hook
        self._default_charset = config.mllp.default_charset
        self._versions = frozenset(config.pipeline.supported_versions)
        self._rules = rules_from_config(config.validation)
        self._destinations = tuple(d for d in config.destinations if d.enabled)
        self._privacy = PrivacyPolicy.from_config(config.privacy)
        self._max_xml_bytes = config.http.max_body_bytes

    def decide(self, envelope: Envelope, progress=None) -> Decision:
        """``progress``, when given, gets ``progress.plugin`` set as soon as a plugin claims the
        message, so a timeout can name the plugin that was too slow.

        Plugin faults are caught where they happen; anything else that raises here is a bug of
        the gateway's own, and it too must cost this message only: an AE 207 that keeps the
        bytes in the journal for a replay, never a dead worker."""
        try:
            if envelope.transport == EVENT_TRANSPORT:
                return self._decide_event(envelope)
            return with_ack_profile(self._hook, self._decide(envelope, progress))
        except Exception as e:
            return self._internal_error(envelope, e, document=False)

    def _internal_error(self, envelope: Envelope, error: Exception, document: bool,
                        request: DocumentRequest | None = None) -> Decision:
        what = "file" if document else "message"
        # Where it was raised, not the traceback: its last line would quote the text unmasked.
        frames = traceback.extract_tb(error.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
        log.error("deciding a {what} raised {error_type} at {where}: {error}", what=what,
                  error_type=type(error).__name__, where=where, error=mask_text(str(error)))
        return undecided(envelope, ERROR, Issue(
            207, f"the gateway failed while deciding this {what} ({type(error).__name__}); it is journaled and can "
                 f"be replayed once the gateway is fixed", source_location(document)),
            document=document, request=request, fault=("core", "decide"))

    def _decide(self, envelope: Envelope, progress) -> Decision:
        try:
            message = Hl7Message.from_bytes(envelope.raw, envelope.forced_charset, self._default_charset,
                                            envelope.content_charset)
        except MessageFormatError as e:
            return Decision(envelope, None, REJECT, (Issue(100, f"MSH: {e}", "MSH^1"),))
        except UnknownCharsetError as e:
            text = (f"{e}; write the message in a character set of HL7 table 0211 (UNICODE UTF-8, 8859/1, ...) "
                    f"or WINDOWS-1258, and name it in MSH-18")
            return Decision(envelope, header_in_reply_charset(envelope.raw), ERROR, (Issue(102, text, "MSH^1^18"),),
                            decoded=False)
        except CharsetConflictError as e:
            text = (f"{e}; name the character set the bytes are written in in MSH-18, and send the same one "
                    f"in the Content-Type or none")
            return Decision(envelope, _header_of(envelope.raw, e.charset), ERROR, (Issue(102, text, "MSH^1^18"),),
                            decoded=False)
        except CharsetError as e:
            text = (f"{e}; MSH-18 (or the listener's forced charset) must name the character set the "
                    f"bytes are written in")
            return Decision(envelope, _header_of(envelope.raw, e.charset), ERROR,
                            (Issue(102, text, f"{e.segment}^{e.sequence}"),), decoded=False)
        refusal = self._check_header(message)
        if refusal is not None:
            return Decision(envelope, message, REJECT, (refusal,))
        if message.message_code == "ACK":
            return Decision(envelope, message, None)
        refusal = facility_refusal(envelope, (("MSH-4", message.sending_facility, "MSH^1^4"),))
        if refusal is not None:
            return Decision(envelope, message, REJECT, (refusal,), repeatable=False)
        return self._run_plugins(envelope, message, progress)

    def _check_header(self, message: Hl7Message) -> Issue | None:
        if not message.message_code:
            return Issue(101, "MSH-9: message type is required", "MSH^1^9")
        if not message.control_id:
            return Issue(101, "MSH-10: message control id is required", "MSH^1^10")
        if message.version not in self._versions:
            return Issue(203, f"MSH-12: version {message.version!r} is not supported "
                              f"(supported: {', '.join(sorted(self._versions))})", "MSH^1^12")
        return None

    def _run_plugins(self, envelope: Envelope, message: Hl7Message, progress) -> Decision:
        stage, plugin = "identify", ""
        try:
            adapter = self._hook.hssk_identify(message=message, envelope=envelope)
            if adapter is None:
                return Decision(envelope, message, REJECT, (Issue(
                    200, f"no plugin claims messages of type {message.message_type!r} from sending application "
                         f"{message.sending_application!r} (MSH-3), facility {message.sending_facility!r} (MSH-4)",
                    "MSH^1^3"),))
            plugin, stage = adapter.name, "normalize"
            structure = check_hl7_structure(message)
            if structure:
                return Decision(envelope, message, ERROR, structure, plugin)
            if progress is not None:
                progress.plugin = plugin
            records = adapter.normalize(message)
            stage = "check"
            issues = validate_hl7_identity(records, self._rules) + tuple(
                i for found in self._hook.hssk_check(message=message, records=records) if found for i in found)
            stage = "serialize"
            records_json = records.json_text
            stage = "render"
            routed = Routed() if any(i.severity == "E" for i in issues) else self._route(
                message, records, plugin, records.kind)
        except ContentError as e:
            return Decision(envelope, message, ERROR, e.issues, plugin)
        except (Exception, SystemExit) as e:  # a plugin bug must cost one message, never the gateway
            # (SystemExit too: a plugin calling sys.exit() would otherwise end a worker thread silently)
            issue = self._plugin_failed(e, plugin, stage, "message", "MSH^1^9", message.control_id,
                                        names_in(message))
            return Decision(envelope, message, ERROR, (issue,), plugin, fault=(plugin or "unknown", stage))
        code = ERROR if any(i.severity == "E" for i in issues) else ACCEPT
        return Decision(envelope, message, code, issues, plugin, records_json, outbox=tuple(routed.outbox),
                        privacy=tuple(routed.privacy), not_routed=tuple(routed.not_routed))

    def decide_document(self, envelope: Envelope, progress=None, request: DocumentRequest | None = None) -> Decision:
        """Decide about one XML 130 file (``envelope.raw``); like :meth:`decide`, never raises.

        A file the sender must fix (unsafe or malformed XML, a rule broken) is AE; a file no
        plugin claims, one that names a facility its client may not send for (anywhere: form,
        header, episode), or one that contradicts ``request`` (the endpoint's kind, the form's
        maCSKCB), is AR — AR is never repeated from the journal, so the same file sent correctly
        is decided afresh. The client's facilities are checked before the form, so a client
        sending another hospital's file hears that (403), not that a form field is wrong (205).
        """
        try:
            decision = self._decide_document(envelope, progress, request)
        except Exception as e:
            decision = self._internal_error(envelope, e, document=True, request=request)
        decision.request = request
        return decision

    def _decide_document(self, envelope: Envelope, progress, request: DocumentRequest | None) -> Decision:
        try:
            document = read_xml130(envelope.raw, max_bytes=self._max_xml_bytes)
        except ContentError as e:
            return Decision(envelope, None, ERROR, e.issues, document=DocumentSource.unread(envelope.raw, request))
        except Exception as e:  # a reader bug on one odd file must cost that file, never a worker thread
            log.error("reading an XML file raised {error_type}: {error}", error_type=type(e).__name__,
                      error=mask_text(str(e)))
            return Decision(envelope, None, ERROR, (Issue(
                207, f"the gateway could not read the file ({type(e).__name__}); it is journaled and can be "
                     f"replayed once the reader is fixed", "GIAMDINHHS"),),
                document=DocumentSource.unread(envelope.raw, request), fault=("core", "parse"))
        source = DocumentSource.of_file(document, envelope.raw)
        foreign = file_facility_refusal(envelope, document, request)
        refusal = (foreign,) if foreign else request_issues(document, request)
        if refusal:
            return Decision(envelope, None, REJECT, refusal, document=source, repeatable=False)
        stage, plugin = "identify", ""
        try:
            adapter = self._hook.hssk_identify_document(document=document, envelope=envelope)
            if adapter is None:
                return Decision(envelope, None, REJECT, (Issue(
                    200, f"no plugin claims facility MACSKCB={document.facility!r} ({document.document} file); "
                         f"the gateway's plugin config lists the facilities it takes", "THONGTINDONVI^MACSKCB"),),
                    document=source)
            plugin, stage = adapter.name, "normalize"
            if progress is not None:
                progress.plugin = plugin
            record_sets = tuple(adapter.normalize(document))
            stage = "check"
            issues = list(repeated_episodes(record_sets))
            for n, records in enumerate(record_sets, 1):
                found = list(validate_record_set(records, self._rules))
                found += [i for answer in self._hook.hssk_check(message=None, records=records) if answer
                          for i in answer]
                issues += [located(i, n, len(record_sets)) for i in found]
            stage = "serialize"
            records_json = f"[{','.join(r.json_text for r in record_sets)}]"
            stage = "render"
            routed = Routed()
            if not any(i.severity == "E" for i in issues):
                for records in record_sets:
                    self._route(source, records, plugin, record_identity(records), routed)
        except ContentError as e:
            return Decision(envelope, None, ERROR, e.issues, plugin, document=source)
        except (Exception, SystemExit) as e:  # a plugin bug must cost one file, never the gateway
            issue = self._plugin_failed(e, plugin, stage, "file", "GIAMDINHHS", source.control_id,
                                        names_in_records([r.to_dict() for r in document.records]))
            return Decision(envelope, None, ERROR, (issue,), plugin, document=source,
                            fault=(plugin or "unknown", stage))
        code = ERROR if any(i.severity == "E" for i in issues) else ACCEPT
        return Decision(envelope, None, code, tuple(issues), plugin, records_json, outbox=tuple(routed.outbox),
                        document=source, privacy=tuple(routed.privacy), not_routed=tuple(routed.not_routed))

    def _decide_event(self, envelope: Envelope) -> Decision:
        """A plugin's event (:mod:`gateway.core.events`): its record set routed like a message's.
        It is the plugin's own word, not a sender's, so ``hssk_check`` does not see it."""
        event = read_event(envelope.raw)
        source, records = event_source(event, envelope.raw), event.records
        try:
            routed = self._route(source, records, event.source, "")
        except (Exception, SystemExit) as e:  # a plugin bug costs this event, which stays journaled for a replay
            issue = self._plugin_failed(e, event.source, "render", "event", "EVENT", source.control_id,
                                        names_in_records(records.to_dict()))
            return Decision(envelope, None, ERROR, (issue,), event.source, document=source,
                            fault=(event.source, "render"))
        return Decision(envelope, None, ACCEPT, (), event.source, records.json_text, outbox=tuple(routed.outbox),
                        document=source, privacy=tuple(routed.privacy), not_routed=tuple(routed.not_routed))

    def _plugin_failed(self, error: BaseException, plugin: str, stage: str, what: str, location: str,
                       control_id: str, names: tuple[str, ...]) -> Issue:
        """Log a plugin's failure, with identifiers and the ``names`` its message carries masked
        (an exception often quotes the value it choked on), and say it as the sender's ERR 207."""
        name = plugin or "unknown"
        log.error("plugin {plugin} raised {error_type} in {stage} for a {what}: {error}", plugin=name, stage=stage,
                  what=what, error_type=type(error).__name__, error=mask_text(str(error), names), control_id=control_id)
        return Issue(207, f"plugin {name} failed in {stage} ({type(error).__name__}); the {what} is journaled and "
                          f"can be replayed once the plugin is fixed", location)

    def _route(self, source: Hl7Message | DocumentSource, records: RecordSet, plugin: str, identity: str,
               routed: Routed | None = None) -> Routed:
        """One outbox item per destination whose routes take this record set, rendered now so
        that a plugin's rendering bug is answered (AE 207) and journaled for a replay, not found
        as a dead letter days later. ``identity`` tells the record sets of one source apart in the
        idempotency key; ``routed`` collects the record sets of one file.

        What a destination's format cannot carry is not the sender's error: a renderer that
        raises :class:`NotRenderable` leaves that destination out, and the message is accepted
        for the others. So does a destination with ``privacy = "filtered"`` and format
        ``hl7v2``, which forwards the message as received and so cannot cut what the privacy
        policy would remove. Every other destination with ``privacy = "filtered"`` is rendered
        from the record set the policy left."""
        routed = routed if routed is not None else Routed()
        person = ordering_key(records, source)
        filtered = None
        for destination in self._destinations:
            if not destination.matches(source.message_type, plugin):
                continue
            sent = records
            if destination.privacy == "filtered":
                if filtered is None:
                    filtered = self._privacy.filter(records)
                sent, removed = filtered
                if removed and destination.format == "hl7v2":
                    routed.privacy += [(destination.name, Removal(c, "message", 1))
                                       for c in dict.fromkeys(r.category for r in removed)]
                    routed.not_routed.append(NotRouted(destination.name, "privacy", WITHHELD_BY_PRIVACY))
                    continue
                routed.privacy += [(destination.name, r) for r in removed]
            key = idempotency_key(destination.name, source.sender, source.control_id, identity)
            try:
                payload = self._hook.hssk_render(records=sent, destination=destination, message=source,
                                                 idempotency_key=key)
            except NotRenderable as e:
                routed.not_routed.append(NotRouted(destination.name, e.reason, e.text))
                continue
            if payload is None:
                raise LookupError(f"no plugin renders format {destination.format!r} "
                                  f"for destination {destination.name!r}")
            routed.outbox.append(OutboxItem(destination.name, key, person, payload.content_type, payload.body))
        return routed


#: Why an ``hl7v2`` destination with ``privacy = "filtered"`` does not get a message the policy would cut.
WITHHELD_BY_PRIVACY = ("the privacy policy would remove part of this message, and format hl7v2 forwards messages "
                       "whole; route it to a destination with privacy = \"full\" if the law allows")


@dataclass
class Routed:
    """What the route step made of one source's record sets, destination by destination."""

    outbox: list[OutboxItem] = field(default_factory=list)
    privacy: list[tuple[str, Removal]] = field(default_factory=list)
    not_routed: list[NotRouted] = field(default_factory=list)


def source_location(document: bool) -> str:
    """ERR-2 for a fault about the whole message (its MSH-9) or the whole XML 130 file."""
    return "GIAMDINHHS" if document else "MSH^1^9"


def undecided(envelope: Envelope, code: str, issue: Issue, plugin: str = "", document: bool = False,
              request: DocumentRequest | None = None, fault: tuple[str, str] | None = None) -> Decision:
    """The decision for a message or file the pipeline did not decide (too slow, its process
    lost): journaled under whatever names its bytes give, so operators can find and replay it."""
    if document:
        return Decision(envelope, None, code, (issue,), plugin, document=DocumentSource.unread(envelope.raw, request),
                        fault=fault, request=request)
    return Decision(envelope, best_header(envelope), code, (issue,), plugin, fault=fault)


def best_header(envelope: Envelope) -> Hl7Message | None:
    """The message decoded if possible, else its MSH read as Latin-1: enough to address an answer."""
    try:
        return Hl7Message.from_bytes(envelope.raw, envelope.forced_charset, content_charset=envelope.content_charset)
    except UnknownCharsetError:
        return header_in_reply_charset(envelope.raw)
    except (MessageFormatError, CharsetError):
        return peek_header(envelope.raw)


def header_in_reply_charset(raw: bytes) -> Hl7Message | None:
    """The MSH of a message whose MSH-18 names no charset the gateway knows, read as UTF-8 and
    with MSH-18 saying so: the answer is written in UTF-8, and mirroring the sender's name (a
    NUL byte, a codec that cannot encode) would make the ACK itself unreadable."""
    message = peek_header(raw, REPLY_CHARSET)
    if message is None:
        return None
    return Hl7Message(with_msh_field(message.text, message.field_separator, 18, REPLY_CHARSET), REPLY_CHARSET)


def _header_of(raw: bytes, declared_charset: str) -> Hl7Message | None:
    """The MSH of a message whose body did not decode, in the charset it declares, so the AE
    goes back in that charset with the sender's header mirrored as the sender wrote it."""
    message = peek_header(raw, declared_charset)
    if message is not None:
        message.charset = declared_charset
    return message
