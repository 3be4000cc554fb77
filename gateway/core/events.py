"""Events: outbox work that no inbound message caused, queued by a plugin (a person merge the
national index reports, a correction an operator asks for).

An event is journaled like a message so operators see and replay it: a row with transport
``event``, sender ``EVENT|<source>`` (the plugin), the plugin's own key as its control id and the
event's kind as its message type; its bytes are the event as JSON (:func:`event_bytes`). It is
decided by the pipeline like a message (on a worker or a pipeline child, within
``pipeline.timeout_seconds``): its record set is routed, privacy-filtered and rendered for each
destination that takes its kind and source, and the journal row and its outbox rows are
committed in one transaction by the journal writer. ``hssk_check`` does not see it: the checks
are of what senders send (``message`` None there is an XML 130 episode), and the plugin that
queues an event answers for its records. A renderer that fails makes it AE 207, journaled, for
a replay once the plugin is fixed.

The key makes it idempotent: the outbox rows' idempotency keys derive from it (as from a
message's control id), and an event queued again with the same key and content is a repeat that
queues nothing (the same key with other content is AE 205). Its rows are ordered behind the
earlier rows of the person its record set names, as a message's are.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.core.documents import DocumentSource
from gateway.model.outcome import Issue
from gateway.model.records import RecordSet

#: The transport an event's envelope and journal row name.
EVENT_TRANSPORT = "event"
#: The journal sender prefix of events: ``EVENT|person_links``.
EVENT_SENDER_PREFIX = "EVENT|"


@dataclass(frozen=True)
class Event:
    """One piece of outbox work a plugin queues.

    ``source`` is the plugin's name (the journal's sender and plugin, and what a destination's
    ``plugins`` routes by); ``key`` is the plugin's stable id for this event (the journal's
    control id, at most 200 characters): give the same key for the same event, however often it
    is queued. ``kind`` is the message type destinations route by (``ADT^A40``); ``records`` the
    record set to deliver; ``facility`` the facility it concerns, if any. ``destinations``, when
    given, are the only destinations it goes to, whatever their routes say: a follow-up to what
    they received already (an identity update for a person they were sent, see
    :class:`gateway.rules.person_index.PersonLink`); names no longer configured are left out.
    Version note: ``destinations`` added in contract 1.1 (issue 17)."""

    source: str
    key: str
    kind: str
    records: RecordSet
    facility: str = ""
    destinations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("source", "key", "kind"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or len(value) > 200 or "\r" in value or "\n" in value:
                raise ValueError(f"an event's {name} is one line of 1 to 200 characters, got {value!r}")
        if not isinstance(self.records, RecordSet):
            raise ValueError(f"an event's records are a RecordSet, got {type(self.records).__name__}")
        if isinstance(self.destinations, str) or not all(isinstance(d, str) for d in self.destinations):
            raise ValueError(f"an event's destinations are destination names, got {self.destinations!r}")
        object.__setattr__(self, "destinations", tuple(self.destinations))


@dataclass(frozen=True)
class QueuedEvent:
    """What became of a queued event: its journal row (``message_id``; None when it was refused
    before the journal, ``ack_code`` AR: queue it again later), the decision (AA: queued; AE:
    a renderer failed, or the key was used for other content, ``issues`` say why, nothing
    queued), and whether it was a repeat of an event already journaled (nothing queued again)."""

    message_id: int | None
    ack_code: str | None
    issues: tuple[Issue, ...] = ()
    duplicate: bool = False


def event_bytes(event: Event) -> bytes:
    """The event as the journal keeps it (and a replay reads it): compact JSON, keys sorted, so
    the same event always has the same bytes and content digest (``destinations`` only when given,
    so events journaled before it existed keep theirs)."""
    data = {"source": event.source, "key": event.key, "kind": event.kind, "facility": event.facility,
            "records": event.records.to_dict()}
    if event.destinations:
        data["destinations"] = list(event.destinations)
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def read_event(raw: bytes) -> Event:
    """The event :func:`event_bytes` wrote."""
    data = json.loads(raw)
    return Event(data["source"], data["key"], data["kind"], from_plain(RecordSet, data["records"]),
                 data.get("facility", ""), tuple(data.get("destinations", ())))


def event_source(event: Event, raw: bytes) -> DocumentSource:
    """The names the event goes by in the journal, the outbox keys and the renderers."""
    return DocumentSource(EVENT_SENDER_PREFIX + event.source, event.key, event.kind, event.facility,
                          hashlib.sha256(raw).hexdigest(), records=1)


def from_plain(cls: Any, value: Any) -> Any:
    """The inverse of :func:`gateway.model.records.as_plain`: a record (or a field of one) from its
    JSON form, by the field types the model declares."""
    if value is None:
        return None
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        return from_plain(next(a for a in typing.get_args(cls) if a is not type(None)), value)
    if origin is tuple:
        args = typing.get_args(cls)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], item) for item in value)
        return tuple(from_plain(arg, item) for arg, item in zip(args, value))
    if cls is Decimal:
        return Decimal(value)
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        found = {}
        for f in dataclasses.fields(cls):
            if f.name in value:
                found[f.name] = from_plain(hints[f.name], value[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                found[f.name] = _empty(hints[f.name])
        return cls(**found)
    return value


def _empty(cls: Any) -> Any:
    """What ``as_plain`` left out of a field without a default: it was empty (``""``, ``()`` or None)."""
    if cls is str:
        return ""
    return () if typing.get_origin(cls) is tuple else None
