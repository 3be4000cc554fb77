"""Destination kinds: what a ``[destinations.NAME]`` table's ``kind`` names.

A kind is registered by a plugin through ``hssk_destination_kinds`` (the built-in ``http``,
``file``, ``mllp`` and ``batch`` by :mod:`gateway.destinations.builtin`, through the same hook).
It brings the dataclass of its own keys, so each kind's table is validated on its own, and the
factory that builds its destination. The configuration is read before any plugin loads, so
:func:`gateway.config.load_config` checks the keys every destination has and keeps the kind's
own keys as written (``DestinationConfig.options``); :meth:`DestinationKinds.configure` checks
those once the plugins are loaded, at start-up and in ``check-config``, with the same errors
naming the dotted key.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorTime

from gateway.config import ConfigError, DestinationConfig, build_settings
from gateway.core.destination import Destination

#: The keys a destination's table holds besides its kind's: listed when a key is unknown.
_COMMON_KEYS = frozenset(f.name for f in dataclasses.fields(DestinationConfig)) - {"name", "options"}
#: What a batched kind's settings hold (``gateway.core.batch.BatchSettings``).
_BATCH_KEYS = frozenset({"schedule", "timezone", "batch_format"})


def resolve_directory(directory: str, data_dir: str) -> Path:
    """A relative ``directory`` lives under the data dir, next to the journal it is fed from."""
    path = Path(directory)
    return path if path.is_absolute() else Path(data_dir) / path


@dataclass(frozen=True)
class DestinationContext:
    """What a kind's ``build`` gets besides the destination's tables: the reactor its connections
    use, the clock every timeout must take (tests drive a ``task.Clock``), and the data dir."""

    reactor: Any
    clock: IReactorTime
    data_dir: str

    def directory(self, path: str) -> Path:
        """``path`` as a destination should use it: a relative one is under the data dir."""
        return resolve_directory(path, self.data_dir)


@dataclass(frozen=True)
class DestinationKind:
    """One kind of destination, as ``hssk_destination_kinds`` registers it.

    ``settings`` is a frozen dataclass of the kind's own keys (declare a rule with
    :func:`gateway.config.setting`; a field without a default is a required key). ``build(config,
    settings, context)`` returns the :class:`~gateway.core.destination.Destination` that delivers one
    outbox row at a time; ``check(config, settings)``, when given, raises
    :class:`~gateway.config.ConfigError` for a rule across keys (name the key with
    ``config.key("url")``). A ``batched`` kind collects a period's rows into one file instead:
    its settings extend :class:`gateway.core.batch.BatchSettings` (``schedule``, ``timezone``,
    ``batch_format``), and ``build`` returns the sink the file is handed to.
    """

    name: str
    settings: type
    build: Callable[[DestinationConfig, Any, DestinationContext], Destination]
    check: Callable[[DestinationConfig, Any], None] | None = None
    batched: bool = False

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a destination kind needs a name, got {self.name!r}")
        if not dataclasses.is_dataclass(self.settings) or not isinstance(self.settings, type):
            raise ValueError(f"destination kind {self.name!r}: settings must be a dataclass of its keys")
        if self.batched and not _BATCH_KEYS <= {f.name for f in dataclasses.fields(self.settings)}:
            raise ValueError(f"destination kind {self.name!r} is batched: its settings must extend BatchSettings "
                             f"({', '.join(sorted(_BATCH_KEYS))})")


@dataclass(frozen=True)
class ConfiguredDestination:
    """A destination's common keys, its kind and its kind's validated settings."""

    config: DestinationConfig
    kind: DestinationKind
    settings: Any

    @property
    def name(self) -> str:
        return self.config.name

    def build(self, context: DestinationContext) -> Destination:
        return self.kind.build(self.config, self.settings, context)


class DestinationKinds:
    """The kinds the loaded plugins registered, by name (see
    :func:`gateway.core.plugins.destination_kinds`, which collects them)."""

    def __init__(self, kinds: Iterable[DestinationKind]) -> None:
        self._kinds = {kind.name: kind for kind in kinds}

    @property
    def names(self) -> list[str]:
        return sorted(self._kinds)

    def configure(self, destinations: Sequence[DestinationConfig]) -> tuple[ConfiguredDestination, ...]:
        """Each destination with its kind and settings; a ConfigError naming the dotted key for
        a kind nobody registered, or a key or value its kind refuses."""
        return tuple(self._configure(d) for d in destinations)

    def _configure(self, destination: DestinationConfig) -> ConfiguredDestination:
        kind = self._kinds.get(destination.kind)
        if kind is None:
            raise ConfigError(destination.key("kind"), f"must be one of {', '.join(self.names)} (the kinds the "
                                                       f"gateway and its plugins register), got {destination.kind!r}")
        settings = build_settings(kind.settings, destination.options, destination.key(""), also_known=_COMMON_KEYS)
        if kind.batched:
            from gateway.core.schedule import ScheduleError, parse_schedule

            try:
                parse_schedule(settings.schedule, settings.timezone)
            except ScheduleError as e:
                raise ConfigError(destination.key("schedule"), str(e)) from None
        if kind.check is not None:
            kind.check(destination, settings)
        return ConfiguredDestination(destination, kind, settings)


def batched_names(destinations: Iterable[ConfiguredDestination]) -> frozenset[str]:
    """The batched destinations among ``destinations``, enabled or not: their rows need no
    per-person order (a period's file carries them at once), and only they can be flushed."""
    return frozenset(d.name for d in destinations if d.kind.batched)
