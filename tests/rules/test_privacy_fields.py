"""The privacy policy knows every field of the record model (``gateway.rules.privacy.FIELDS``): each
is filtered by a named step of the policy, proved here by planting what the step looks for in that
one field and finding it gone, or is listed with the reason it needs none. A field added to the
model without teaching the policy fails here; at run time the policy refuses a record set that
holds a part it does not know, so a filtered destination never gets it (fail-closed)."""
from __future__ import annotations

import dataclasses
import typing

import pytest

from gateway.model.records import Encounter, Person, RawTable, RecordSet
from gateway.rules.privacy import (
    CODES,
    DRUG,
    FIELDS,
    FILTERED_BY,
    NOT_FILTERED_BECAUSE,
    PROGRAMME,
    RECORDS,
    TABLE,
    TEXT,
    UNMAPPED,
    PrivacyPolicy,
    UnknownPart,
)


def record_types_in(hint) -> set[type]:
    """The record types a field's type can hold: ``X``, ``X | None``, ``tuple[X, ...]``."""
    if dataclasses.is_dataclass(hint):
        return {hint}
    return set().union(*(record_types_in(arg) for arg in typing.get_args(hint)))


def model_fields(root: type = RecordSet) -> list[tuple[type, str, object]]:
    """Every ``(record type, field name, type)`` a record set can hold, nested records included."""
    seen: set[type] = set()
    pending, found = [root], []
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            found.append((cls, f.name, hints[f.name]))
            pending += sorted(record_types_in(hints[f.name]), key=lambda t: t.__name__)
    return found


def test_every_field_of_the_record_model_is_filtered_by_a_step_or_says_why_not():
    fields = model_fields()

    untaught = [f"{cls.__name__}.{name}" for cls, name, _ in fields if name not in FIELDS.get(cls, {})]
    stale = [f"{cls.__name__}.{name}" for cls, names in FIELDS.items() for name in names
             if (cls, name) not in {(c, n) for c, n, _ in fields}]
    unnamed = {step for names in FIELDS.values() for step in names.values()} - {*FILTERED_BY, *NOT_FILTERED_BECAUSE}

    assert untaught == [], "teach gateway/rules/privacy.py FIELDS these fields"
    assert stale == [] and unnamed == set()


def test_the_policy_walks_into_exactly_the_fields_that_hold_records():
    walked = {(cls, name) for cls, name, hint in model_fields() if record_types_in(hint)}

    assert walked == {(cls, name) for cls, names in FIELDS.items() for name, step in names.items() if step == RECORDS}


#: Per step, what it looks for (planted in one field) and the text that must not survive it.
PLANTED = {TEXT: ("nhiễm HIV", "HIV"), CODES: ("B20.7", "B20"), DRUG: ("Efavirenz 600mg", "Efavirenz"),
           PROGRAMME: ("1.9", "1.9"), UNMAPPED: ((("GHI_CHU_KHAC", "nhiễm HIV"),), "HIV")}
PLANTED_IN_TABLES = {"kind": ("XML6", "XML6"),
                     "content": ("<CHI_TIEU><GHI_CHU>nhiễm HIV</GHI_CHU></CHI_TIEU>", "HIV")}
FILTERED_FIELDS = [(cls, name, hint) for cls, name, hint in model_fields()
                   if FIELDS.get(cls, {}).get(name, RECORDS) != RECORDS and FIELDS[cls][name] in FILTERED_BY]


def planted(cls: type, name: str, hint) -> tuple[RecordSet, str]:
    """A record set holding one ``cls`` record whose field ``name`` holds what its step looks for."""
    step = FIELDS[cls][name]
    value, tell = PLANTED_IN_TABLES[name] if step == TABLE else PLANTED[step]
    if typing.get_origin(hint) is tuple and isinstance(value, str):
        value = (value,)
    base = RawTable("XML7", "<CHI_TIEU/>") if cls is RawTable else cls(
        **{f.name: "x" for f in dataclasses.fields(cls)
           if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING})
    record = dataclasses.replace(base, **{name: value})
    [holder] = [n for c, n, h in model_fields() if c is RecordSet and cls in record_types_in(h)]
    holds_many = typing.get_origin(typing.get_type_hints(RecordSet)[holder]) is tuple
    return RecordSet(kind="ORU^R01", **{holder: (record,) if holds_many else record}), tell


@pytest.mark.parametrize("cls, name, hint", FILTERED_FIELDS,
                         ids=[f"{cls.__name__}.{name}" for cls, name, _ in FILTERED_FIELDS])
def test_each_field_a_step_filters_loses_what_the_step_looks_for(cls, name, hint):
    records, tell = planted(cls, name, hint)
    assert tell in records.json_text

    filtered, removed = PrivacyPolicy().filter(records)

    assert tell not in filtered.json_text
    assert removed != ()


@dataclasses.dataclass(frozen=True)
class VendorEncounter(Encounter):
    """A plugin's own record type, with a field the policy was never taught."""

    hiv_status: str = ""


def test_a_field_the_policy_does_not_know_refuses_the_record_set_naming_the_field():
    records = RecordSet(kind="ADT^A04", encounter=VendorEncounter(ma_lk="79001.1", hiv_status="dương tính"))

    with pytest.raises(UnknownPart) as refused:
        PrivacyPolicy().filter(records)

    assert refused.value.reason == "privacy_unknown"
    assert "VendorEncounter.hiv_status" in refused.value.text and "dương tính" not in refused.value.text


def test_an_unknown_field_left_empty_says_nothing_and_passes():
    records = RecordSet(kind="ADT^A04", encounter=VendorEncounter(ma_lk="79001.1", note="theo dõi HIV"))

    filtered, _ = PrivacyPolicy().filter(records)

    assert filtered.encounter.note == "" and filtered.encounter.ma_lk == "79001.1"


def test_an_object_that_is_no_record_refuses_the_record_set():
    records = RecordSet(kind="ADT^A04", person=Person(related=({"relationship": "mother", "hiv": "+"},)))

    with pytest.raises(UnknownPart) as refused:
        PrivacyPolicy().filter(records)

    assert "dict" in refused.value.text
