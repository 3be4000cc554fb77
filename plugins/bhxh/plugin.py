"""The BHXH plugin's hooks. Each part lives in its own module and this one only delegates:
the ``bhxh`` destination kind (:mod:`plugins.bhxh.submit`)."""
from __future__ import annotations

from gateway.plugin import DestinationConfig, DestinationKind, Payload, PluginDescription, RecordSet, hookimpl
from plugins.bhxh import submit

hssk_contract = "1.2"
NAME = "bhxh"


class BhxhPlugin:
    hssk_contract = hssk_contract

    @hookimpl
    def hssk_describe(self) -> PluginDescription:
        return PluginDescription(NAME, "BHXH receiving portal: signed claim submission (destination kind bhxh)")

    @hookimpl
    def hssk_destination_kinds(self) -> tuple[DestinationKind, ...]:
        return submit.KINDS

    @hookimpl
    def hssk_render(self, records: RecordSet, destination: DestinationConfig, message,
                    idempotency_key: str) -> Payload | None:
        """Keeps another facility's record set from a ``bhxh`` destination; the core's xml130
        renderer writes the file."""
        submit.other_facility(records, destination)
        return None


plugin = BhxhPlugin()
