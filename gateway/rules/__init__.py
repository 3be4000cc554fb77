"""The national rules, the layer above the formats: the shapes of identifiers and codes
(:mod:`~gateway.rules.identifiers`), the values of records bound for XML 130
(:mod:`~gateway.rules.validation`), the privacy policy (:mod:`~gateway.rules.privacy`), and the
built-in plugins that apply them through the same ``hssk_check`` hook every plugin implements,
under names an operator sees in ``hssk-gateway plugins`` and cannot disable. They import the
model, the formats and the configuration, never the machinery that calls them.

Call order, for every record set whoever made it (each is ``tryfirst`` and registered after every
installed plugin, and pluggy calls the plugin registered last first, so they run before any
plugin's check and, registered in reverse, in this order):

1. ``core.identity`` (:mod:`gateway.rules.identity`): CCCD, BHYT card, BHXH number, registered
   facility, birth date, sex, province, ICD-10 shape — for HL7 messages and XML 130 files;
2. ``core.claims`` (:mod:`gateway.rules.claims`): required XML1 fields, the visit's codes and
   times, the lines' times, MA_LK linkage — XML 130 files only;
3. ``core.totals`` (:mod:`gateway.rules.claims`): XML1 totals against the lines — XML 130 only;

then the installed plugins' checks. The privacy policy is no hook: it is a step of routing, per
destination (see :mod:`gateway.rules.privacy` and the README's "call order").
"""
from __future__ import annotations

from gateway.rules.claims import ClaimRules, TotalsRule
from gateway.rules.identity import IdentityRule


def built_in_rules() -> tuple[IdentityRule, ClaimRules, TotalsRule]:
    """Fresh rule plugins, in call order: each plugin manager configures its own from its config
    (``[validation]``), so two gateways in one process (tests, replay) never share settings."""
    return IdentityRule(), ClaimRules(), TotalsRule()
