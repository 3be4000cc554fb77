"""The canonical record model every adapter normalises into.

Plain frozen dataclasses; each field names the XML 130 / HL7 v2 field it maps to, so a reader can
go from a Vietnamese claim file to this model without a mapping table. The model grows with the
formats issue (XML 130 tables 1–15); this is the part the core pipeline needs today.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Identifier:
    """A person identifier. ``system`` is one of ``CCCD`` (12-digit personal id, SO_CCCD / PID-3
    type NI), ``BHYT`` (health-insurance card, MA_THE_BHYT / IN1-36), ``BHXH`` (10-digit social
    insurance number), ``MR`` (facility medical record number), ``PASSPORT``."""

    system: str
    value: str
    assigner: str = ""


@dataclass(frozen=True)
class Person:
    """HO_TEN split as family / middle / given (PID-5.1 / 5.3 / 5.2), diacritics kept as sent."""

    identifiers: tuple[Identifier, ...] = ()
    family: str = ""
    middle: str = ""
    given: str = ""
    birth_date: str = ""  # NGAY_SINH, yyyymmdd[HHMM]; precision is the length that was sent
    sex: str = ""  # GIOI_TINH: 1 male, 2 female, 3 unknown

    def identifier(self, system: str) -> str:
        return next((i.value for i in self.identifiers if i.system == system), "")


@dataclass(frozen=True)
class Encounter:
    """One episode of care. ``ma_lk`` (MA_LK) links every XML 130 table of the episode."""

    ma_lk: str = ""
    facility: str = ""  # MA_CSKCB, 5 characters
    encounter_class: str = ""  # MA_LOAI_KCB / PV1-2
    admitted_at: str = ""  # NGAY_VAO, yyyymmddHHMM
    discharged_at: str = ""  # NGAY_RA


@dataclass(frozen=True)
class Observation:
    """A lab or clinical result (XML4 / ORU OBX)."""

    code: str
    name: str = ""
    value: str = ""
    unit: str = ""
    reference_range: str = ""
    abnormal_flag: str = ""
    observed_at: str = ""


@dataclass(frozen=True)
class RecordSet:
    """What one inbound message says, in canonical form."""

    kind: str
    person: Person | None = None
    encounter: Encounter | None = None
    observations: tuple[Observation, ...] = ()

    def to_dict(self) -> dict:
        return as_plain(self)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def as_plain(value):
    """``dataclasses.asdict`` without its deep copies: several times faster on the hot path,
    and the model holds only str, tuples and nested records, so nothing needs copying."""
    cls = type(value)
    if cls is str or value is None:
        return value
    if cls is tuple:
        return [as_plain(v) for v in value]
    names = _FIELD_NAMES.get(cls)
    if names is None:
        if not dataclasses.is_dataclass(cls):
            return value
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return {name: as_plain(getattr(value, name)) for name in names}
