"""HL7 v2 segments → canonical records, for any plugin to reuse with its vendor profile.

A profile says where a vendor puts things (which PID-3 identifier type means CCCD, and so on);
the functions here do the splitting, unescaping and mapping once for everyone.
"""
from __future__ import annotations

from collections.abc import Mapping

from gateway.core.model import Encounter, Identifier, Observation, Person
from gateway.formats.hl7v2 import Hl7Message

#: PID-3.5 identifier type code → canonical identifier system. Vendors override in their profile.
DEFAULT_IDENTIFIER_TYPES: Mapping[str, str] = {
    "NI": "CCCD", "NNVNM": "CCCD", "CCCD": "CCCD",
    "HC": "BHYT", "BHYT": "BHYT",
    "SS": "BHXH", "BHXH": "BHXH",
    "MR": "MR", "PI": "MR",
    "PPN": "PASSPORT",
}

_SEX = {"M": "1", "F": "2"}


def person_from_pid(message: Hl7Message, identifier_types: Mapping[str, str] = DEFAULT_IDENTIFIER_TYPES) -> Person | None:
    if not message.segments("PID"):
        return None
    identifiers = []
    for repetition in message.repetitions(message.field("PID", 3)):
        parts = message.components(repetition)
        value = message.unescape(parts[0])
        if not value:
            continue
        type_code = parts[4] if len(parts) > 4 else ""
        system = identifier_types.get(type_code.upper(), type_code.upper() or "OTHER")
        identifiers.append(Identifier(system, value, message.unescape(parts[3]) if len(parts) > 3 else ""))
    name = message.components(message.repetitions(message.field("PID", 5))[0]) if message.field("PID", 5) else []
    family = message.unescape(name[0]) if name else ""
    given_and_middle = message.unescape(name[1]) if len(name) > 1 else ""
    middle, _, given = given_and_middle.rpartition(" ")
    extra_middle = message.unescape(name[2]) if len(name) > 2 else ""
    return Person(
        identifiers=tuple(identifiers),
        family=family,
        middle=" ".join(p for p in (middle, extra_middle) if p),
        given=given,
        birth_date=message.field("PID", 7)[:12],
        sex=_SEX.get(message.field("PID", 8).upper(), "3" if message.field("PID", 8) else ""),
    )


def encounter_from_pv1(message: Hl7Message) -> Encounter | None:
    if not message.segments("PV1"):
        return None
    visit = message.components(message.field("PV1", 19))
    location = message.components(message.field("PV1", 3))
    return Encounter(
        ma_lk=message.unescape(visit[0]),
        facility=(visit[3] if len(visit) > 3 else "") or (location[3] if len(location) > 3 else "")
        or message.sending_facility,
        encounter_class=message.field("PV1", 2),
        admitted_at=message.field("PV1", 44)[:12],
        discharged_at=message.field("PV1", 45)[:12],
    )


def observations_from_obx(message: Hl7Message) -> tuple[Observation, ...]:
    found = []
    for obx in message.segments("OBX"):
        def get(n: int) -> str:
            return obx[n] if n < len(obx) else ""
        code = message.components(get(3))
        found.append(Observation(
            code=message.unescape(code[0]),
            name=message.unescape(code[1]) if len(code) > 1 else "",
            value=message.unescape(get(5)),
            unit=message.unescape(message.components(get(6))[0]),
            reference_range=message.unescape(get(7)),
            abnormal_flag=get(8),
            observed_at=get(14)[:12],
        ))
    return tuple(found)
