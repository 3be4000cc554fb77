"""Input kinds as a registry: every kind of input the gateway takes is a :class:`Source`.

HL7 v2 messages, XML 130 files, a district's population list, an immunization export: each is a
source that a plugin registers through :func:`gateway.core.hookspecs.hssk_sources`, and the
gateway's own two (``hl7v2`` and ``xml130``, :mod:`gateway.sources`) are registered the same
way, as built-in plugins. A source says what only it knows:

- how its bytes are recognised and parsed safely (``read``), and what it refuses before any
  plugin is asked (a malformed header, a facility the client may not send for);
- who owns what it read (``identify``, usually by asking a hook such as ``hssk_identify``);
- how its inputs are named and labelled: :attr:`Reading.origin` gives the journal's sender,
  control id, message type and facility, and the outbox's keys; ``message_types`` are the
  metric label values its inputs may carry;
- how a transport mounts it (``media_types``, ``route``; ``hl7`` for HL7 ACKs), and how an
  operator feeds it from a file (``split``).

:class:`gateway.core.pipeline.Pipeline` then runs the five steps the same way for every source:
read, identify, normalize, check (the national rules, ``hssk_check``, remote lookups), route,
and the intake commits and answers. Registered sources are looked up by ``name``, which is also
what the journal keeps (``messages.source``), so a replay reads the bytes with the same source.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from gateway.core.documents import DocumentSource
from gateway.model.outcome import Issue
from gateway.model.records import RecordSet

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.core.documents import DocumentRequest
    from gateway.core.hookspecs import Adapter
    from gateway.formats.hl7v2 import Hl7Message
    from gateway.model.envelope import Envelope

#: The built-in sources' names: MLLP carries HL7 v2, and journal rows from before sources were
#: recorded are one of these two.
HL7_V2 = "hl7v2"
XML_130 = "xml130"

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ROUTE = re.compile(rb"[a-z0-9][a-z0-9_-]{0,63}")
#: Paths of the HTTP listener that are not a source's.
RESERVED_ROUTES = frozenset({b"healthz", b"readyz", b"metrics", b"admin", b"api"})


class SourceError(Exception):
    """A source cannot be registered (a bad name or route, two with one name); start-up stops."""


@dataclass(frozen=True)
class Reading:
    """What a source's ``read`` made of one input.

    ``origin`` names it for the journal, the outbox keys and the renderers: the
    :class:`Hl7Message` itself for an HL7 source, otherwise a :class:`DocumentSource` (sender,
    control id, message type, facility, content digest, records). ``content`` is what
    ``identify`` and the adapter's ``normalize`` see: the message, the parsed file, a CSV row.
    """

    origin: Hl7Message | DocumentSource
    content: Any


@dataclass(frozen=True)
class Verdict:
    """An answer ``read`` gives before any plugin is asked: ``code`` AE or AR (None: journaled
    and never answered, as an inbound ACK) with its ``issues``, for the input ``origin`` names (None
    when not even a name could be read). ``decoded`` is False when the bytes did not decode (the
    journal's content digest is then of the bytes); ``repeatable`` is False for a refusal of who
    sent it or what came with it, which a resend of the same bytes must not be answered from."""

    code: str | None
    issues: tuple[Issue, ...] = ()
    origin: Hl7Message | DocumentSource | None = None
    decoded: bool = True
    repeatable: bool = True


def _unclaimed(reading: Reading) -> Issue:
    origin = reading.origin
    return Issue(200, f"no plugin claims {origin.message_type or 'this input'} from sender {origin.sender!r}")


def _one_by_one(adapter: Adapter, reading: Reading) -> RecordSet | Iterable[RecordSet]:
    return adapter.normalize(reading.content)


def _kind(records: RecordSet) -> str:
    return records.kind


def _no_issues(*_: Any) -> tuple[Issue, ...]:
    return ()


def _as_is(issue: Issue, n: int, count: int) -> Issue:
    return issue


def _no_names(reading: Reading) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Source:
    """One kind of input. Only ``name``, ``read`` and ``identify`` are required; the rest say what
    a transport, the journal, the metrics and the check step need when they differ from the
    defaults (one record set per input, named by :class:`DocumentSource`, answered in JSON).

    ``read(envelope, request)`` parses ``envelope.raw`` safely (bounded, no entities, no network)
    and returns a :class:`Reading`, or a :class:`Verdict` for what it refuses itself; raising
    :class:`gateway.model.outcome.ContentError` is AE with those issues, any other exception AE 207
    (the input is journaled for a replay). ``request`` is what the transport was told beside the
    bytes (the BHXH portal's form fields), None for most. It runs on a pipeline worker.

    ``identify(hook, reading, envelope)`` returns the adapter that owns the reading, or None
    (answered AR with ``unclaimed(reading)``): the built-in sources ask ``hssk_identify`` and
    ``hssk_identify_document``; a plugin's own source may return its own adapter. ``hook`` is the
    plugin manager's hook relay.

    ``normalize(adapter, reading)`` returns the record sets (``many``: several per input, journaled
    as a JSON list, told apart in the idempotency key by ``identity(records)``). ``check_input``
    sees them all (the national rules check each record set through ``hssk_check``: the built-in
    plugins of :mod:`gateway.rules`), and ``locate(issue, n, count)`` says which record set an
    issue is about.

    ``hl7``: inputs are HL7 v2 messages, answered with HL7 ACKs built from their MSH, and passed to
    ``hssk_check`` and ``hssk_render`` as the message. ``noun`` and ``location`` name a whole input
    in error texts ("message", ``MSH^1^9``); ``unread(envelope, request)`` names one the pipeline
    could not read or did not decide (a timeout), and ``names(reading)`` gives the patient names
    it holds, masked in the log when a plugin fails on it.

    ``media_types``, ``route`` (a path segment of the HTTP listener, None: not on HTTP), ``title``
    (what the bytes are: ``XML``) and ``description`` (one input: ``an XML 130 file``) are for the
    HTTP transport; ``split(stream)`` makes a source feedable from a file (``hssk-gateway feed``),
    yielding each record's bytes, each of which is one input named by its content.
    """

    name: str
    read: Callable[[Envelope, DocumentRequest | None], Reading | Verdict]
    identify: Callable[[Any, Reading, Envelope], Adapter | None]
    unclaimed: Callable[[Reading], Issue] = _unclaimed
    normalize: Callable[[Adapter, Reading], RecordSet | Iterable[RecordSet]] = _one_by_one
    many: bool = False
    identity: Callable[[RecordSet], str] = _kind
    check_input: Callable[[tuple[RecordSet, ...]], Iterable[Issue]] = _no_issues
    locate: Callable[[Issue, int, int], Issue] = _as_is
    hl7: bool = False
    noun: str = "record"
    location: str = ""
    unread: Callable[[Envelope, DocumentRequest | None], Hl7Message | DocumentSource | None] | None = None
    names: Callable[[Reading], tuple[str, ...]] = _no_names
    message_types: frozenset[str] = frozenset()
    media_types: tuple[str, ...] = ()
    route: bytes | None = None
    title: str = ""
    description: str = ""
    split: Callable[[BinaryIO], Iterator[bytes]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise SourceError(f"source name {self.name!r} must be lower-case letters, digits and _ (at most 32), "
                              f"beginning with a letter: it is a journal value and a metric label")
        if self.route is not None and (not isinstance(self.route, bytes) or not _ROUTE.fullmatch(self.route)
                                       or self.route in RESERVED_ROUTES):
            raise SourceError(f"source {self.name!r}: route {self.route!r} must be one path segment as bytes "
                              f"(lower-case letters, digits, - and _), not one of "
                              f"{', '.join(sorted(r.decode() for r in RESERVED_ROUTES))}")
        if self.route is not None and not self.media_types:
            raise SourceError(f"source {self.name!r}: a route needs the media types it takes")

    def __repr__(self) -> str:
        return f"Source({self.name!r})"

    def unread_origin(self, envelope: Envelope, request: DocumentRequest | None) -> Hl7Message | DocumentSource | None:
        """The name of an input the pipeline could not read or did not decide: ``unread``'s, or
        one made of its bytes (``<source>|`` and the SHA-256 of its content)."""
        if self.unread is not None:
            return self.unread(envelope, request)
        return DocumentSource.named_by_content(envelope.raw, f"{self.name}|", "", "")


@dataclass
class SourceRegistry:
    """The sources of one plugin manager, by name, and the plugin that registered each (its
    faults are counted under that plugin; the built-in ones under ``core``)."""

    sources: dict[str, Source] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_hook(cls, hook, config: GatewayConfig) -> SourceRegistry:
        """Ask every plugin's ``hssk_sources``. Each implementation is called by itself, as
        pluggy would call it, to know whose source each is; two sources with one name, or two
        routes on one path, stop start-up naming both plugins."""
        registry = cls()
        routes: dict[bytes, str] = {}
        for impl in hook.hssk_sources.get_hookimpls():
            arguments = {"config": config}
            found = impl.function(*(arguments[name] for name in impl.argnames))
            for source in found or ():
                if not isinstance(source, Source):
                    raise SourceError(f"plugin {impl.plugin_name!r}: hssk_sources returned {type(source).__name__}, "
                                      f"not a Source")
                if source.name in registry.sources:
                    raise SourceError(f"source {source.name!r} is registered by plugin {impl.plugin_name!r} and by "
                                      f"plugin {registry.owners[source.name]!r}")
                if source.route is not None and source.route in routes:
                    raise SourceError(f"source {source.name!r} (plugin {impl.plugin_name!r}) takes HTTP route "
                                      f"/{source.route.decode()}, which source {routes[source.route]!r} has")
                registry.sources[source.name] = source
                registry.owners[source.name] = "core" if impl.plugin_name.startswith("core.") else impl.plugin_name
                if source.route is not None:
                    routes[source.route] = source.name
        return registry

    def __getitem__(self, name: str) -> Source:
        return self.sources[name]

    def __contains__(self, name: object) -> bool:
        return name in self.sources

    def __iter__(self) -> Iterator[Source]:
        return iter(sorted(self.sources.values(), key=lambda s: s.name))

    def message_types(self) -> frozenset[str]:
        """Every message type the sources declare: metric label values of their own."""
        return frozenset(t for source in self.sources.values() for t in source.message_types)
