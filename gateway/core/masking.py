"""Masking of patient identifiers in logs and error texts (CCCD, BHYT card, BHXH number, names)."""
from __future__ import annotations

import re

_LONG_IDENTIFIER = re.compile(r"\b[A-Z]{0,2}\d[A-Z0-9]{7,}\b")


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
    """Mask every identifier-shaped token (8+ characters starting with up to two letters then a
    digit) in free text such as an exception message."""
    return _LONG_IDENTIFIER.sub(lambda m: mask_identifier(m.group(0)), text)
