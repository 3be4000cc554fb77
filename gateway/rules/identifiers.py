"""Shape rules for Vietnamese person and facility identifiers (vn-standards.md §3).

Each check returns a list of :class:`Issue` — empty when the value passes — so HL7 adapters
(location ``PID^1^3^1``) and the XML 130 validation (location ``XML1^1^SO_CCCD``) report the
same rule the same way. Texts name the field and the rule and show identifiers masked.

What the reference marks uncertain is a parameter of :class:`IdentityRules`, with the default
stated beside it:

- the province list: CCCD prefixes and cards keep the 63 pre-07/2025 codes [C]; the 34 merged
  codes from 07/2025 rest on one secondary source [S], so they are offered, not the default;
- BHYT beneficiary groups: the letters-to-benefit mapping is [S] and changes (CN, LH from
  2026), so by default any two capital letters pass;
- whether a bare 10-digit BHXH number is accepted where a card is expected (the lookup API
  takes it; XML 130 still carries 15 characters), off by default;
- the facility-code pattern: 5 characters is [P]; that they are 5 digits with a province
  prefix is our reading of the codes seen, so the pattern is configurable.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.model.masking import mask_identifier
from gateway.model.outcome import Issue

#: Province codes before 07/2025 (63 provinces; GSO codes, QĐ 124/2004). [C]
PROVINCE_CODES_2024 = frozenset(
    "01 02 04 06 08 10 11 12 14 15 17 19 20 22 24 25 26 27 30 31 33 34 35 36 37 "
    "38 40 42 44 45 46 48 49 51 52 54 56 58 60 62 64 66 67 68 "
    "70 72 74 75 77 79 80 82 83 84 86 87 89 91 92 93 94 95 96".split())
#: Province codes from 01/07/2025 (34 units, each keeping its lead province's code). [S]
PROVINCE_CODES_2025 = frozenset(
    "01 04 08 10 11 12 14 19 20 22 25 27 31 33 37 38 40 42 45 46 48 51 56 64 66 68 72 75 79 86 87 89 92 96".split())

_CARD_GROUP = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True)
class IdentityRules:
    """The configurable parts of the identifier rules (see the module docstring)."""

    provinces: frozenset[str] = PROVINCE_CODES_2024
    check_cccd_birth: bool = True  # CCCD century/sex digit and year digits against NGAY_SINH, GIOI_TINH
    bhyt_groups: frozenset[str] | None = None  # None: any two capital letters
    accept_bhxh_number_as_card: bool = False
    facility_pattern: str = r"\d{5}"
    check_facility_province: bool = False  # MA_CSKCB's first two digits must be a province code


DEFAULT_IDENTITY_RULES = IdentityRules()


def _required(value: str, field: str, what: str, location: str, required: bool) -> list[Issue]:
    return [Issue(101, f"{field}: {what} is required", location)] if required and not value else []


def check_cccd(value: str, *, field: str = "SO_CCCD", location: str = "", birth_date: str = "", sex: str = "",
               required: bool = False, rules: IdentityRules = DEFAULT_IDENTITY_RULES) -> list[Issue]:
    """The 12-digit personal identification number ``AAA B CC DDDDDD``: birth-registration
    province ``0`` + code, century/sex digit, last two digits of the birth year. There is no
    published check digit, so structure is all that can be checked."""
    if not value:
        return _required(value, field, "CCCD", location, required)
    shown = mask_identifier(value)
    if not value.isdigit() or len(value) != 12:
        return [Issue(102, f"{field}: CCCD {shown} has {len(value)} characters, expected 12 digits", location)]
    issues = []
    if value[0] != "0" or value[1:3] not in rules.provinces:
        issues.append(Issue(103, f"{field}: CCCD {shown} starts with {value[:3]}, "
                                 "not 0 + a province code of the birth registration", location))
    year = birth_date[:4]
    if rules.check_cccd_birth and year.isdigit():
        century = int(year) // 100 - 19
        digit = int(value[3])
        if 0 <= century <= 2:
            if digit // 2 != century:
                issues.append(Issue(102, f"{field}: CCCD {shown} century/sex digit {digit} does not match birth "
                                         f"year {year} (expected {2 * century} or {2 * century + 1})", location))
            elif sex in ("1", "2") and digit % 2 != int(sex) - 1:
                issues.append(Issue(102, f"{field}: CCCD {shown} century/sex digit {digit} does not match "
                                         f"GIOI_TINH {sex} (expected {2 * century + int(sex) - 1})", location))
        if value[4:6] != year[2:]:
            issues.append(Issue(102, f"{field}: CCCD {shown} year digits (5–6) do not match birth year {year}",
                                location))
    return issues


def check_bhxh_number(value: str, *, field: str = "MA_BHXH", location: str = "",
                      required: bool = False) -> list[Issue]:
    """The 10-digit social-insurance number: the health identifier of QĐ 2153/2020 and the last
    ten characters of every BHYT card."""
    if not value:
        return _required(value, field, "BHXH number", location, required)
    if not value.isdigit() or len(value) != 10:
        return [Issue(102, f"{field}: BHXH number {mask_identifier(value)} has {len(value)} characters, "
                           "expected 10 digits", location)]
    return []


def check_bhyt_card(value: str, *, field: str = "MA_THE_BHYT", location: str = "", required: bool = False,
                    rules: IdentityRules = DEFAULT_IDENTITY_RULES) -> list[Issue]:
    """The 15-character card code: 2-letter beneficiary group, benefit level 1–5, 2-digit
    province, 10-digit BHXH number (QĐ 1351/QĐ-BHXH; BHXH error codes 052/053)."""
    if not value:
        return _required(value, field, "BHYT card", location, required)
    shown = mask_identifier(value)
    if rules.accept_bhxh_number_as_card and len(value) == 10:
        return check_bhxh_number(value, field=field, location=location)
    if len(value) != 15:
        return [Issue(102, f"{field}: BHYT card {shown} has {len(value)} characters, expected 15", location)]
    group, benefit, province, number = value[:2], value[2], value[3:5], value[5:]
    if not _CARD_GROUP.fullmatch(group):
        return [Issue(102, f"{field}: BHYT card {shown} must start with two capital letters (beneficiary group)",
                      location)]
    issues = []
    if rules.bhyt_groups is not None and group not in rules.bhyt_groups:
        issues.append(Issue(103, f"{field}: BHYT card {shown} beneficiary group {group} is not a known group",
                            location))
    if benefit not in "12345":
        issues.append(Issue(103, f"{field}: BHYT card {shown} benefit level (character 3) must be 1–5", location))
    if not province.isdigit() or province not in rules.provinces:
        issues.append(Issue(103, f"{field}: BHYT card {shown} province (characters 4–5) is not a province code",
                            location))
    if not number.isdigit():
        issues.append(Issue(102, f"{field}: BHYT card {shown} must end with the 10-digit BHXH number", location))
    return issues


def check_facility_code(value: str, *, field: str = "MA_CSKCB", location: str = "", required: bool = False,
                        rules: IdentityRules = DEFAULT_IDENTITY_RULES) -> list[Issue]:
    """A 5-character facility code (MA_CSKCB, MA_DKBD, MA_NOI_DI, MA_NOI_DEN). Facility codes are
    not personal data, so the value is shown as sent."""
    if not value:
        return _required(value, field, "facility code", location, required)
    if len(value) != 5:
        return [Issue(102, f"{field}: facility code {value!r} has {len(value)} characters, expected 5", location)]
    if not re.fullmatch(rules.facility_pattern, value):
        return [Issue(102, f"{field}: facility code {value!r} does not match {rules.facility_pattern}", location)]
    if rules.check_facility_province and value[:2] not in rules.provinces:
        return [Issue(103, f"{field}: facility code {value!r} does not start with a province code", location)]
    return []


def check_province_code(value: str, *, field: str = "MATINH_CU_TRU", location: str = "",
                        rules: IdentityRules = DEFAULT_IDENTITY_RULES) -> list[Issue]:
    """MATINH_CU_TRU: the last two digits of the province admin code."""
    if value and value not in rules.provinces:
        return [Issue(103, f"{field}: {value!r} is not a province code", location)]
    return []
