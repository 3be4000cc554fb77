"""Viettel-HIS: HL7 v2 feeds claimed by MSH-3, XML 130 files claimed by facility code.

Viettel publishes no interface specification, so every default below is our best reading of
what its sites send, not a published spec; each one is overridden by ``[plugins.viettel_his]``
(see README.md beside this file and ``gateway.formats.profile``).
"""
from __future__ import annotations

from gateway.plugin import ProfileDefaults, VendorPlugin

NAME = "viettel_his"
DEFAULT_SENDING_APPLICATIONS = ("VIETTEL_HIS", "VTHIS")

#: Our reading: CCCD, card and BHXH number as PID-3 repeats (types NI / HC / SS); the card's
#: validity in IN1-12/13 with the number in IN1-36; the registered facility (MA_DKBD) in PD1-3,
#: HL7's "patient primary facility"; a ZPV segment with the visit's claim summary.
DEFAULTS = ProfileDefaults(
    sending_applications=DEFAULT_SENDING_APPLICATIONS,
    field_map={
        "IN1-36": "MA_THE_BHYT", "IN1-12": "GT_THE_TU", "IN1-13": "GT_THE_DEN", "PD1-3": "MA_DKBD",
        "ZPV-1": "MA_LOAI_KCB", "ZPV-2": "MA_DOITUONG_KCB", "ZPV-3": "MA_KHOA", "ZPV-4": "T_THUOC",
        "ZPV-5": "T_VTYT", "ZPV-6": "T_TONGCHI_BV", "ZPV-7": "T_TONGCHI_BH", "ZPV-8": "T_BNTT",
        "ZPV-9": "T_BNCCT", "ZPV-10": "T_BHTT",
    },
)

plugin = VendorPlugin(NAME, DEFAULTS, contract="1.0")
