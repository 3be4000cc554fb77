"""Small readers over :class:`~gateway.formats.hl7v2.Hl7Message` shared by the HL7 mappers.

A vendor profile names fields as paths (``IN1-36``, ``PID-11.9``, ``ZBH-3``), so the reader of a
path lives here, next to the two conversions every mapper needs: text (HL7 escapes decoded, and
Unicode in NFC so a Windows-1258 sender's combining tone marks compare equal to the precomposed
letters every other sender uses) and HL7 timestamps cut to the XML 130 lengths.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from gateway.formats.hl7v2 import Hl7Message

_PATH = re.compile(r"([A-Z][A-Z0-9]{2})-(\d{1,3})(?:\.(\d{1,2}))?")
_TIMESTAMP = re.compile(r"\d+")


@dataclass(frozen=True)
class FieldPath:
    """``SEG-n`` or ``SEG-n.c``: field ``n`` of segment ``SEG``, component ``c`` (1 when omitted)."""

    segment: str
    field: int
    component: int = 1

    def __str__(self) -> str:
        return f"{self.segment}-{self.field}" + (f".{self.component}" if self.component != 1 else "")


def parse_path(text: str) -> FieldPath:
    """``"IN1-36"`` → ``FieldPath("IN1", 36)``; raises ValueError naming the expected shape."""
    match = _PATH.fullmatch(text.strip().upper())
    if match is None or int(match.group(2)) < 1 or (match.group(1) == "MSH" and int(match.group(2)) < 3):
        raise ValueError(f"{text!r} is not a field path like 'PID-19', 'IN1-36' or 'PID-11.9'")
    return FieldPath(match.group(1), int(match.group(2)), int(match.group(3) or 1))


def text(message: Hl7Message, value: str) -> str:
    """One component's text: escapes decoded, NFC, surrounding blanks dropped. Most components
    are plain ASCII (codes, dates, numbers), which neither step changes, so they skip both."""
    if not value:
        return ""
    if value.isascii() and message.encoding_characters[2] not in value:
        return value.strip()
    return unicodedata.normalize("NFC", message.unescape(value)).strip()


def component(message: Hl7Message, value: str, n: int) -> str:
    """Component ``n`` (1-based) of a field's first repetition, as text."""
    first = value.split(message.encoding_characters[1], 1)[0]
    parts = message.components(first)
    return text(message, parts[n - 1]) if n - 1 < len(parts) else ""


def read_path(message: Hl7Message, path: FieldPath) -> list[str]:
    """The path's text in every occurrence of its segment, in message order (empty ones kept, so
    the n-th value belongs to the n-th segment, e.g. the n-th IN1)."""
    if path.segment == "MSH":
        return [component(message, message.msh(path.field), path.component)]
    return [component(message, fields[path.field] if path.field < len(fields) else "", path.component)
            for fields in message.segments(path.segment)]


def first_value(message: Hl7Message, path: FieldPath) -> str:
    return next((v for v in read_path(message, path) if v), "")


def hl7_time(value: str, length: int = 12) -> str:
    """An HL7 TS/DTM cut to at most ``length`` digits, time zone and fractions dropped:
    ``20250315083000+0700`` → ``202503150830``. The precision the sender gave is kept (``1985``
    stays ``1985``), because NGAY_SINH distinguishes a known year from a known day."""
    match = _TIMESTAMP.match(value.strip())
    return match.group(0)[:length] if match else ""


def segments_in_order(message: Hl7Message, names: frozenset[str]) -> list[tuple[str, list[str]]]:
    """``(name, fields)`` of the named segments in message order, for groups (OBR then its OBX)
    that :meth:`Hl7Message.segments` keeps apart."""
    return [(fields[0], fields) for fields in message.all_segments() if fields[0] in names]
