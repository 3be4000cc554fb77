"""XML 130 / 4750 claim files: read them into canonical records and write them back.

The one import for callers; the work is split by concern:
``xml_safety`` (hardened lxml parsing), ``xml130_tables`` (field ↔ model mapping, annex order),
``xml130_reader`` and ``xml130_writer``. Value rules (CCCD, BHYT, totals, MA_LK links) live in
``gateway.rules.validation`` so HL7 adapters share them.

Mapped: the envelope (MACSKCB, NGAYLAP, HOSO/FILEHOSO), XML1, XML2, XML3, XML4, XML5, XML7 (its
parents and temporary card on the person), XML13, XML14 and the check-in file, in their 130/4750
forms and the 4210 forms of XML1–5. XML6, XML8–12 and XML15 are kept verbatim (``RawTable``);
CHUKYDONVI is neither verified nor produced.
"""
from __future__ import annotations

from gateway.formats.xml130_reader import CHECK_IN_KIND, CLAIM_KIND, LegacyRules, read_xml130
from gateway.formats.xml130_tables import CHECK_IN_DOCUMENT, CLAIM_DOCUMENT, DEFAULT_DECIMALS, ClaimFile
from gateway.formats.xml130_writer import write_xml130, xml1_values
from gateway.formats.xml_safety import DEFAULT_MAX_BYTES, UnsafeXmlError, XmlTooLargeError, parse_untrusted_xml

__all__ = [
    "CHECK_IN_DOCUMENT", "CHECK_IN_KIND", "CLAIM_DOCUMENT", "CLAIM_KIND", "DEFAULT_DECIMALS", "DEFAULT_MAX_BYTES",
    "ClaimFile", "LegacyRules", "UnsafeXmlError", "XmlTooLargeError", "parse_untrusted_xml", "read_xml130",
    "write_xml130", "xml1_values",
]
