"""Immunization list exports (CSV) as a source: ``immunization_csv``.

A commune's or district's export is a UTF-8 CSV file, one dose per row, whose header names its
columns. Which column holds what is a setting (``[plugins.immunization.csv_columns]``, field =
header; :data:`CSV_COLUMNS` are the defaults, our reading of the NIIS export). ``split`` makes
each row one record, its bytes the header line and the row line, so a journaled record reads by
itself (a replay needs nothing else) and is named by its content: the same row fed again is a
repeat, whatever file it came in. A row becomes one record set: the person (NIIS id, CCCD, card,
a newborn's placeholder name with the mother's CCCD) and one immunization. ``POST
/immunization-list`` takes one record the same way.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping

from gateway.plugin import (ContentError, DocumentSource, Identifier, Immunization, Issue, Person, Reading, RecordSet,
                            RelatedPerson, Source, csv_records)
from plugins.immunization.vxu import COMPLETION, VxuSettings, newborn

SOURCE = "immunization_csv"
KIND = "IMMUNIZATION_LIST"
#: field → the column header that holds it (our reading of the NIIS export; a site maps its own).
CSV_COLUMNS = {
    "facility": "MA_CSKCB", "niis_id": "MA_DOI_TUONG", "name": "HO_TEN", "birth_date": "NGAY_SINH",
    "sex": "GIOI_TINH", "cccd": "SO_CCCD", "card": "MA_THE_BHYT", "mother_name": "HO_TEN_ME", "mother_cccd": "CCCD_ME",
    "vaccine": "MA_VACXIN", "vaccine_name": "TEN_VACXIN", "dose_number": "MUI_THU", "administered_at": "NGAY_TIEM",
    "lot": "SO_LO", "expires_on": "HAN_DUNG", "manufacturer": "NHA_SAN_XUAT", "status": "TRANG_THAI",
    "refusal_reason": "LY_DO_KHONG_TIEM", "record_id": "MA_MUI_TIEM",
}
REQUIRED = ("facility", "name", "birth_date", "vaccine", "administered_at")
_SEX = {"1": "1", "2": "2", "3": "3", "nam": "1", "nữ": "2", "nu": "2", "m": "1", "f": "2"}
_DAY_MONTH_YEAR = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_DIGITS = re.compile(r"\d{8}(\d{4})?")


def list_source(columns: Mapping[str, str], settings: Callable[[], VxuSettings]) -> Source:
    """The source, reading rows by ``columns`` (field → header); ``settings`` gives the plugin's
    VXU settings (placeholders, national codes) at the time a row is normalized."""
    adapter = ListAdapter(settings)

    def read(envelope, request) -> Reading:
        return _read(envelope.raw, columns)

    return Source(SOURCE, read=read, identify=lambda hook, reading, envelope: adapter, noun="row", location="ROW",
                  message_types=frozenset({KIND}), media_types=("text/csv",), route=b"immunization-list",
                  title="CSV", description="an immunization list row (a header line and one row)",
                  split=csv_records)


def _read(raw: bytes, columns: Mapping[str, str]) -> Reading:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ContentError([Issue(102, f"the record is not UTF-8 (byte {e.start})", "ROW")])
    rows = list(csv.DictReader(io.StringIO(text)))
    if len(rows) != 1:
        raise ContentError([Issue(100, f"a record is a header line and one row, got {len(rows)} rows", "ROW")])
    cells = {(key or "").strip(): (value or "").strip() for key, value in rows[0].items()}
    row = {field: cells.get(header, "") for field, header in columns.items()}
    missing = [field for field in REQUIRED if not row[field]]
    if missing:
        raise ContentError([Issue(101, f"{columns[f]}: required ({f})", f"ROW^{columns[f]}") for f in missing])
    return Reading(DocumentSource.named_by_content(raw, f"CSV|{row['facility']}", KIND, row["facility"], records=1),
                   (row, dict(columns)))


class ListAdapter:
    """Owns every row of the list source: a person and one dose."""

    name = "immunization"

    def __init__(self, settings: Callable[[], VxuSettings]) -> None:
        self._settings = settings

    def normalize(self, content: tuple[dict, dict]) -> RecordSet:
        row, columns = content
        issues = []
        birth_date, administered = _date(row["birth_date"]), _date(row["administered_at"])
        expires = _date(row["expires_on"]) if row["expires_on"] else ""
        for field, value in (("birth_date", birth_date), ("administered_at", administered), ("expires_on", expires)):
            if value is None:
                issues.append(Issue(102, f"{columns[field]}: {row[field][:20]!r} is no date (YYYYMMDD or DD/MM/YYYY)",
                                    f"ROW^{columns[field]}"))
        status = row["status"].upper()
        if status and status not in COMPLETION:
            issues.append(Issue(103, f"{columns['status']}: {status[:10]!r} is not one of CP, PA, RE, NA",
                                f"ROW^{columns['status']}"))
        if status == "RE" and not row["refusal_reason"]:
            issues.append(Issue(101, f"{columns['refusal_reason']}: a refused dose names the reason",
                                f"ROW^{columns['refusal_reason']}"))
        if issues:
            raise ContentError(issues)
        settings = self._settings()
        identifiers = [Identifier(system, row[field], assigner) for system, field, assigner in
                       (("CCCD", "cccd", ""), ("BHYT", "card", ""), ("MR", "niis_id", "NIIS")) if row[field]]
        mother = (RelatedPerson("mother", *_name(row["mother_name"]),
                                identifiers=(Identifier("CCCD", row["mother_cccd"]),)) if row["mother_cccd"] else None)
        person = Person(tuple(identifiers), *_name(row["name"]), birth_date=birth_date,
                        sex=_SEX.get(row["sex"].lower(), row["sex"]), related=(mother,) if mother else ())
        dose = Immunization(
            vaccine_code=row["vaccine"], vaccine_system="CVX", vaccine_name=row["vaccine_name"],
            administered_at=administered, lot_number=row["lot"], expires_on=expires, manufacturer=row["manufacturer"],
            facility=row["facility"], completion=status, action="A", record_id=row["record_id"],
            refusal_reason=row["refusal_reason"], dose_number=row["dose_number"],
            national_code=settings.national_codes.get(row["vaccine"], ""))
        return RecordSet(kind=KIND, person=newborn(person, settings.placeholders), immunizations=(dose,))


def _name(full: str) -> tuple[str, str, str]:
    """HO_TEN as family, middle and given: the first word, the last, and what is between."""
    family, _, rest = full.partition(" ")
    middle, _, given = rest.rpartition(" ")
    return family, middle, given


def _date(value: str) -> str | None:
    """``YYYYMMDD[HHMM]`` as it is, ``DD/MM/YYYY`` turned into ``YYYYMMDD``; None for anything else."""
    value = value.strip()
    if _DIGITS.fullmatch(value):
        return value
    match = _DAY_MONTH_YEAR.fullmatch(value)
    if match:
        day, month, year = match.groups()
        return f"{year}{int(month):02d}{int(day):02d}"
    return None
