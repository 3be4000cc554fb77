"""An immunization-registry plugin answering as the CDC IIS guide asks, through
``hssk_ack_profile``: a VXU that names the request profile Z22 in MSH-21 gets ACKs that name the
response profile Z23, and a dose's warning answers it AE, as that profile wants.

It claims VXU^V04 from MSH-3 ``NIIS_THU_NGHIEM`` (the shared sample's sender) and warns about a
dose without a lot number (RXA-15). Only :mod:`gateway.plugin` is imported."""
from __future__ import annotations

from gateway.plugin import AckProfile, Issue, PluginDescription, RecordSet, hookimpl, records_from_hl7

hssk_contract = "1.0"

SENDER = "NIIS_THU_NGHIEM"
#: The CDC IIS response profile for an ACK to a VXU, and its rule: warnings are AE.
Z23 = AckProfile(msh_fields={21: "Z23^CDCPHINVS"}, severity_codes={"W": "AE"})


class VxuAdapter:
    name = "iis_vxu"

    def normalize(self, message) -> RecordSet:
        return records_from_hl7(message)


@hookimpl
def hssk_describe() -> PluginDescription:
    return PluginDescription("iis_vxu", f"VXU^V04 from MSH-3 {SENDER}", frozenset({"VXU^V04"}))


@hookimpl
def hssk_identify(message):
    if message.sending_application == SENDER and message.message_code == "VXU":
        return VxuAdapter()
    return None


@hookimpl
def hssk_check(message, records):
    return [Issue(101, f"RXA-15: dose {n} has no lot number", f"RXA^{n}^15", "W")
            for n, dose in enumerate(records.immunizations, 1) if not dose.lot_number]


@hookimpl
def hssk_ack_profile(message, envelope):
    if message.message_code == "VXU" and message.msh(21).split(message.encoding_characters[0])[0] == "Z22":
        return Z23
    return None
