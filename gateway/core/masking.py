"""Masking of patient identifiers in logs and error texts (CCCD, BHYT card, BHXH number, names)."""
from __future__ import annotations

import re

#: An identifier-shaped token (up to two capitals, a digit, 7+ more capitals or digits), a BHYT
#: card in any case (two letters and 13 digits), or any run of 9+ digits (CMND, BHXH number,
#: CCCD), wherever it sits: a remote system's error text glues them to labels (``CCCD0790…``,
#: ``key=SO_CCCD_0790…``) as often as it writes them alone.
_LONG_IDENTIFIER = re.compile(r"\b[A-Z]{0,2}\d[A-Z0-9]{7,}\b|[A-Za-z]{2}\d{13}|\d{9,}")


def mask_identifier(value: str) -> str:
    """Keep enough to recognise an identifier, never enough to reuse it.

    >>> mask_identifier("079085000123"), mask_identifier("GD4790000012345"), mask_identifier("123")
    ('0790*****123', 'GD47********345', '***')
    """
    if len(value) <= 6:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 7) + value[-3:]


def mask_name(value: str) -> str:
    """``Nguyễn Văn Thử`` → ``N***** V** T**``: initials only, word lengths kept for debugging."""
    return " ".join(word[:1] + "*" * (len(word) - 1) for word in value.split())


def mask_text(text: str) -> str:
    """Mask every identifier-shaped token in free text such as an exception message or a remote
    store's error body. Names cannot be told from other words in free text, so a text that may
    hold one (a remote system's answer) is not logged at all; see ``dispatch``.

    >>> mask_text("patient key=SO_CCCD_079085000123 card gd4790000012345 ok")
    'patient key=SO_CCCD_0790*****123 card gd47********345 ok'
    """
    return _LONG_IDENTIFIER.sub(lambda m: mask_identifier(m.group(0)), text)
