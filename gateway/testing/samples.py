"""Sample messages as a sender would send them, and the edits tests make to them.

Samples are kept as text files with one segment per line (``\\n``, ``\\r\\n`` or ``\\r``), since
that is how people read and review them; :func:`read_sample` gives the bytes as they go on the
wire, segments ending in CR. The edits work on bytes, so a sample in Windows-1258 stays in it.

An XML 130 claim file carries each table base64-encoded in a ``NOIDUNGFILE``; :func:`edit_xml130`
lets a test change the tables' XML as if it were plain text.
"""
from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

from gateway.formats.charsets import codec_for

HL7_SUFFIXES = (".hl7",)
XML_SUFFIXES = (".xml",)
_NOIDUNGFILE = re.compile(rb"(<NOIDUNGFILE>\s*)([A-Za-z0-9+/=\s]+?)(\s*</NOIDUNGFILE>)")


def is_hl7(path: Path) -> bool:
    return path.suffix.lower() in HL7_SUFFIXES


def is_xml130(path: Path) -> bool:
    return path.suffix.lower() in XML_SUFFIXES


def read_sample(path: Path | str) -> bytes:
    """An HL7 sample with its segments ending in CR, as MLLP carries them; any other file as stored."""
    raw = Path(path).read_bytes()
    if is_hl7(Path(path)):
        return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r") + b"\r"
    return raw


def hl7_segments(raw: bytes) -> list[bytes]:
    return [s for s in raw.split(b"\r") if s]


def join_segments(segments: list[bytes]) -> bytes:
    return b"\r".join(segments) + b"\r"


def with_msh_field(raw: bytes, n: int, value: str) -> bytes:
    """``raw`` with MSH-n (n >= 3) set to ``value``; every other byte as it was."""
    segments = hl7_segments(raw)
    separator = segments[0][3:4]
    fields = segments[0].split(separator)
    fields += [b""] * (n - len(fields))
    fields[n - 1] = value.encode("ascii")  # fields[0] is "MSH", fields[1] is MSH-2: MSH-n is fields[n - 1]
    return join_segments([separator.join(fields)] + segments[1:])


def without_segments(raw: bytes, name: str) -> bytes:
    """``raw`` without any ``name`` segment (``PID``)."""
    return join_segments([s for s in hl7_segments(raw) if s.split(raw[3:4], 1)[0] != name.encode("ascii")])


def with_segment_after(raw: bytes, name: str, segment: str, charset: str = "UNICODE UTF-8") -> bytes:
    """``raw`` with ``segment`` added after its last ``name`` segment (at the end when it has none),
    encoded in ``charset`` as MSH-18 names it (``Hl7Message.charset``). Windows-1258 writes most
    Vietnamese letters as a base letter and a combining tone mark; write such a segment in ASCII."""
    segments = hl7_segments(raw)
    separator = raw[3:4]
    last = max((i for i, s in enumerate(segments) if s.split(separator, 1)[0] == name.encode("ascii")),
               default=len(segments) - 1)
    return join_segments(segments[:last + 1] + [segment.encode(codec_for(charset) or "utf-8")] + segments[last + 1:])


def edit_xml130(raw: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    """``raw`` with ``edit`` applied to the file itself and to each base64-encoded table in it
    (re-encoded afterwards), so ``lambda xml: xml.replace(b"079185004321", b"07918500432")``
    breaks a CCCD wherever the file carries it."""
    def table(match: re.Match) -> bytes:
        content = base64.b64decode(b"".join(match.group(2).split()))
        return match.group(1) + base64.b64encode(edit(content)) + match.group(3)

    return _NOIDUNGFILE.sub(table, edit(raw))


def xml130_tables(raw: bytes) -> list[bytes]:
    """The file and each table it carries, decoded: what :func:`edit_xml130` lets a test edit."""
    found: list[bytes] = []

    def keep(content: bytes) -> bytes:
        found.append(content)
        return content

    edit_xml130(raw, keep)
    return found
