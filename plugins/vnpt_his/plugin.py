"""VNPT-HIS: HL7 v2 feeds claimed by MSH-3, XML 130 files claimed by facility code.

VNPT publishes no interface specification, so every default below is our best reading of what
its sites send, not a published spec; each one is overridden by ``[plugins.vnpt_his]`` (see
README.md beside this file and ``gateway.formats.profile``).
"""
from __future__ import annotations

from gateway.plugin import ProfileDefaults, VendorPlugin

NAME = "vnpt_his"
DEFAULT_SENDING_APPLICATIONS = ("VNPT_HIS", "VNPTHIS")

#: Our reading: the CCCD in PID-19 (the v2 "SSN" field older national-id interfaces used), the
#: card number as a PID-3 repeat of type BHYT, and a ZBH segment with the card's data (ZBH-2
#: number, 3 MA_DKBD, 4/5 validity, 6 MA_KHUVUC, 7 NAM_NAM_LIEN_TUC); a ZTC segment with the
#: visit's claim summary.
DEFAULTS = ProfileDefaults(
    sending_applications=DEFAULT_SENDING_APPLICATIONS,
    identifier_types={"CMND": "CMND", "CMT": "CMND"},
    field_map={
        "PID-19": "SO_CCCD",
        "ZBH-2": "MA_THE_BHYT", "ZBH-3": "MA_DKBD", "ZBH-4": "GT_THE_TU", "ZBH-5": "GT_THE_DEN",
        "ZBH-6": "MA_KHUVUC", "ZBH-7": "NAM_NAM_LIEN_TUC",
        "ZTC-1": "MA_LOAI_KCB", "ZTC-2": "MA_DOITUONG_KCB", "ZTC-3": "MA_KHOA", "ZTC-4": "T_THUOC",
        "ZTC-5": "T_VTYT", "ZTC-6": "T_TONGCHI_BV", "ZTC-7": "T_TONGCHI_BH", "ZTC-8": "T_BNTT",
        "ZTC-9": "T_BNCCT", "ZTC-10": "T_BHTT",
    },
)

plugin = VendorPlugin(NAME, DEFAULTS, contract="1.0")
