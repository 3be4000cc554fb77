"""What every built-in rule plugin shares: its ``[validation]`` settings, read at start-up."""
from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.model.hooks import PluginDescription, hookimpl
from gateway.rules.validation import DEFAULT_RULES, ValidationRules, rules_from_config


class ConfiguredRule:
    """A rule plugin: ``name`` (``core.…``) and ``claims`` (what it checks, for ``hssk-gateway
    plugins``) are set by each subclass, which implements ``hssk_check``."""

    name: str
    claims: str

    def __init__(self) -> None:
        self.rules: ValidationRules = DEFAULT_RULES

    @hookimpl
    def hssk_configure(self, config: GatewayConfig) -> None:
        self.rules = rules_from_config(config.validation)

    @hookimpl
    def hssk_describe(self) -> PluginDescription:
        return PluginDescription(self.name, self.claims)
