"""A district's population list as an input kind, added by a plugin: the proof that a source kind
needs no change under ``gateway/``. It imports only :mod:`gateway.plugin`, as a third party's
would, and is installed the same ways: registered in-process by the tests, or through the
entry-point group (``population_csv = tests.sources.population_csv``) for the CLI in a
subprocess.

The list is a UTF-8 CSV file whose header names its columns (``MA_CSKCB``, ``SO_CCCD``,
``HO_TEN``, ``NGAY_SINH``, ``GIOI_TINH``, ``MA_THE_BHYT``). ``split`` makes each row one record,
its bytes the header line and the row line, so that a journaled record reads by itself (a replay
needs nothing else) and an identical row fed again is the same record. Each record is one
person, claimed by this plugin; ``POST /population`` takes one record the same way.
"""
from __future__ import annotations

import csv
import io

from gateway.plugin import (
    ContentError,
    DocumentSource,
    Identifier,
    Issue,
    Person,
    PluginDescription,
    Reading,
    RecordSet,
    Source,
    csv_records,
    hookimpl,
)

hssk_contract = "1.0"

NAME = "population_csv"
KIND = "POPULATION"
REQUIRED = ("MA_CSKCB", "SO_CCCD", "HO_TEN", "NGAY_SINH")


def read_row(envelope, request) -> Reading:
    try:
        text = envelope.raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ContentError([Issue(102, f"the record is not UTF-8 (byte {e.start})", "ROW")])
    rows = list(csv.DictReader(io.StringIO(text)))
    if len(rows) != 1:
        raise ContentError([Issue(100, f"a record is a header line and one row, got {len(rows)} rows", "ROW")])
    row = {key.strip(): (value or "").strip() for key, value in rows[0].items() if key}
    missing = [column for column in REQUIRED if not row.get(column)]
    if missing:
        raise ContentError([Issue(101, f"{column}: required", f"ROW^{column}") for column in missing])
    facility = row["MA_CSKCB"]
    return Reading(DocumentSource.named_by_content(envelope.raw, f"POP|{facility}", KIND, facility, records=1), row)


class PopulationAdapter:
    name = NAME

    def normalize(self, row: dict) -> RecordSet:
        family, _, rest = row["HO_TEN"].partition(" ")
        middle, _, given = rest.rpartition(" ")
        identifiers = [Identifier("CCCD", row["SO_CCCD"])]
        if row.get("MA_THE_BHYT"):
            identifiers.append(Identifier("BHYT", row["MA_THE_BHYT"]))
        return RecordSet(kind=KIND, person=Person(tuple(identifiers), family, middle, given, row["NGAY_SINH"],
                                                  row.get("GIOI_TINH", "")))


ADAPTER = PopulationAdapter()


@hookimpl
def hssk_sources():
    return [Source(NAME, read=read_row, identify=lambda hook, reading, envelope: ADAPTER, noun="row",
                   location="ROW", message_types=frozenset({KIND}), media_types=("text/csv",),
                   route=b"population", title="CSV", description="a population list row (a header line and "
                                                                  "one row)", split=csv_records)]


@hookimpl
def hssk_describe():
    return PluginDescription(NAME, "population list rows (CSV): hssk-gateway feed population_csv FILE",
                             message_types=frozenset({KIND}))
