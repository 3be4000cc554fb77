"""HL7 MSH-18 character-set names (table 0211 and what Vietnamese HIS products actually send)
mapped to Python codecs."""
from __future__ import annotations

import codecs

_TABLE_0211 = {
    "ASCII": "ascii",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "ISO IR6": "ascii",
    "ISO IR100": "latin-1",
    "ISO IR192": "utf-8",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
    "KS X 1001": "euc_kr",
    "CNS 11643-1992": "big5",
    # Not in table 0211, but older Vietnamese sites send these for Windows-1258 (TCVN-compatible).
    "WINDOWS-1258": "cp1258",
    "WINDOWS1258": "cp1258",
    "CP1258": "cp1258",
    "VN-1258": "cp1258",
}


def codec_for(name: str) -> str | None:
    """The Python codec for an MSH-18 value, or None when neither table 0211 nor Python knows it.

    >>> codec_for("8859/1"), codec_for("UNICODE UTF-8"), codec_for("windows-1258")
    ('latin-1', 'utf-8', 'cp1258')
    """
    key = name.strip().upper()
    if key in _TABLE_0211:
        return _TABLE_0211[key]
    try:
        return codecs.lookup(key).name
    except LookupError:
        return None
