"""A person-index plugin of the kind a national system needs: it keeps which citizen ids were
merged into which, and tells the record stores when two persons turn out to be one.

Through the hooks of contract 1.0 it adds, without any change to the gateway:

- ``hssk-gateway person_links …`` commands (``hssk_commands``).
"""
from __future__ import annotations

import argparse
import json

from gateway.plugin import Command, CommandContext, CommandError, PluginDescription, hookimpl

hssk_contract = "1.0"

#: The identifier systems a merge may name; ``[plugins.person_links] systems`` narrows them.
SYSTEMS = ("CCCD", "BHXH")


def _settings(context: CommandContext) -> dict:
    systems = context.config.plugin_settings("person_links").get("systems", list(SYSTEMS))
    return {"systems": systems}


def show_settings(args: argparse.Namespace, context: CommandContext) -> int:
    settings = _settings(context)
    if args.system and args.system not in settings["systems"]:
        raise CommandError(f"person_links does not link {args.system} identifiers (systems: "
                           f"{', '.join(settings['systems'])})")
    print(json.dumps({"plugin": context.plugin, "data_dir": context.config.data_dir, **settings}))
    return 0


@hookimpl
def hssk_describe() -> PluginDescription:
    return PluginDescription("person_links", "person merges (no messages)")


@hookimpl
def hssk_commands() -> list[Command]:
    return [Command("settings", "show what person_links links", show_settings,
                    arguments=lambda parser: parser.add_argument("--system", help="check that one system is linked"))]
