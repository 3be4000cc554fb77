"""``core.identity``: the identifier and code rules of vn-standards §3, for every record set.

Located where the sender wrote the field: an HL7 message's ERR names the field the vendor profile
read the value from (``ZBH^1^4``), else its standard place (``PID^1^3``); an XML 130 file's names
the XML1 field (``XML1^1^SO_CCCD``).
"""
from __future__ import annotations

from gateway.formats.hl7v2 import Hl7Message
from gateway.model.hooks import hookimpl
from gateway.model.outcome import Issue
from gateway.model.records import RecordSet
from gateway.rules.configured import ConfiguredRule
from gateway.rules.validation import hl7_locator, identity_issues, xml1_location


class IdentityRule(ConfiguredRule):
    """CCCD structure (and its century/sex/year digits against NGAY_SINH and GIOI_TINH), BHYT card
    shape, BHXH number, registered facility (MA_DKBD), card validity dates, birth date, sex,
    province code and ICD-10 shape."""

    name = "core.identity"
    claims = ("every record set: CCCD, BHYT card, BHXH number, MA_DKBD, card validity, birth date, sex, province, "
              "ICD-10 shape ([validation])")

    @hookimpl(tryfirst=True)
    def hssk_check(self, message: Hl7Message | None, records: RecordSet) -> tuple[Issue, ...]:
        locate = xml1_location if message is None else hl7_locator(records)
        return identity_issues(records, self.rules, locate)
