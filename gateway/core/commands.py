"""Commands a plugin adds to the CLI (``hssk_commands``), each as ``hssk-gateway PLUGIN COMMAND``.

The command line is built before it is parsed, so the plugins of the entry-point group are
loaded first, one at a time: a plugin that cannot be imported, declares a contract this gateway
cannot serve, or whose ``hssk_commands`` fails, loses its commands and is named in
``hssk-gateway --help`` — it never takes the other commands, ``--help`` included, down with it.
(Serving still refuses to start with such a plugin, as before.) Each plugin's commands sit
under its entry-point name, so two plugins never compete for a name, nor a plugin with the
gateway's own commands.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from gateway.config import GatewayConfig
from gateway.core import hookspecs
from gateway.core.contract import contract_problem

if TYPE_CHECKING:
    from gateway.core.plugin_journal import PluginJournal


@dataclass(frozen=True)
class CommandContext:
    """What a plugin's command gets besides its parsed arguments: the plugin's entry-point name
    and the configuration of ``--config`` / ``--data-dir``, the plugins loaded and configured
    with it as ``serve`` would (``hssk_configure`` has run)."""

    plugin: str
    config: GatewayConfig
    open_journal: Callable[[], PluginJournal] = field(repr=False, compare=False)
    feed_file: Callable[..., dict] | None = field(default=None, repr=False, compare=False)
    record_audit: Callable[[str, str], None] | None = field(default=None, repr=False, compare=False)

    def journal(self) -> PluginJournal:
        """The journal of the data dir, brought to today's schema (the core's steps and every
        plugin's), as a :class:`~gateway.core.plugin_journal.PluginJournal` whose writes and
        events are short transactions of this process's own (a running gateway delivers what
        they queue at its next outbox refresh). A data dir without a journal is a configuration
        error: a command never creates one."""
        return self.open_journal()

    def feed(self, source: str, path: str, *, skip: int = 0, progress: Callable[[Any], None] | None = None) -> dict:
        """Feed the records of the file at ``path`` to the registered ``source`` in this process,
        as ``hssk-gateway feed SOURCE FILE`` without ``--url`` does (refused while a gateway holds
        the data dir: feed through its admin API then, ``POST /admin/feed/SOURCE``). The first
        ``skip`` records are not submitted (a resume); ``progress(report)`` follows each record
        answered. Returns the report as a dict (``records``, ``skipped``, ``accepted``, ``repeats``,
        ``errors``, ``rejected``, ``problems``, ``stopped``). Version note: added in contract 1.1."""
        if self.feed_file is None:
            raise CommandError("this command line cannot feed files")
        return self.feed_file(source, path, skip=skip, progress=progress)

    def audit(self, action: str, target: str) -> None:
        """Record in the audit log that the operator (the OS user) did ``action``
        (``persons.reveal`` …, :data:`gateway.core.audit.ACTIONS`) to ``target``, which holds no
        identifier in clear (mask it). A reveal of identifiers is an operator action the audit log
        must hold whichever command made it. Nothing is recorded where the data dir has no journal
        yet. Version note: added in contract 1.2."""
        if self.record_audit is not None:
            self.record_audit(action, target)


@dataclass(frozen=True)
class Command:
    """One command of ``hssk-gateway PLUGIN …``.

    ``arguments(parser)`` adds the command's own arguments to its ``argparse`` parser (which
    already has ``--config`` and ``--data-dir``); ``run(args, context)`` does the work and returns
    the exit status (None is 0). Raise :class:`gateway.config.ConfigError` for a bad setting
    (exit 2) or :class:`CommandError` for a request refused (exit 1); the message is printed
    without a traceback."""

    name: str
    help: str
    run: Callable[[argparse.Namespace, CommandContext], int | None]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


class CommandError(Exception):
    """A plugin command refuses what was asked: printed, exit status 1."""


@dataclass
class InstalledCommands:
    """The commands of each plugin that could say them, and why the others could not."""

    by_plugin: dict[str, tuple[Command, ...]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def installed_commands(reserved: Collection[str]) -> InstalledCommands:
    """Load each plugin of the entry-point group on its own and ask it for its commands.
    ``reserved`` are the gateway's own command names, which no plugin's name may take."""
    from gateway.core.plugins import GatewayPluginManager

    found = InstalledCommands()
    for ep in sorted(entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            plugin = ep.load()
            problem = contract_problem(getattr(plugin, "hssk_contract", None))
            if problem is not None:
                raise ValueError(problem)
            pm = GatewayPluginManager()
            pm.add_hookspecs(hookspecs)
            pm.register(plugin, name=ep.name)
            commands = tuple(c for impl in pm.hook.hssk_commands.get_hookimpls() for c in impl.function())
            _check_commands(commands)
        except Exception as e:  # one broken plugin must not take the command line down
            found.problems.append(f"{ep.name}: {type(e).__name__}: {e}")
            continue
        if not commands:
            continue
        if ep.name in reserved:
            found.problems.append(f"{ep.name}: its commands are not added, '{ep.name}' is a command of the "
                                  f"gateway's own")
            continue
        found.by_plugin[ep.name] = commands
    return found


def _check_commands(commands: tuple[Command, ...]) -> None:
    names = set()
    for command in commands:
        if not isinstance(command, Command):
            raise TypeError(f"hssk_commands must return Command objects, got {command!r}")
        if command.name in names:
            raise ValueError(f"two commands are named {command.name!r}")
        names.add(command.name)
