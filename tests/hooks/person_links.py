"""A person-index plugin of the kind a national system needs: it keeps which citizen ids were
merged into which, and tells the record stores when two persons turn out to be one.

Through the hooks of contract 1.0 it adds, without any change to the gateway:

- a table of its own, ``person_links_merges``, created by its migration set (``hssk_migrations``);
- its way into the journal (``hssk_journal``): it reads its table from ``hssk_check`` (a pipeline
  worker) and writes it, with the merge event, from the reactor or a command;
- merge events (``journal.queue_event``): an ``ADT^A40`` record set naming the surviving id and
  the retired one, queued for every destination that takes ``ADT^*``, in order behind the
  person's earlier records;
- ``hssk-gateway person_links …`` commands (``hssk_commands``): ``settings``, ``merge``, ``merges``.
"""
from __future__ import annotations

import argparse
import json

from twisted.internet.defer import Deferred

from gateway.plugin import (Command, CommandContext, CommandError, Event, Identifier, Issue, MigrationSet, Person,
                            PluginDescription, PluginJournal, RecordSet, hookimpl, mask_identifier)

hssk_contract = "1.0"

#: The identifier systems a merge may name; ``[plugins.person_links] systems`` narrows them.
SYSTEMS = ("CCCD", "BHXH")
#: The journal, once the gateway hands it over (``hssk_journal``).
JOURNAL: PluginJournal | None = None


def create_merges(db) -> None:
    db["person_links_merges"].create({"retired": str, "surviving": str, "system": str, "merged_at": float},
                                     pk="retired")


def index_surviving(db) -> None:
    db["person_links_merges"].create_index(["surviving"], index_name="person_links_merges_by_surviving")


@hookimpl
def hssk_migrations() -> list[MigrationSet]:
    return [MigrationSet("person_links", [("0001_create_merges", create_merges),
                                          ("0002_index_surviving", index_surviving)])]


@hookimpl
def hssk_journal(journal: PluginJournal) -> None:
    global JOURNAL
    JOURNAL = journal


def merge_event(system: str, retired: str, surviving: str) -> Event:
    """One person known by two ids: the record stores link ``retired`` to ``surviving``."""
    person = Person(identifiers=(Identifier(system, surviving),), previous_identifiers=(Identifier(system, retired),))
    return Event("person_links", f"merge:{system}:{retired}:{surviving}", "ADT^A40",
                 RecordSet(kind="ADT^A40", person=person))


def merge(journal: PluginJournal, system: str, retired: str, surviving: str) -> Deferred:
    """Record the merge, then queue its event; fires with the QueuedEvent. Two transactions: if
    the gateway stops between them, merging again queues the event (its key makes it once)."""
    def record(conn, now: float) -> None:
        conn.execute("INSERT OR REPLACE INTO person_links_merges (retired, surviving, system, merged_at) "
                     "VALUES (?, ?, ?, ?)", (retired, surviving, system, now))

    return journal.write(record).addCallback(lambda _: journal.queue_event(merge_event(system, retired, surviving)))


@hookimpl
def hssk_check(message, records):
    """A record set still filed under a retired id is told where the person lives now."""
    if JOURNAL is None or records.person is None:
        return None
    ids = [i.value for i in records.person.identifiers if i.system in SYSTEMS]
    if not ids:
        return None
    found = JOURNAL.read(lambda conn: conn.execute(
        f"SELECT retired, surviving FROM person_links_merges WHERE retired IN ({', '.join('?' * len(ids))})",
        ids).fetchall())
    return [Issue(204, f"PID-3: {mask_identifier(retired)} was merged into {mask_identifier(surviving)}",
                  "PID^1^3", "W") for retired, surviving in found]


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


def merge_command(args: argparse.Namespace, context: CommandContext) -> int:
    if args.system not in _settings(context)["systems"]:
        raise CommandError(f"person_links does not link {args.system} identifiers")
    journal = context.journal()
    queued = journal.wait(merge, journal, args.system, args.retired, args.surviving)
    print(json.dumps({"message_id": queued.message_id, "ack_code": queued.ack_code, "duplicate": queued.duplicate}))
    return 0 if queued.ack_code == "AA" else 1


def list_merges(args: argparse.Namespace, context: CommandContext) -> int:
    rows = context.journal().read(lambda conn: conn.execute(
        "SELECT system, retired, surviving FROM person_links_merges ORDER BY merged_at").fetchall())
    print(json.dumps([{"system": s, "retired": mask_identifier(r), "surviving": mask_identifier(v)}
                      for s, r, v in rows]))
    return 0


def _merge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("retired", help="the id the person is no longer known by")
    parser.add_argument("surviving", help="the id the person keeps")
    parser.add_argument("--system", default="CCCD", choices=SYSTEMS)


@hookimpl
def hssk_describe() -> PluginDescription:
    return PluginDescription("person_links", "person merges (no messages)")


@hookimpl
def hssk_commands() -> list[Command]:
    return [
        Command("settings", "show what person_links links", show_settings,
                arguments=lambda parser: parser.add_argument("--system", help="check that one system is linked")),
        Command("merge", "record that RETIRED is SURVIVING and tell the record stores", merge_command,
                arguments=_merge_arguments),
        Command("merges", "list the merges recorded", list_merges),
    ]
