"""The BHXH plugin, written against the public plugin surface only (``gateway.plugin``, contract
1.2). This module only wires the hooks to the modules that do the work: the portal-compatible
intake (:mod:`plugins.bhxh.intake`)."""
from __future__ import annotations

from gateway.plugin import ConfigError, GatewayConfig, HttpRoute, PluginDescription, hookimpl
from plugins.bhxh.intake import PortalIntake, Tokens, accounts_from

hssk_contract = "1.2"
NAME = "bhxh"
#: How long a portal token lasts when ``token_seconds`` is not set; the portal's own is a day or
#: less, and a HIS logs in again on 401 either way.
TOKEN_SECONDS = 3600.0


class BhxhPlugin:
    """The plugin object registered under ``hssk_gateway.plugins`` as ``bhxh``. ``clock``
    (IReactorTime, the reactor by default) says when a token expires."""

    hssk_contract = hssk_contract

    def __init__(self, clock=None) -> None:
        self.clock = clock
        self.intake: PortalIntake | None = None

    @hookimpl
    def hssk_configure(self, config: GatewayConfig) -> None:
        table = config.plugin_settings(NAME)
        seconds = table.get("token_seconds", TOKEN_SECONDS)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise ConfigError(f"plugins.{NAME}.token_seconds", "a positive number of seconds")
        accounts = accounts_from(config, table, f"plugins.{NAME}.accounts")
        if self.clock is None:
            from twisted.internet import reactor
            self.clock = reactor
        self.intake = PortalIntake(accounts, Tokens(self.clock, float(seconds))) if accounts else None

    @hookimpl
    def hssk_describe(self) -> PluginDescription:
        intake = (f"the BHXH portal API for {len(self.intake.accounts)} account(s)" if self.intake
                  else "no BHXH portal accounts (plugins.bhxh.accounts)")
        return PluginDescription(NAME, intake)

    @hookimpl
    def hssk_http_routes(self) -> list[HttpRoute]:
        return self.intake.routes() if self.intake is not None else []


plugin = BhxhPlugin()
