"""Population and card lists: rows read from CSV or XML, checked, and made persons.

A list gives, per resident, what the BHXH card lookup returns (vn-standards §2.5): ``maSoBHXH``
(the 10-digit BHXH number, the list's key), ``hoTen``, ``ngaySinh`` (dd/MM/yyyy, or the year
alone), ``gioiTinh`` (Nam / Nữ), ``diaChi``, ``maThe`` (the 15-character card), ``gtTheTu`` and
``gtTheDen`` (its validity, dd/MM/yyyy), ``maDKBD`` (the registered facility, 5 characters),
``CCCD`` (12 digits), plus the residence codes the lists carry: ``maTinh`` (2 digits),
``maHuyen`` (3) and ``maXa`` (5) (QĐ 124/2004, vn-standards §3.4). Which CSV column, or which
child element of an XML record, holds each is ``[plugins.bhxh.population_columns]`` (field =
header); the defaults are the field names themselves.

Both readers stream: CSV a batch of lines at a time (a quoted field may hold a line end), with
the byte offset after each batch so an import resumes there; XML with lxml's ``iterparse``
(entities never resolved, no DTD, no network), each record cleared once read, resumed by record
number. A row that breaks a rule is a :class:`Problem` naming its row and field, never the
identifier's value.
"""
from __future__ import annotations

import calendar
import codecs
import csv
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

from lxml import etree

from gateway.plugin import (ERROR, Address, ConfigError, DocumentSource, Envelope, Identifier, Issue, Person, Reading,
                            RecordSet, Source, Verdict)

#: The fields of a list row, in the order the row digest covers them.
FIELDS = ("maSoBHXH", "hoTen", "ngaySinh", "gioiTinh", "diaChi", "maThe", "gtTheTu", "gtTheDen", "maDKBD", "CCCD",
          "maTinh", "maHuyen", "maXa")
REQUIRED = ("maSoBHXH", "hoTen", "ngaySinh")
#: The kind (message type) list persons are routed and journaled as, and the source name.
KIND = "BHXH_POPULATION"
SOURCE = "bhxh_population"

_BHXH, _NAME, _BIRTH, _SEX, _ADDRESS, _CARD, _FROM, _TO, _DKBD, _CCCD, _PROVINCE, _DISTRICT, _COMMUNE = range(13)
_SEXES = {"nam": "1", "nữ": "2", "nu": "2", "1": "1", "2": "2", "3": "3", "m": "1", "f": "2", "": ""}
_DMY = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_YMD = re.compile(r"\d{8}")
_YEAR = re.compile(r"\d{4}")
_CARD_SHAPE = re.compile(r"[A-Z]{2}[1-5]\d{12}")
_TEN_DIGITS = re.compile(r"\d{10}")
_TWELVE_DIGITS = re.compile(r"\d{12}")
_CODE = re.compile(r"\d{1,5}")
_FACILITY = re.compile(r"[0-9A-Z]{5}")
_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True)
class PopulationSettings:
    """``[plugins.bhxh]``'s population keys: ``population_columns`` (field = CSV header or XML
    child tag) and ``population_xml_record`` (the XML element of one resident; empty: the parent
    of the first ``maSoBHXH`` element)."""

    columns: Mapping[str, str]
    xml_record: str = ""


def population_settings(table: Mapping[str, Any], section: str) -> PopulationSettings:
    columns = table.get("population_columns", {})
    unknown = sorted(set(columns) - set(FIELDS)) if isinstance(columns, Mapping) else []
    if not isinstance(columns, Mapping) or unknown or not all(isinstance(v, str) and v for v in columns.values()):
        raise ConfigError(f"{section}.population_columns",
                          f"a table of field = column header, fields among {', '.join(FIELDS)}"
                          + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    record = table.get("population_xml_record", "")
    if not isinstance(record, str):
        raise ConfigError(f"{section}.population_xml_record", "the XML element name of one resident, a string")
    return PopulationSettings({**{f: f for f in FIELDS}, **columns}, record)


@dataclass(frozen=True)
class Problem:
    """A row that is not imported: its number (1 = the first resident), the field and the rule."""

    row: int
    field: str
    text: str


class Resident(NamedTuple):
    """A row read and checked: its BHXH number (as an integer, the row digests' key), the digest
    of what it says, and its fields as checked (in :data:`FIELDS` order). A plain tuple, since a
    reader process hands it over pickled; :func:`person_of` makes its person."""

    row: int
    bhxh: int
    digest: int
    fields: tuple[str, ...]

    @property
    def said(self) -> str:
        """The row's fields, a tab between them (no checked field holds one): what the journal
        keeps of it, and what :func:`batch_source` reads back."""
        return "\t".join(self.fields)


@dataclass(frozen=True)
class Batch:
    """Rows read, as field tuples in :data:`FIELDS` order (None for a row that could not even be
    read, with its problem), and where the next batch begins: ``rows`` read so far and the byte
    ``offset`` (CSV; 0 for XML, resumed by row)."""

    first: int
    values: list[tuple[str, ...] | Problem]
    rows: int
    offset: int


def read_rows(path: str, file_format: str, settings: PopulationSettings, size: int, *, rows: int = 0,
              offset: int = 0) -> Iterator[Batch]:
    """The list's rows, ``size`` at a time, from row ``rows`` (at byte ``offset`` for CSV)."""
    if file_format == "xml":
        return _xml_rows(path, settings, size, rows)
    return _csv_rows(path, settings, size, rows, offset)


class ListError(Exception):
    """The list as a whole cannot be read (no header, a required column missing, not XML)."""


def _csv_rows(path: str, settings: PopulationSettings, size: int, rows: int, offset: int) -> Iterator[Batch]:
    with open(path, "rb") as stream:
        head = stream.readline()
        try:
            header = next(csv.reader([head.decode("utf-8").removeprefix("\ufeff")]), [])
        except UnicodeDecodeError:
            raise ListError("the header line is not UTF-8") from None
        header = [h.strip() for h in header]
        missing = [settings.columns[f] for f in REQUIRED if settings.columns[f] not in header]
        if missing:
            raise ListError(f"the header has no column {', '.join(missing)} (found: {', '.join(header)[:300]}; "
                            f"map columns with [plugins.bhxh.population_columns])")
        # Each field's column, in FIELDS order; a field the header lacks reads the empty cell put
        # after the last column.
        width = len(header)
        pick = itemgetter(*(header.index(settings.columns[f]) if settings.columns[f] in header else width
                            for f in FIELDS))
        if offset:
            stream.seek(offset)
        while True:
            lines: list[bytes] = []
            for _ in range(size):
                line = stream.readline()
                if not line:
                    break
                while line.count(b'"') % 2:
                    more = stream.readline()
                    if not more:
                        break
                    line += more
                if line.strip():
                    lines.append(line)
            if not lines:
                return
            first = rows + 1
            values: list[tuple[str, ...] | Problem] = []
            texts: list[str] = []
            numbers: list[int] = []
            for n, line in enumerate(lines, first):
                try:
                    texts.append(line.decode("utf-8"))
                    numbers.append(n)
                    values.append(())
                except UnicodeDecodeError as e:
                    values.append(Problem(n, "-", f"not UTF-8 at byte {e.start}"))
            for n, cells in zip(numbers, csv.reader(texts)):
                if len(cells) != width:  # a short row's missing cells are empty, a long one's extra ignored
                    cells = cells[:width] + [""] * (width - len(cells))
                cells.append("")
                values[n - first] = tuple(c.strip() for c in pick(cells))
            rows += len(lines)
            yield Batch(first, values, rows, stream.tell())


def _xml_rows(path: str, settings: PopulationSettings, size: int, skip: int) -> Iterator[Batch]:
    record = settings.xml_record or _record_tag(path, settings.columns["maSoBHXH"])
    tags = {settings.columns[f]: n for n, f in enumerate(FIELDS)}
    rows, values, first = 0, [], skip + 1
    try:
        for _, element in etree.iterparse(path, events=("end",), tag=record, resolve_entities=False,
                                          load_dtd=False, no_network=True, huge_tree=False):
            rows += 1
            if rows > skip:
                found = [""] * len(FIELDS)
                for child in element:
                    n = tags.get(child.tag)
                    if n is not None:
                        found[n] = (child.text or "").strip()
                values.append(tuple(found))
            element.clear()
            while element.getprevious() is not None:
                del element.getparent()[0]
            if len(values) == size:
                yield Batch(first, values, rows, 0)
                values, first = [], rows + 1
    except etree.XMLSyntaxError as e:
        raise ListError(f"the XML is not well formed after record {rows}: {e}") from None
    if values:
        yield Batch(first, values, rows, 0)


def _record_tag(path: str, bhxh_tag: str) -> str:
    """The element of one resident: the parent of the first ``maSoBHXH`` element."""
    try:
        for _, element in etree.iterparse(path, events=("end",), tag=bhxh_tag, resolve_entities=False,
                                          load_dtd=False, no_network=True):
            parent = element.getparent()
            if parent is not None:
                return parent.tag
    except etree.XMLSyntaxError as e:
        raise ListError(f"the XML is not well formed: {e}") from None
    raise ListError(f"the XML has no element {bhxh_tag} (map it with [plugins.bhxh.population_columns]), "
                    f"or set population_xml_record")


def resident(row: int, values: Sequence[str]) -> Resident | Problem:
    """The row checked and its fields made canonical, or the first rule it breaks."""
    bhxh = values[_BHXH]
    if not _TEN_DIGITS.fullmatch(bhxh):
        return Problem(row, "maSoBHXH", f"{len(bhxh)} characters, expected 10 digits" if bhxh else "missing")
    name = " ".join(values[_NAME].split())
    if not name:
        return Problem(row, "hoTen", "missing")
    birth = _date(values[_BIRTH], year_alone=True)
    if birth is None:
        return Problem(row, "ngaySinh", "missing" if not values[_BIRTH] else
                       "no date (dd/MM/yyyy, yyyymmdd, or the year alone)")
    sex = _SEXES.get(values[_SEX].lower())
    if sex is None:
        return Problem(row, "gioiTinh", "neither Nam, Nữ, 1, 2 nor 3")
    card = values[_CARD].upper()
    if card and not _CARD_SHAPE.fullmatch(card):
        return Problem(row, "maThe", f"{len(card)} characters, expected a 15-character card (2 letters, benefit "
                                     f"1-5, 12 digits)")
    valid_from, valid_to = _date(values[_FROM]), _date(values[_TO])
    if valid_from is None or valid_to is None:
        return Problem(row, "gtTheTu" if valid_from is None else "gtTheDen", "no date (dd/MM/yyyy or yyyymmdd)")
    facility = values[_DKBD].upper()
    if facility and not _FACILITY.fullmatch(facility):
        return Problem(row, "maDKBD", f"{len(facility)} characters, expected 5")
    cccd = values[_CCCD]
    if cccd and not _TWELVE_DIGITS.fullmatch(cccd):
        return Problem(row, "CCCD", f"{len(cccd)} characters, expected 12 digits")
    for n, field, width in ((_PROVINCE, "maTinh", 2), (_DISTRICT, "maHuyen", 3), (_COMMUNE, "maXa", 5)):
        if values[n] and not (_CODE.fullmatch(values[n]) and len(values[n]) <= width):
            return Problem(row, field, f"expected at most {width} digits")
    province = values[_PROVINCE].zfill(2) if values[_PROVINCE] else ""
    district = values[_DISTRICT].zfill(3) if values[_DISTRICT] else ""
    commune = values[_COMMUNE].zfill(5) if values[_COMMUNE] else ""
    address = " ".join(values[_ADDRESS].split())
    fields = (bhxh, name, birth, sex, address, card, valid_from, valid_to, facility, cccd, province, district, commune)
    digest = int.from_bytes(hashlib.blake2b("\x1f".join(fields).encode("utf-8"), digest_size=8).digest(), "big",
                            signed=True)
    return Resident(row, int(bhxh), digest, fields)


def person_of(fields: Sequence[str]) -> Person:
    """The person a checked row names: BHXH number, card (with its validity and MA_DKBD), CCCD,
    the name split as family, middle and given, birth date, sex, address and its codes."""
    bhxh, name, birth, sex, address, card, valid_from, valid_to, facility, cccd, province, district, commune = fields
    identifiers = [Identifier("BHXH", bhxh)]
    if card:
        identifiers.append(Identifier("BHYT", card, valid_from=valid_from, valid_to=valid_to,
                                      registered_facility=facility))
    if cccd:
        identifiers.append(Identifier("CCCD", cccd))
    family, _, rest = name.partition(" ")
    middle, _, given = rest.rpartition(" ")
    return Person(identifiers=tuple(identifiers), family=family, middle=middle, given=given, birth_date=birth,
                  sex=sex, address=Address(address, province, district, commune)
                  if address or province or district or commune else None)


def _date(value: str, year_alone: bool = False) -> str | None:
    """``yyyymmdd`` (or ``yyyy``) of dd/MM/yyyy, yyyymmdd or, where allowed, a year; "" for empty."""
    if not value:
        return None if year_alone else ""
    if len(value) == 10 and value[2] == "/" and value[5] == "/" and value.isascii():
        day, month, year = value[:2], value[3:5], value[6:]
        if day.isdigit() and month.isdigit() and year.isdigit() and _is_day(int(year), int(month), int(day)):
            return year + month + day
    match = _DMY.fullmatch(value)
    if match:
        day, month, year = (int(g) for g in match.groups())
        if day == 0 and month == 0 and year_alone:
            return match.group(3)
        return f"{year:04d}{month:02d}{day:02d}" if _is_day(year, month, day) else None
    if _YMD.fullmatch(value):
        return value if _is_day(int(value[:4]), int(value[4:6]), int(value[6:])) else None
    if year_alone and _YEAR.fullmatch(value):
        return value
    return None


def _is_day(year: int, month: int, day: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= (29 if month == 2 and calendar.isleap(year) else _DAYS[month])


class BatchAdapter:
    """Makes a journaled list batch's persons again (a replay): one record set per row."""

    name = "bhxh"

    def normalize(self, rows: list[tuple[str, ...]]) -> list[RecordSet]:
        return [RecordSet(KIND, person=person_of(fields)) for fields in rows]


def batch_source() -> Source:
    """The source a list batch's journal row names (``bhxh_population``), so that ``hssk-gateway
    messages replay`` can decide it again: its bytes are the batch's checked rows, a line each, so
    the replay has the same name (``LIST|bhxh``, the digest of the bytes) and the same
    idempotency keys (by BHXH number) as the import, and queues nothing twice. It has no route
    and no ``split``: lists come in through ``hssk-gateway bhxh import``."""
    adapter = BatchAdapter()

    def read(envelope: Envelope, request) -> Reading | Verdict:
        rows = [tuple(line.split("\t")) for line in envelope.raw.decode("utf-8").split("\n")]
        origin = DocumentSource.named_by_content(envelope.raw, "LIST|bhxh", KIND, "", records=len(rows))
        if any(len(fields) != len(FIELDS) for fields in rows):
            return Verdict(ERROR, (Issue(102, f"a {SOURCE} batch holds rows of {len(FIELDS)} tab-separated fields",
                                         "ROW"),), origin)
        return Reading(origin, rows)

    return Source(SOURCE, read, lambda hook, reading, envelope: adapter, many=True,
                  identity=lambda records: records.person.identifier("BHXH"), noun="list batch", location="ROW",
                  message_types=frozenset({KIND}))


def file_digest(path: str) -> str:
    """The list's SHA-256, read a block at a time: an import of it resumes whatever its name."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_format(path: str, asked: str | None) -> str:
    """``csv`` or ``xml``: as asked, else by the name, else by the first byte that is not space."""
    if asked:
        return asked
    if path.lower().endswith(".xml"):
        return "xml"
    with open(path, "rb") as stream:
        start = codecs.BOM_UTF8
        head = stream.read(512).removeprefix(start).lstrip()
    return "xml" if head.startswith(b"<") else "csv"
