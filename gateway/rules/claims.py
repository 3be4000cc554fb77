"""``core.claims`` and ``core.totals``: the rules of an XML 130 episode as a claim (vn-standards
§1.5). They look at record sets read from an XML 130 file (claim or check-in) and at nothing
else: an HL7 message is no claim (an ADT's totals from a vendor's Z-segment have no lines to add
up to), and neither is a row of a population list or another source a plugin adds."""
from __future__ import annotations

from gateway.formats.hl7v2 import Hl7Message
from gateway.formats.xml130_reader import CHECK_IN_KIND, CLAIM_KIND
from gateway.model.hooks import hookimpl
from gateway.model.outcome import Issue
from gateway.model.records import RecordSet
from gateway.rules.configured import ConfiguredRule
from gateway.rules.validation import check_totals, claim_issues


class ClaimRules(ConfiguredRule):
    """Required XML1 fields, the visit's facility codes and times, the detail lines' times, and
    MA_LK linking every table to XML1."""

    name = "core.claims"
    claims = "XML 130 episodes: required XML1 fields, facility codes, times, MA_LK linkage of every table"

    @hookimpl(tryfirst=True)
    def hssk_check(self, message: Hl7Message | None, records: RecordSet) -> tuple[Issue, ...]:
        return claim_issues(records, self.rules) if is_xml130_episode(records) else ()


class TotalsRule(ConfiguredRule):
    """T_TONGCHI_BV and T_TONGCHI_BH against the XML2 + XML3 lines, T_BHTT = T_TONGCHI_BH − T_BNCCT,
    within ``validation.totals_tolerance``."""

    name = "core.totals"
    claims = "XML 130 episodes: XML1 totals against the XML2 + XML3 lines (validation.totals_tolerance)"

    @hookimpl(tryfirst=True)
    def hssk_check(self, message: Hl7Message | None, records: RecordSet) -> tuple[Issue, ...]:
        return tuple(check_totals(records, tolerance=self.rules.totals_tolerance)) if is_xml130_episode(records) else ()


def is_xml130_episode(records: RecordSet) -> bool:
    return records.kind in (CLAIM_KIND, CHECK_IN_KIND)
