"""Identity updates: what the record stores hear when a provisional newborn is named at last.

The person index links a provisional child (registered under the mother's name) with the record
that names it on its own, automatically or after an operator's review, and tells the plugins
(``hssk_identity_linked``). For each link of a provisional person this plugin made, it queues one
event (``ADT^A40``: the child as the index knows it now, with the identifiers the stores knew the
placeholder by as ``previous_identifiers``) for exactly the destinations that received the
provisional child, behind what they received (``Event.destinations``). Each format says it its
own way: the json record set, FHIR's ``Patient.link`` (``replaces``), and an HL7 ADT^A40 with
PID and MRG for a destination of format ``hl7v2``, which this plugin renders itself.
"""
from __future__ import annotations

import dataclasses
import time

from gateway.plugin import (Event, Identifier, Payload, Person, PersonLink, QueuedEvent, RecordSet, escape)

KIND = "ADT^A40"
#: HL7 v2 identifier types (PID-3.5 / MRG-1.5) for the canonical systems.
_CX_TYPES = {"CCCD": "NI", "BHYT": "HC", "BHXH": "SS", "MR": "PI", "PASSPORT": "PPN", "CMND": "NI"}
_SEX = {"1": "M", "2": "F", "3": "U"}


def identity_update(link: PersonLink, plugin: str) -> Event | None:
    """The event for ``link``, or None when it is no business of ``plugin``'s (a provisional
    person another plugin made, a merge without one) or no destination received the person."""
    if link.kind != "identified" or link.created_by != plugin or not link.destinations:
        return None
    person = dataclasses.replace(link.person, previous_identifiers=link.previous_identifiers)
    return Event(plugin, f"identity-link:{link.id}", KIND, RecordSet(kind=KIND, person=person),
                 destinations=link.destinations)


def check_queued(queued: QueuedEvent) -> QueuedEvent:
    """An update refused before the journal (AR: the outbox full, the gateway stopping) fails, so
    the index offers the link again later; one journaled (AA, or AE for an operator to replay) is
    done."""
    if queued.ack_code not in ("AA", "AE"):
        raise RuntimeError(f"the identity update was not queued ({queued.ack_code}): "
                           + "; ".join(i.text for i in queued.issues))
    return queued


def render_a40(records: RecordSet, idempotency_key: str, sending_application: str) -> Payload:
    """An identity update as an HL7 v2.5 ADT^A40: PID the child as known now, MRG-1 what the
    destination knew it by. MSH-10 is the idempotency key, so a resend is recognisable."""
    person = records.person or Person()
    now = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    segments = [
        f"MSH|^~\\&|{sending_application}|HSSK_GW|||{now}||ADT^A40^ADT_A39|{idempotency_key[:20]}|P|2.5"
        f"||||||UNICODE UTF-8",
        f"EVN|A40|{now}",
        "PID|1||" + _cx(person.identifiers) + "||" + _xpn(person) + "||" + person.birth_date + "|"
        + _SEX.get(person.sex, ""),
        "MRG|" + _cx(person.previous_identifiers),
    ]
    return Payload("application/hl7-v2", ("\r".join(segments) + "\r").encode("utf-8"))


def _cx(identifiers: tuple[Identifier, ...]) -> str:
    return "~".join(f"{escape(i.value)}^^^{escape(i.assigner)}^{_CX_TYPES.get(i.system, i.system)}"
                    for i in identifiers)


def _xpn(person: Person) -> str:
    given = " ".join(p for p in (person.middle, person.given) if p)
    return f"{escape(person.family)}^{escape(given)}" if person.family or given else ""
