"""HL7 MSH-18 character-set names (table 0211 and what Vietnamese HIS products actually send)
mapped to Python codecs.

MSH-18 is the sender's text, and Python's codec registry holds much more than character sets:
``undefined`` raises on every byte, ``idna`` and ``punycode`` are name transforms, and a name
with a NUL byte makes ``codecs.lookup`` itself raise ``ValueError``. So a name is looked up only
when it is shaped like a charset name, and its codec is used only when it is on
:data:`TEXT_CODECS`; any other name is unknown, which the pipeline answers with AE 102.
"""
from __future__ import annotations

import codecs
import re

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


#: The codecs a message may be written in: every one table 0211 names, and the single- and
#: double-byte character sets of the region that Python's registry knows under other names.
TEXT_CODECS = frozenset({
    "ascii", "utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "latin-1",
    *(f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16)),
    *(f"cp{n}" for n in range(1250, 1259)), "cp874", "tis-620", "koi8-r", "koi8-u",
    "gb18030", "gbk", "gb2312", "big5", "big5hkscs", "euc_kr", "cp949", "euc_jp", "shift_jis", "cp932", "cp950",
})
#: How MIME (an HTTP Content-Type) names each of :data:`TEXT_CODECS`: the IANA charset registry's
#: name, lower case; for Microsoft's Korean and Traditional Chinese code pages, which IANA does not
#: register, the WHATWG label whose decoder reads them (``euc-kr``, ``big5``).
MIME_NAMES = {
    "ascii": "us-ascii", "utf-8": "utf-8", "latin-1": "iso-8859-1",
    "utf-16": "utf-16", "utf-16-le": "utf-16le", "utf-16-be": "utf-16be",
    "utf-32": "utf-32", "utf-32-le": "utf-32le", "utf-32-be": "utf-32be",
    **{f"iso8859-{n}": f"iso-8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16)},
    **{f"cp{n}": f"windows-{n}" for n in (*range(1250, 1259), 874)},
    "tis-620": "tis-620", "koi8-r": "koi8-r", "koi8-u": "koi8-u",
    "gb18030": "gb18030", "gbk": "gbk", "gb2312": "gb2312", "big5": "big5", "big5hkscs": "big5-hkscs",
    "euc_kr": "euc-kr", "cp949": "euc-kr", "euc_jp": "euc-jp", "shift_jis": "shift_jis", "cp932": "windows-31j",
    "cp950": "big5",
}
#: What a charset name may look like before the codec registry is asked about it.
_CHARSET_NAME = re.compile(r"[A-Z0-9][A-Z0-9 _./:+-]{0,39}")


def codec_for(name: str) -> str | None:
    """The Python codec for an MSH-18 value, or None when it names no character set the gateway
    decodes (neither table 0211 nor a codec on :data:`TEXT_CODECS`).

    >>> codec_for("8859/1"), codec_for("UNICODE UTF-8"), codec_for("windows-1258")
    ('latin-1', 'utf-8', 'cp1258')
    >>> codec_for("undefined"), codec_for("idna"), codec_for("UTF-8\\x00")
    (None, None, None)
    """
    key = name.strip().upper()
    if key in _TABLE_0211:
        return _TABLE_0211[key]
    if not _CHARSET_NAME.fullmatch(key):
        return None
    try:
        codec = codecs.lookup(key).name
    except LookupError:
        return None
    if codec == "iso8859-1":
        codec = "latin-1"
    return codec if codec in TEXT_CODECS else None


def mime_name(name: str) -> str:
    """The charset parameter an HTTP reply written in ``name`` (an MSH-18 value) carries: clients
    look the IANA name up, and Python's codec names (``cp1258``, ``latin-1``) are not all
    registered ones. UTF-8, what the gateway writes when ``name`` is no charset it knows, otherwise.

    >>> mime_name("WINDOWS-1258"), mime_name("8859/1"), mime_name("UNICODE UTF-8"), mime_name("")
    ('windows-1258', 'iso-8859-1', 'utf-8', 'utf-8')
    """
    return MIME_NAMES[codec_for(name) or "utf-8"]
