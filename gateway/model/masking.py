"""Masking of patient data in everything an operator reads: logs, error texts, CLI and admin views.

- **Identifiers** (CCCD of 12 digits or any other length, CMND, BHYT card, BHXH number, record
  numbers) are masked by their shape, wherever they sit in a text: ``0790*****123``.
- **Names** keep the family name (the first word) and shorten every other word to its initial:
  ``Nguyễn Văn An`` → ``Nguyễn V. A.``, enough to tell rows apart without naming anyone. A
  one-word name becomes its initial alone (``An`` → ``A.``): a lone word may be the given name.
- **Names inside free text** (a record store's answer, a plugin's exception) cannot be told from
  other words by their shape. So a text is masked against the names the gateway knows it may
  quote: those of the record set it is about. Every word of those names but the family name
  becomes its initial wherever it stands as a word that begins with a capital, diacritics and
  case aside, so ``NGUYEN VAN AN`` in a store's answer becomes ``NGUYEN V. A.``. A name the
  gateway does not know (another person's), or one written all in lower case, is not recognised.

This runs only where a text is logged or shown, never in deciding or storing a message; on every
HTTP request only for its access log line (about 3 µs).
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable

#: An identifier-shaped token (up to two capitals, a digit, 7+ more capitals or digits), a BHYT
#: card in any case (two letters and 13 digits), or any run of 9+ digits (CMND, BHXH number,
#: CCCD), wherever it sits: a remote system's error text glues them to labels (``CCCD0790…``,
#: ``key=SO_CCCD_0790…``) as often as it writes them alone. Each starts with 8 letters or digits
#: in a row; the lookahead says so first, which makes a text without one (an access log line) 4×
#: quicker to pass.
_LONG_IDENTIFIER = re.compile(r"(?=[A-Za-z0-9]{8})(?:\b[A-Z]{0,2}\d[A-Z0-9]{7,}\b|[A-Za-z]{2}\d{13}|\d{9,})")
#: A word for name matching: letters only, so ``HO_TEN=NGUYEN_VAN_AN`` is three words after the label.
_WORD = re.compile(r"[^\W\d_]+")
#: Keys of the canonical record JSON (``gateway.model.records``) that hold a name.
_NAME_PARTS = ("family", "middle", "given")
_FULL_NAMES = ("escort_name",)
#: XML 130 tags that hold a name (HO_TEN, HO_TEN_CHA, HOTEN_NGUOI_HT…) or an identifier.
_NAME_TAG = re.compile(r"HO_?TEN")
_IDENTIFIER_TAG = re.compile(r"CCCD|BHYT|BHXH|MA_THE|MA_BN|DIEN_THOAI|SO_DINH_DANH")
#: One XML element's text, CDATA or not: ``<HO_TEN><![CDATA[Nguyễn Văn An]]></HO_TEN>``.
_ELEMENT = re.compile(r"(<(\w+)>(?:<!\[CDATA\[)?)([^<\]]*)")


def mask_identifier(value: str) -> str:
    """Keep enough to recognise an identifier, never enough to reuse it.

    >>> mask_identifier("079085000123"), mask_identifier("07908500012"), mask_identifier("GD4790000012345")
    ('0790*****123', '0790****012', 'GD47********345')
    >>> mask_identifier("123")
    '***'
    """
    if len(value) <= 6:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 7) + value[-3:]


def _initial(word: str) -> str:
    return word[:1] + "."


def mask_name(value: str) -> str:
    """The family name and initials: enough for an operator to tell two rows apart.

    >>> mask_name("Nguyễn Văn An"), mask_name("Trần Thị Bích Ngọc"), mask_name("An"), mask_name("")
    ('Nguyễn V. A.', 'Trần T. B. N.', 'A.', '')
    """
    words = value.split()
    if len(words) <= 1:
        return " ".join(_initial(word) for word in words)
    return " ".join([words[0]] + [_initial(word) for word in words[1:]])


def _fold(word: str) -> str:
    """Without diacritics and case, so ``NGUYEN VAN AN`` written back by a remote system is the
    ``Nguyễn Văn An`` of the record."""
    decomposed = unicodedata.normalize("NFD", word.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _masked_words(names: Iterable[str]) -> frozenset[str]:
    """The words of ``names`` that :func:`mask_name` shortens, folded."""
    words: set[str] = set()
    for name in names:
        parts = name.split()
        words.update(_fold(word) for word in (parts if len(parts) == 1 else parts[1:]))
    return frozenset(words)


def _mask_names(text: str, words: frozenset[str]) -> str:
    if not words:
        return text
    return _WORD.sub(lambda m: _initial(m.group(0)) if m.group(0)[0].isupper() and _fold(m.group(0)) in words
                     else m.group(0), unicodedata.normalize("NFC", text))


def mask_text(text: str, names: Iterable[str] = ()) -> str:
    """Mask every identifier-shaped token in free text such as an exception message or a remote
    store's error body, and every word of ``names`` (the names the text may quote, family name
    first) but the family name, as :func:`mask_name` shows them.

    >>> mask_text("patient key=SO_CCCD_079085000123 card gd4790000012345 ok")
    'patient key=SO_CCCD_0790*****123 card gd47********345 ok'
    >>> mask_text("HO_TEN=NGUYEN VAN AN (Nguyễn Văn An), an old card", ["Nguyễn Văn An"])
    'HO_TEN=NGUYEN V. A. (Nguyễn V. A.), an old card'
    """
    return _mask_names(_LONG_IDENTIFIER.sub(lambda m: mask_identifier(m.group(0)), text), _masked_words(names))


def names_in_records(records: object) -> tuple[str, ...]:
    """Every name a journaled record set (its JSON, or a list of them for an XML 130 file)
    carries, family name first: the patient, related people (mother, father, guardian), the
    referral's escort. These are the names a text about the record set may quote."""
    found: list[str] = []

    def visit(value: object) -> None:
        if isinstance(value, dict):
            parts = [value[key] for key in _NAME_PARTS if isinstance(value.get(key), str)]
            if parts:
                found.append(" ".join(parts))
            found.extend(value[key] for key in _FULL_NAMES if isinstance(value.get(key), str))
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    visit(records)
    return tuple(dict.fromkeys(found))


def _identifiers_in(records: object) -> list[str]:
    """The identifier values and phone numbers of a record set's JSON, long enough (8+
    characters) to be looked for in its texts: a short record number would match anything."""
    if isinstance(records, dict):
        own = [records["value"]] if "system" in records and isinstance(records.get("value"), str) else []
        own += [records["phone"]] if isinstance(records.get("phone"), str) else []
        return own + [found for item in records.values() for found in _identifiers_in(item)]
    if isinstance(records, list):
        return [found for item in records for found in _identifiers_in(item)]
    return []


def _by_tag(tag: str) -> Callable[[str], str] | None:
    """How an XML 130 field of this tag is shown: as a name, as an identifier, or as text (None)."""
    if _NAME_TAG.search(tag):
        return mask_name
    if _IDENTIFIER_TAG.search(tag):
        return mask_identifier
    return None


def mask_records(records: object) -> object:
    """A journaled record set (its JSON, or a list of them) as an operator is shown it: names as
    :func:`mask_name` shows them, identifiers and phone numbers masked, unmapped fields and the
    verbatim XML 130 tables by their tags, and the record set's own names and identifiers in
    every other text. Dates, codes and amounts are left as they are, so identifier shapes are
    not looked for (``messages show --raw`` has the message as received).

    >>> mask_records({"person": {"identifiers": [{"system": "CCCD", "value": "079085000123"}],
    ...                          "family": "Nguyễn", "middle": "Văn", "given": "An", "phone": "0903123456"},
    ...               "encounter": {"admitted_at": "202407010815", "note": "Văn An lost card 079085000123",
    ...                             "extra": [["HO_TEN_CHA", "Nguyễn Văn Bình"]]}})  # doctest: +NORMALIZE_WHITESPACE
    {'person': {'identifiers': [{'system': 'CCCD', 'value': '0790*****123'}], 'family': 'Nguyễn',
                'middle': 'V.', 'given': 'A.', 'phone': '0903***456'},
     'encounter': {'admitted_at': '202407010815', 'note': 'V. A. lost card 0790*****123',
                   'extra': [['HO_TEN_CHA', 'Nguyễn V. B.']]}}
    """
    words = _masked_words(names_in_records(records))
    known = sorted({value for value in _identifiers_in(records) if len(value) >= 8}, key=len, reverse=True)
    identifier = re.compile("|".join(map(re.escape, known))) if known else None

    def text(value: str) -> str:
        value = _mask_names(value, words)
        return identifier.sub(lambda m: mask_identifier(m.group(0)), value) if identifier else value

    def element(m: re.Match) -> str:
        by_tag = _by_tag(m.group(2))
        return m.group(1) + (by_tag(m.group(3)) if by_tag else m.group(3))

    def field(record: dict, key: str, value: str) -> str:
        if key in ("middle", "given") or (key == "family" and not (record.get("middle") or record.get("given"))):
            return " ".join(_initial(word) for word in value.split())
        if key == "family":
            return value
        if key in _FULL_NAMES:
            return mask_name(value)
        if key == "phone" or (key == "value" and "system" in record):
            return mask_identifier(value)
        if key == "content" and "kind" in record:
            return text(_ELEMENT.sub(element, value))
        return text(value)

    def masked(value: object, key: str = "") -> object:
        if isinstance(value, dict):
            return {k: field(value, k, v) if isinstance(v, str) else masked(v, k) for k, v in value.items()}
        if isinstance(value, list) and key == "extra":
            return [[tag, (_by_tag(tag) or text)(content)] for tag, content in value]
        if isinstance(value, list):
            return [masked(item) for item in value]
        return value

    return masked(records)
