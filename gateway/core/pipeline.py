"""The five steps every input goes through, as one synchronous function.

``Pipeline.decide`` runs on a worker thread (see :mod:`gateway.core.intake`) for every kind of
input, each a registered :class:`gateway.core.sources.Source` (HL7 v2 messages, XML 130 files, a
plugin's own): the source reads the bytes safely and names them, a plugin claims what it read
(identify), its adapter makes canonical records (normalize), the national rules, ``hssk_check``
and any remote lookups judge each record set (check), and each destination that wants them gets
them rendered (route). It never raises: every failure becomes a :class:`Decision` with an ACK
code and ERR issues, because an input that crashes the pipeline must still be journaled and
answered. A decision that needs remote answers first comes back with the lookups it lacks
(:attr:`Decision.lookups`); the intake performs them and decides again with the answers.
"""
from __future__ import annotations

import hashlib
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field

from twisted.logger import Logger

from gateway.config import GatewayConfig
from gateway.core.ack_profile import AckProfile, with_ack_profile
from gateway.core.documents import DocumentRequest, DocumentSource
from gateway.model.envelope import Envelope
from gateway.core.events import EVENT_TRANSPORT, event_source, read_event
from gateway.core.lookups import MAX_LOOKUPS, Lookup, LookupAnswer
from gateway.model.masking import mask_text, names_in_records
from gateway.model.records import RecordSet
from gateway.core.outbox import NotRouted, OutboxItem, idempotency_key, ordering_key
from gateway.model.outcome import ACCEPT, ERROR, REJECT, STATUS_BY_CODE, ContentError, Issue, NotRenderable, Unavailable
from gateway.rules.privacy import PrivacyPolicy, Removal, UnknownPart
from gateway.core.sources import HL7_V2, Reading, Source, SourceRegistry, Verdict
from gateway.rules.person_index import PersonFacts, person_facts
from gateway.formats.hl7v2 import (
    CharsetError,
    Hl7Message,
    MessageFormatError,
    UnknownCharsetError,
    peek_header,
    with_msh_field,
)

log = Logger(namespace="hssk.pipeline")

IGNORED = "ignored"
#: What an answer is written in when the sender's MSH-18 names no charset the gateway knows.
REPLY_CHARSET = "UNICODE UTF-8"


@dataclass
class Decision:
    """What the pipeline concluded, before the journal commit makes it an Outcome.

    ``message`` is the HL7 message, or ``document`` names any other input (an XML file, a
    plugin source's record); ``source`` is whichever is set, read by the journal for sender,
    control id, version and charset, and ``source_name`` is the registered source that read it.
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
    #: The registered source (:class:`gateway.core.sources.Source`) whose input this is.
    source_name: str = HL7_V2
    #: Not a decision yet: the remote answers it waits for (see :mod:`gateway.core.lookups`).
    lookups: tuple[Lookup, ...] = ()
    #: What the plugins ask of this message's ACK (``hssk_ack_profile``); every ACK built for it uses it.
    ack_profile: AckProfile | None = None
    #: Each record set's person, for the person index, which the journal writer resolves
    #: (:mod:`gateway.rules.person_index`).
    persons: tuple[PersonFacts, ...] = ()

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
    """Holds what every decision needs: the plugin hooks, the registered sources and the limits
    from config. It counts nothing itself (see :attr:`Decision.fault`), so it runs the same in a
    child process."""

    def __init__(self, hook, config: GatewayConfig) -> None:
        self._hook = hook
        self.sources = SourceRegistry.from_hook(hook, config)
        self._destinations = tuple(d for d in config.destinations if d.enabled)
        self._privacy = PrivacyPolicy.from_config(config.privacy)

    def decide(self, envelope: Envelope, progress=None, request: DocumentRequest | None = None, *,
               source: str = HL7_V2, answers: dict[Lookup, LookupAnswer] | None = None) -> Decision:
        """Decide about ``envelope.raw``, an input of the registered ``source``. ``progress``,
        when given, gets ``progress.plugin`` set as soon as a plugin claims the input, so a
        timeout can name the plugin that was too slow. ``request`` is what the transport was told
        beside the bytes (see :class:`DocumentRequest`), ``answers`` the remote lookups performed
        so far for this input.

        Plugin faults are caught where they happen; anything else that raises here is a bug of
        the gateway's own, and it too must cost this input only: an AE 207 that keeps the bytes
        in the journal for a replay, never a dead worker."""
        kind = self.sources[source]
        try:
            if envelope.transport == EVENT_TRANSPORT:
                decision = self._decide_event(envelope)
            else:
                decision = with_ack_profile(self._hook, self._decide(envelope, kind, progress, request, answers or {}))
        except Exception as e:
            decision = self._internal_error(envelope, e, kind, request)
        decision.request = request
        return decision

    def _internal_error(self, envelope: Envelope, error: Exception, source: Source,
                        request: DocumentRequest | None = None) -> Decision:
        what = source.noun
        # Where it was raised, not the traceback: its last line would quote the text unmasked.
        frames = traceback.extract_tb(error.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
        log.error("deciding a {what} raised {error_type} at {where}: {error}", what=what,
                  error_type=type(error).__name__, where=where, error=mask_text(str(error)))
        return undecided(envelope, ERROR, Issue(
            207, f"the gateway failed while deciding this {what} ({type(error).__name__}); it is journaled and can "
                 f"be replayed once the gateway is fixed", source.location),
            source=source, request=request, fault=("core", "decide"))

    def _decide(self, envelope: Envelope, source: Source, progress, request: DocumentRequest | None,
                answers: dict[Lookup, LookupAnswer]) -> Decision:
        """Step 0, read: the source parses the bytes and refuses what it can without a plugin.
        A reader that raises costs this input (journaled for a replay), never a worker."""
        try:
            reading = source.read(envelope, request)
        except ContentError as e:
            return decision_for(source, envelope, source.unread_origin(envelope, request), ERROR, e.issues)
        except Exception as e:  # a reader bug on one odd input must cost that input, never a worker thread
            log.error("reading a {what} of source {source} raised {error_type}: {error}", what=source.noun,
                      source=source.name, error_type=type(e).__name__, error=mask_text(str(e)))
            return decision_for(source, envelope, source.unread_origin(envelope, request), ERROR, (Issue(
                207, f"the gateway could not read the {source.noun} ({type(e).__name__}); it is journaled and can "
                     f"be replayed once the reader is fixed", source.location),),
                fault=(self.sources.owners[source.name], "parse"))
        if isinstance(reading, Verdict):
            return decision_for(source, envelope, reading.origin, reading.code, reading.issues,
                                decoded=reading.decoded, repeatable=reading.repeatable)
        return self._run_plugins(envelope, source, reading, progress, answers)

    def _run_plugins(self, envelope: Envelope, source: Source, reading: Reading, progress,
                     answers: dict[Lookup, LookupAnswer]) -> Decision:
        """Steps 1 to 4: identify, normalize, check (national rules, ``hssk_check``, lookups),
        route. An input whose record sets break a rule is answered AE and routed nowhere."""
        origin = reading.origin
        message = origin if source.hl7 else None
        stage, plugin = "identify", ""
        try:
            adapter = source.identify(self._hook, reading, envelope)
            if adapter is None:
                return decision_for(source, envelope, origin, REJECT, (source.unclaimed(reading),))
            plugin, stage = adapter.name, "normalize"
            if progress is not None:
                progress.plugin = plugin
            normalized = source.normalize(adapter, reading)
            record_sets = (normalized,) if isinstance(normalized, RecordSet) else tuple(normalized)
            if not source.many and len(record_sets) != 1:
                raise TypeError(f"adapter {plugin} made {len(record_sets)} record sets of one {source.noun}; "
                                f"source {source.name} takes one per input")
            stage = "check"
            issues = list(source.check_input(record_sets))
            for n, records in enumerate(record_sets, 1):
                found = [i for answer in self._hook.hssk_check(message=message, records=records) if answer
                         for i in answer]
                issues += [source.locate(i, n, len(record_sets)) for i in found]
            if not any(i.severity == "E" for i in issues):
                stage = "lookup"
                asked = [tuple(dict.fromkeys(lookup for found in self._hook.hssk_lookups(records=records,
                                                                                         envelope=envelope)
                                             if found for lookup in found)) for records in record_sets]
                missing = tuple(dict.fromkeys(lookup for wanted in asked for lookup in wanted
                                              if lookup not in answers))
                if len(missing) + len(answers) > MAX_LOOKUPS:
                    raise RuntimeError(f"plugins asked for {len(missing) + len(answers)} lookups for one "
                                       f"{source.noun}, more than {MAX_LOOKUPS}")
                if missing:
                    return decision_for(source, envelope, origin, None, (), plugin, lookups=missing)
                for n, (records, wanted) in enumerate(zip(record_sets, asked), 1):
                    if wanted:
                        found = [i for answer in self._hook.hssk_check_lookups(
                            records=records, answers={lookup: answers[lookup] for lookup in wanted}) if answer
                            for i in answer]
                        issues += [source.locate(i, n, len(record_sets)) for i in found]
            stage = "serialize"
            records_json = (f"[{','.join(r.json_text for r in record_sets)}]" if source.many
                            else record_sets[0].json_text)
            stage = "render"
            routed = Routed()
            if not any(i.severity == "E" for i in issues):
                for records in record_sets:
                    self._route(origin, records, plugin, source.identity(records), routed)
        except ContentError as e:
            return decision_for(source, envelope, origin, ERROR, e.issues, plugin)
        except Unavailable as e:
            return decision_for(source, envelope, origin, REJECT, e.issues, plugin)
        except (Exception, SystemExit) as e:  # a plugin bug must cost one input, never the gateway
            # (SystemExit too: a plugin calling sys.exit() would otherwise end a worker thread silently)
            issue = self._plugin_failed(e, plugin, stage, source.noun, source.location, origin.control_id,
                                        source.names(reading))
            return decision_for(source, envelope, origin, ERROR, (issue,), plugin, fault=(plugin or "unknown", stage))
        code = ERROR if any(i.severity == "E" for i in issues) else ACCEPT
        return decision_for(source, envelope, origin, code, tuple(issues), plugin, records_json=records_json,
                            outbox=tuple(routed.outbox), privacy=tuple(routed.privacy),
                            not_routed=tuple(routed.not_routed), persons=tuple(routed.persons))

    def _decide_event(self, envelope: Envelope) -> Decision:
        """A plugin's event (:mod:`gateway.core.events`): its record set routed like a message's.
        It is the plugin's own word, not a sender's, so ``hssk_check`` does not see it."""
        event = read_event(envelope.raw)
        source, records = event_source(event, envelope.raw), event.records
        routed = Routed()
        try:
            self._route(source, records, event.source, "", routed, frozenset(event.destinations) or None)
        except (Exception, SystemExit) as e:  # a plugin bug costs this event, which stays journaled for a replay
            issue = self._plugin_failed(e, event.source, "render", "event", "EVENT", source.control_id,
                                        names_in_records(records.to_dict()))
            return Decision(envelope, None, ERROR, (issue,), event.source, document=source,
                            fault=(event.source, "render"))
        return Decision(envelope, None, ACCEPT, (), event.source, records.json_text, outbox=tuple(routed.outbox),
                        document=source, privacy=tuple(routed.privacy), not_routed=tuple(routed.not_routed),
                        persons=tuple(routed.persons))

    def _plugin_failed(self, error: BaseException, plugin: str, stage: str, what: str, location: str,
                       control_id: str, names: tuple[str, ...]) -> Issue:
        """Log a plugin's failure, with identifiers and the ``names`` its message carries masked
        (an exception often quotes the value it choked on), and say it as the sender's ERR 207."""
        name = plugin or "unknown"
        log.error("plugin {plugin} raised {error_type} in {stage} for a {what}: {error}", plugin=name, stage=stage,
                  what=what, error_type=type(error).__name__, error=mask_text(str(error), names), control_id=control_id)
        return Issue(207, f"plugin {name} failed in {stage} ({type(error).__name__}); the {what} is journaled and "
                          f"can be replayed once the plugin is fixed", location)

    def route(self, origin: DocumentSource, record_sets: Iterable[tuple[RecordSet, str]], plugin: str) -> Routed:
        """Step 4 alone, for record sets that need no deciding: a population list's persons, which
        the plugin that read the list vouches for (as for an event, ``hssk_check`` does not see
        them) and the caller has resolved in the person index already (``Routed.persons`` stays
        empty). Each ``(records, identity)`` is routed, privacy-filtered and rendered as a
        message's would be; a renderer that raises anything but :class:`NotRenderable` raises
        here."""
        routed = Routed()
        if not any(d.matches(origin.message_type, plugin) for d in self._destinations):
            return routed  # no destination takes this kind: nothing to render, key or order
        for records, identity in record_sets:
            self._route(origin, records, plugin, identity, routed, index=False)
        return routed

    def _route(self, source: Hl7Message | DocumentSource, records: RecordSet, plugin: str, identity: str,
               routed: Routed, only: frozenset[str] | None = None, index: bool = True) -> None:
        """One outbox item per destination whose routes take this record set, rendered now so
        that a plugin's rendering bug is answered (AE 207) and journaled for a replay, not found
        as a dead letter days later. ``identity`` tells the record sets of one input apart in the
        idempotency key; ``routed`` collects them.

        What a destination's format cannot carry is not the sender's error: a renderer that
        raises :class:`NotRenderable` leaves that destination out, and the message is accepted
        for the others. So does a destination with ``privacy = "filtered"`` and format
        ``hl7v2``, which forwards the message as received and so cannot cut what the privacy
        policy would remove, and every filtered destination when the record set holds a part the
        policy does not know (:class:`UnknownPart`). Every other destination with
        ``privacy = "filtered"`` is rendered from the record set the policy left. ``only`` (an
        event's ``destinations``) replaces the routes: exactly those destinations take it."""
        person = ordering_key(records, source)
        facts = person_facts(records, person, source.sending_facility, plugin) if index else None
        if facts is not None:
            routed.persons.append(facts)
        filtered = None
        for destination in self._destinations:
            wanted = destination.name in only if only is not None else destination.matches(source.message_type, plugin)
            if not wanted:
                continue
            sent = records
            if destination.privacy == "filtered":
                try:
                    if filtered is None:
                        filtered = self._privacy.filter(records)
                except UnknownPart as e:  # fail-closed: what the policy does not know, it does not send
                    routed.not_routed.append(NotRouted(destination.name, e.reason, e.text))
                    continue
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


#: Why an ``hl7v2`` destination with ``privacy = "filtered"`` does not get a message the policy would cut.
WITHHELD_BY_PRIVACY = ("the privacy policy would remove part of this message, and format hl7v2 forwards messages "
                       "whole; route it to a destination with privacy = \"full\" if the law allows")


@dataclass
class Routed:
    """What the route step made of one source's record sets, destination by destination."""

    outbox: list[OutboxItem] = field(default_factory=list)
    privacy: list[tuple[str, Removal]] = field(default_factory=list)
    not_routed: list[NotRouted] = field(default_factory=list)
    persons: list[PersonFacts] = field(default_factory=list)


def decision_for(source: Source, envelope: Envelope, origin: Hl7Message | DocumentSource | None, code: str | None,
                 issues: tuple[Issue, ...], plugin: str = "", **fields) -> Decision:
    """A decision about an input of ``source``, its origin where the journal and the ACK builder
    look for it: the HL7 message, or the name of any other input."""
    if source.hl7:
        return Decision(envelope, origin, code, issues, plugin, source_name=source.name, **fields)
    return Decision(envelope, None, code, issues, plugin, document=origin, source_name=source.name, **fields)


def undecided(envelope: Envelope, code: str, issue: Issue, plugin: str = "", source: Source | None = None,
              request: DocumentRequest | None = None, fault: tuple[str, str] | None = None) -> Decision:
    """The decision for an input the pipeline did not decide (too slow, its process lost):
    journaled under whatever names its bytes give, so operators can find and replay it. Without
    ``source``, an HL7 v2 message."""
    if source is None:
        return Decision(envelope, best_header(envelope), code, (issue,), plugin, fault=fault)
    return decision_for(source, envelope, source.unread_origin(envelope, request), code, (issue,), plugin,
                        fault=fault, request=request)


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
