"""What each ``maKetQua`` of the BHXH card check (``KQNhanLichSuKCB2024``) means for us.

The portal's answer codes (vn-standards §2.5, from the API annex of CV 1923/BHXH-CNTT) fall into
a few kinds, and the kind, not the code, decides what the gateway does with a record that carries
the card (:mod:`plugins.bhxh.card_enrichment`) and what ``hssk-gateway bhxh card`` says:

- ``usable`` — the card may be used as it is (000–002);
- ``new_card`` — usable, and a new card was issued (003 old card expired, 004 old card still
  valid): the new code is added to the person's identifiers in the person index;
- ``unusable`` — the card itself cannot be used (expired, revoked, reduced, a child without a
  card): the record is answered AE at the card field, or accepted with a warning (config);
- ``wrong_data`` — the card or the name or birth date sent does not match BHXH's data (050–070):
  the sender must fix the field named in the ERR;
- ``staff`` — our lookup staff's CCCD is not registered, or the name does not match it (054, 055):
  the gateway's configuration is wrong, not the patient's data, so the card counts as not checked;
- ``request`` — the portal could not read our request (205): a bug or a config error, not checked;
- ``server`` — the portal failed (100, 101, 500): not checked, retried later, and counted by the
  circuit breaker.

A code the table does not know is ``unknown`` and, like ``server``, means "not checked".
"""
from __future__ import annotations

from dataclasses import dataclass

USABLE, NEW_CARD, UNUSABLE, WRONG_DATA, STAFF, REQUEST, SERVER, UNKNOWN = (
    "usable", "new_card", "unusable", "wrong_data", "staff", "request", "server", "unknown")
#: Kinds whose answer says something about the card (cached, judged); the others mean "not checked".
DEFINITIVE = frozenset({USABLE, NEW_CARD, UNUSABLE, WRONG_DATA})
#: The field a kind's ERR points at: the card, the name, the birth date.
CARD, NAME, BIRTH = "card", "name", "birth"


@dataclass(frozen=True)
class CardCode:
    """One ``maKetQua``: its meaning (the annex's wording, in English), its kind, which field an
    ERR should name, and what a person should do about it."""

    code: str
    meaning: str
    kind: str
    field: str
    action: str


def _codes(*rows: tuple[str, str, str, str, str]) -> dict[str, CardCode]:
    return {row[0]: CardCode(*row) for row in rows}


CODES = _codes(
    ("000", "card valid", USABLE, CARD, "use the card"),
    ("001", "card managed by BHXH Bộ Quốc phòng", USABLE, CARD, "use the card"),
    ("002", "card managed by BHXH Bộ Công an; check the card and the ID", USABLE, CARD,
     "use the card after checking it against the patient's ID"),
    ("003", "old card expired, a new card was issued", NEW_CARD, CARD,
     "use the new card; the person index now knows it"),
    ("004", "old card still valid, a new card was issued", NEW_CARD, CARD,
     "use the new card; the person index now knows it"),
    ("010", "card expired", UNUSABLE, CARD, "the patient pays or shows a valid card"),
    ("050", "no card information", WRONG_DATA, CARD, "check the card number with the patient"),
    ("051", "wrong card code", WRONG_DATA, CARD, "check the card number with the patient"),
    ("052", "wrong province code (characters 4–5 of the card)", WRONG_DATA, CARD,
     "check the card number with the patient"),
    ("053", "wrong benefit code (character 3 of the card)", WRONG_DATA, CARD,
     "check the card number with the patient"),
    ("054", "the lookup staff's CCCD is not registered", STAFF, CARD,
     "register the staff member with BHXH (CV 1923) or fix plugins.bhxh.card_check.staff_cccd"),
    ("055", "the lookup staff's name does not match the CCCD", STAFF, CARD,
     "fix plugins.bhxh.card_check.staff_name to the name registered for staff_cccd"),
    ("060", "wrong name", WRONG_DATA, NAME, "check the patient's name against the card"),
    ("061", "wrong name (the first character matches)", WRONG_DATA, NAME,
     "check the patient's name against the card (diacritics, spelling)"),
    ("070", "wrong date of birth", WRONG_DATA, BIRTH, "check the patient's birth date against the card"),
    ("100", "error reading the card data", SERVER, CARD, "not checked; asked again later"),
    ("101", "server error", SERVER, CARD, "not checked; asked again later"),
    ("110", "card revoked", UNUSABLE, CARD, "the patient pays or shows a valid card"),
    ("120", "card reduced (báo giảm)", UNUSABLE, CARD, "the patient pays or shows a valid card"),
    ("121", "card reduced: moved out of the province", UNUSABLE, CARD,
     "the patient pays or shows the card of the new province"),
    ("122", "card reduced: moved within the province", UNUSABLE, CARD,
     "the patient pays or shows the card of the new unit"),
    ("123", "card reduced: re-added at the same unit", UNUSABLE, CARD,
     "ask BHXH for the re-issued card; the old one cannot be used"),
    ("124", "card reduced: stopped participating", UNUSABLE, CARD, "the patient pays"),
    ("130", "child without a card", UNUSABLE, CARD,
     "look the child up with the portal's temporary-card search (Tra cứu thẻ tạm)"),
    ("205", "parameter format error", REQUEST, CARD, "not checked; the gateway's request was malformed (log)"),
    ("401", "authentication error", REQUEST, CARD, "not checked; check plugins.bhxh.card_check.username/password"),
    ("500", "server error", SERVER, CARD, "not checked; asked again later"),
)


def card_code(code: str) -> CardCode:
    """The table's entry for ``code``, or an ``unknown`` one saying so."""
    return CODES.get(code) or CardCode(code, "a code the gateway does not know", UNKNOWN, CARD,
                                       "not checked; report the code to the gateway's maintainers")
