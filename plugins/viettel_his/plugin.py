"""Viettel-HIS: HL7 v2 feeds claimed by MSH-3 sending application.

The sending applications are configuration (``[plugins.viettel_his] sending_applications``):
Viettel does not publish its interface specification, so the defaults are our best reading.
"""
from __future__ import annotations

from gateway.config import ConfigError, GatewayConfig
from gateway.core.hookspecs import PluginDescription, hookimpl
from gateway.core.model import RecordSet
from gateway.formats.hl7_model import encounter_from_pv1, observations_from_obx, person_from_pid
from gateway.formats.hl7v2 import Hl7Message

NAME = "viettel_his"
DEFAULT_SENDING_APPLICATIONS = ("VIETTEL_HIS", "VTHIS")


class ViettelAdapter:
    name = NAME

    def normalize(self, message: Hl7Message) -> RecordSet:
        return RecordSet(
            kind=message.message_type,
            person=person_from_pid(message),
            encounter=encounter_from_pv1(message),
            observations=observations_from_obx(message),
        )


class ViettelHisPlugin:
    def __init__(self) -> None:
        self.sending_applications = frozenset(DEFAULT_SENDING_APPLICATIONS)
        self.adapter = ViettelAdapter()

    @hookimpl
    def hssk_configure(self, config: GatewayConfig) -> None:
        settings = config.plugin_settings(NAME)
        apps = settings.get("sending_applications", DEFAULT_SENDING_APPLICATIONS)
        if not isinstance(apps, list | tuple) or not all(isinstance(a, str) and a for a in apps):
            raise ConfigError(f"plugins.{NAME}.sending_applications", f"must be a list of non-empty strings, got {apps!r}")
        self.sending_applications = frozenset(a.upper() for a in apps)

    @hookimpl
    def hssk_describe(self) -> PluginDescription:
        return PluginDescription(NAME, "HL7 v2 (ADT, ORU) with MSH-3 in " + ", ".join(sorted(self.sending_applications)))

    @hookimpl
    def hssk_identify(self, message: Hl7Message) -> ViettelAdapter | None:
        if message.sending_application.upper() in self.sending_applications:
            return self.adapter
        return None


plugin = ViettelHisPlugin()
