"""Finding and loading plugins: the entry-point group, plus direct registration for tests."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
import inspect
from importlib.metadata import entry_points

import pluggy

import gateway
from gateway.config import ConfigError, GatewayConfig
from gateway.core import hookspecs, render
from gateway.core.contract import contract_problem
from gateway.rules import built_in_rules
from gateway.core.http_routes import HttpRoutes, RouteError
from gateway.core.sources import SourceError, SourceRegistry
from gateway.sources import hl7v2, xml130
from gateway.core.plugin_journal import MigrationSet
from gateway.destinations import builtin as builtin_destinations
from gateway.core.destination_kinds import DestinationKind, DestinationKinds


class PluginLoadError(RuntimeError):
    """A plugin could not be imported or configured; start-up stops and says which one."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    claims: str
    built_in: bool = False


def build_plugin_manager(
    config: GatewayConfig, extra: Iterable[object] = (), load_entry_points: bool = True
) -> pluggy.PluginManager:
    """Register every plugin from ``hssk_gateway.plugins`` (minus ``plugins.disabled``) and the
    ``extra`` ones, check each destination's table against its kind, then call ``hssk_configure``
    and check the sources they register. Tests pass ``load_entry_points=False`` and their own
    plugin objects to prove one plugin in isolation.

    The gateway's own parts that plugins could replace or sit beside are built-in plugins, as
    pytest registers its own: the ``json`` renderer, the HL7 v2 and XML 130 sources and the
    destination kinds."""
    pm = GatewayPluginManager()
    pm.add_hookspecs(hookspecs)
    pm.register(render, name="core.render")
    pm.register(hl7v2, name="core.hl7v2")
    pm.register(xml130, name="core.xml130")
    pm.register(builtin_destinations, name="core.destinations")
    _refuse_disabling_built_ins(config.plugins.disabled)
    for name in config.plugins.disabled:
        pm.set_blocked(name)
    if load_entry_points:
        _check_disabled(config.plugins.disabled)
        try:
            pm.load_setuptools_entrypoints(hookspecs.ENTRY_POINT_GROUP)
        except Exception as e:  # an integrator's import error must name the plugin, not crash bare
            raise PluginLoadError(f"loading plugins from entry-point group {hookspecs.ENTRY_POINT_GROUP!r} failed: "
                                  f"{type(e).__name__}: {e}") from e
        _check_contracts(pm)
    for plugin in extra:
        pm.register(plugin)
    _register_rules(pm)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise PluginLoadError(f"plugin {pm.get_name(e.plugin)!r} has a hook the contract does not know: {e}; "
                              f"hooks are listed in gateway/core/hookspecs.py") from e
    destination_kinds(pm).configure(config.destinations)
    pm.hook.hssk_configure(config=config)
    try:
        sources = SourceRegistry.from_hook(pm.hook, config)
    except SourceError as e:
        raise PluginLoadError(str(e)) from e
    http_routes(pm, config, sources)
    return pm


def http_routes(pm: pluggy.PluginManager, config: GatewayConfig, sources: SourceRegistry) -> HttpRoutes:
    """The plugins' HTTP endpoints (``hssk_http_routes``); a bad or clashing path stops start-up."""
    try:
        return HttpRoutes.from_hook(pm.hook, config, frozenset(s.route for s in sources if s.route is not None))
    except RouteError as e:
        raise PluginLoadError(str(e)) from e


def _register_rules(pm: GatewayPluginManager) -> None:
    """The national rules (:mod:`gateway.rules`), after every plugin: their ``hssk_check`` are
    ``tryfirst``, and pluggy calls the plugin registered last first, so they run before any
    plugin's check, even one marked ``tryfirst``, and, registered in reverse, in call order."""
    rules = built_in_rules()
    for rule in reversed(rules):
        pm.register(rule, name=rule.name)
    pm.built_ins = tuple(rule.name for rule in rules) + ("core.render",)


def _refuse_disabling_built_ins(disabled: Iterable[str]) -> None:
    """The national rules, the core's sources and renderers are not the operator's to switch off."""
    built_in = [name for name in disabled if name.startswith("core.")]
    if built_in:
        raise ConfigError("plugins.disabled", f"{', '.join(built_in)}: built-in plugins (the national rules, the "
                                              f"core's sources and renderers) cannot be disabled")


def destination_kinds(pm: pluggy.PluginManager) -> DestinationKinds:
    """Every kind the plugins register through ``hssk_destination_kinds`` (which of two kinds of
    one name a config means cannot be guessed, so two stop start-up)."""
    return DestinationKinds(_declared(pm, "hssk_destination_kinds", DestinationKind, "destination kind"))


def migration_sets(pm: pluggy.PluginManager) -> tuple[MigrationSet, ...]:
    """Every plugin's own schema steps (``hssk_migrations``), in the order the plugins were registered."""
    return tuple(_declared(pm, "hssk_migrations", MigrationSet, "migration set"))


def _declared(pm: pluggy.PluginManager, hook: str, cls: type, what: str) -> list:
    """What each plugin's ``hook`` returns, in the order the plugins were registered. A plugin
    whose hook raises or returns something that is no ``cls``, or two of one name, stop start-up
    naming the plugins."""
    owners: dict[str, str] = {}
    found = []
    for impl in getattr(pm.hook, hook).get_hookimpls():
        try:
            declared = list(impl.function())
        except Exception as e:  # an integrator's bug must name the plugin, not crash bare
            raise PluginLoadError(f"plugin {impl.plugin_name!r} failed in {hook}: {type(e).__name__}: {e}") from e
        for item in declared:
            if not isinstance(item, cls):
                raise PluginLoadError(f"plugin {impl.plugin_name!r}: {hook} must return {cls.__name__} objects, "
                                      f"got {item!r}")
            if item.name in owners:
                raise PluginLoadError(f"plugin {impl.plugin_name!r} registers {what} {item.name!r}, which plugin "
                                      f"{owners[item.name]!r} registers already")
            owners[item.name] = impl.plugin_name
            found.append(item)
    return found


class GatewayPluginManager(pluggy.PluginManager):
    """Every callable named ``hssk_…`` is taken for a hook implementation, marked or not, as pytest
    does for ``pytest_…``: so ``check_pending`` refuses a misspelt one (``hssk_chek``), which
    would otherwise never be called and never say why."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        #: The built-in plugins' names, in the order they run.
        self.built_ins: tuple[str, ...] = ()

    def parse_hookimpl_opts(self, plugin, name: str):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("hssk_") and inspect.isroutine(getattr(plugin, name, None)):
            opts = {}
        return opts


def _check_contracts(pm: pluggy.PluginManager) -> None:
    """Each installed plugin declares the contract it was written for (``hssk_contract``); one
    this gateway cannot serve stops start-up, naming the plugin and the versions."""
    for plugin, dist in pm.list_plugin_distinfo():
        problem = contract_problem(getattr(plugin, "hssk_contract", None))
        if problem is not None:
            raise PluginLoadError(f"plugin {pm.get_name(plugin)!r} ({dist.project_name} {dist.version}) {problem}")


def _check_disabled(disabled: Iterable[str]) -> None:
    """A misspelt name in ``plugins.disabled`` would disable nothing, silently."""
    installed = {ep.name for ep in entry_points(group=hookspecs.ENTRY_POINT_GROUP)}
    unknown = [name for name in disabled if name not in installed]
    if unknown:
        raise ConfigError("plugins.disabled", f"names no installed plugin: {', '.join(unknown)} "
                                              f"(installed: {', '.join(sorted(installed)) or 'none'})")


def describe_built_ins(pm: GatewayPluginManager) -> list[PluginInfo]:
    """The built-in plugins (``core.…``: the national rules, the core's renderers) in the order they
    run, for ``hssk-gateway plugins``: an operator sees which rules every message passes."""
    version = gateway.__version__
    return [PluginInfo(name, version, pm.get_plugin(name).hssk_describe().claims, built_in=True)
            for name in pm.built_ins]


def describe_plugins(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Name, version and claims of each installed plugin (the built-ins are not counted: /readyz is
    ready when a plugin that claims messages is loaded), for ``hssk-gateway plugins`` and /readyz."""
    versions = {pm.get_name(plugin): dist.version for plugin, dist in pm.list_plugin_distinfo()}
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None or name.startswith("core."):
            continue
        describe = getattr(plugin, "hssk_describe", None)
        description = describe() if callable(describe) else None
        infos.append(PluginInfo(
            name=description.name if description else name,
            version=versions.get(name, "-"),
            claims=description.claims if description else "",
        ))
    return sorted(infos, key=lambda i: i.name)
