"""The ``bhxh`` plugin object: its hooks, each delegating to the module of its part (see the
package's docstring), so that every part adds its own hooks here in a line or two."""
from __future__ import annotations

from gateway.plugin import Command, GatewayConfig, MigrationSet, PluginDescription, Source, hookimpl
from plugins.bhxh.population import KIND, PopulationSettings, batch_source, population_settings
from plugins.bhxh.population_import import MIGRATIONS as POPULATION_MIGRATIONS, import_command_of

hssk_contract = "1.2"
NAME = "bhxh"


class BhxhPlugin:
    """The plugin object registered under ``hssk_gateway.plugins`` as ``bhxh``."""

    hssk_contract = hssk_contract

    def __init__(self) -> None:
        self.population = population_settings({}, f"plugins.{NAME}")

    @hookimpl
    def hssk_configure(self, config: GatewayConfig) -> None:
        table = config.plugin_settings(NAME)
        self.population = population_settings(table, f"plugins.{NAME}")

    @hookimpl
    def hssk_describe(self) -> PluginDescription:
        return PluginDescription(NAME, "BHXH population and card lists (CSV, XML): hssk-gateway bhxh import FILE",
                                 frozenset({KIND}))

    @hookimpl
    def hssk_sources(self) -> list[Source]:
        return [batch_source()]

    @hookimpl
    def hssk_migrations(self) -> list[MigrationSet]:
        return [POPULATION_MIGRATIONS]

    @hookimpl
    def hssk_commands(self) -> list[Command]:
        return [import_command_of(self.population_settings)]

    def population_settings(self) -> PopulationSettings:
        return self.population


plugin = BhxhPlugin()
