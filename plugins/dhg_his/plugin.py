"""DHG.Hospital (dhg_his): HL7 v2 feeds claimed by their MSH-3, XML 130 files by facility code.

Made with ``hssk-gateway plugin new dhg_his`` and written against the public plugin surface only
(``gateway.plugin``, contract 1.0), following docs/PLUGINS.md. DHG publishes no HL7 interface
profile (its public documents are the XML 130 tables, vn-standards "Source keys"), so every
default below is our best reading of what its sites send, not a published spec; each one is
overridden by ``[plugins.dhg_his]`` (README.md beside this file).
"""
from __future__ import annotations

from gateway.plugin import Hl7Message, Issue, ProfileDefaults, RecordSet, VendorPlugin, hookimpl

hssk_contract = "1.0"
NAME = "dhg_his"

#: Our reading: MSH-3 ``DHG_HIS`` (``DHG.HOSPITAL`` on older installs); the CCCD, card, BHXH
#: number and record number as PID-3 repeats, typed with the Vietnamese codes DHG's XML tables
#: use (CCCD, BHYT, BHXH, and CMND / HOCHIEU for the older papers); the card's validity in
#: IN1-12/13 with its number in IN1-36; a ZKB segment ("khám bệnh") with the visit's claim
#: summary and the card's registered facility (MA_DKBD), which DHG keeps with the visit.
DEFAULTS = ProfileDefaults(
    sending_applications=("DHG_HIS", "DHG.HOSPITAL"),
    identifier_types={"CMND": "CMND", "HOCHIEU": "PASSPORT"},
    field_map={
        "IN1-36": "MA_THE_BHYT", "IN1-12": "GT_THE_TU", "IN1-13": "GT_THE_DEN",
        "ZKB-1": "MA_LOAI_KCB", "ZKB-2": "MA_DOITUONG_KCB", "ZKB-3": "MA_KHOA", "ZKB-4": "MA_DKBD",
        "ZKB-5": "T_TONGCHI_BV", "ZKB-6": "T_TONGCHI_BH", "ZKB-7": "T_BNCCT", "ZKB-8": "T_BHTT",
    },
)


class DhgHisPlugin(VendorPlugin):
    """The profile's hooks (claim, normalise, describe), and DHG's one rule of its own."""

    @hookimpl
    def hssk_check(self, message: Hl7Message | None, records: RecordSet) -> list[Issue] | None:
        """A visit without its number (PV1-19, MA_LK) cannot become an XML 130 file, so the
        sender hears about it (a warning: the message is still accepted).

        Every plugin's check sees every record set, so this one looks only at DHG's messages."""
        if message is None or message.sending_application.upper() not in self.profile.sending_applications:
            return None
        if records.encounter is not None and not records.encounter.ma_lk:
            return [Issue(101, "PV1-19: the visit number (MA_LK) is empty; this visit cannot be sent as an "
                               "XML 130 file", "PV1^1^19", "W")]
        return None


plugin = DhgHisPlugin(NAME, DEFAULTS, contract=hssk_contract)
