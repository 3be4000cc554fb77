"""``hssk-gateway``: serve, check the config, list plugins, inspect the journal, operate the outbox."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from gateway import __version__
from gateway.cli_audit import actor, add_audit_commands, audited, record
from gateway.cli_persons import add_person_commands
from gateway.cli_reports import add_report_commands
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.core import audit
from gateway.core.commands import CommandError
from gateway.core.outbox import STATES
from gateway.core.plugin_journal import MigrationError
from gateway.model.outcome import MESSAGE_STATUSES
from gateway.core.plugins import (PluginLoadError, build_plugin_manager, describe_built_ins, describe_plugins,
                                  destination_kinds)

if TYPE_CHECKING:
    from gateway.core.commands import Command
    from gateway.core.plugin_journal import CommandJournal


def _config_from(args: argparse.Namespace) -> GatewayConfig:
    return load_config(args.config, overrides={
        "data_dir": getattr(args, "data_dir", None),
        "mllp.listen": getattr(args, "mllp_listen", None),
        "http.listen": getattr(args, "http_listen", None),
    })


def cmd_serve(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from gateway.app import Gateway, validate_runtime
    from gateway.logs import start_logging

    config = _config_from(args)
    validate_runtime(config, reactor)
    start_logging(config.log_format, config.log_level)
    os.umask(0o077)  # every file the gateway writes holds patient data: its own, file drops, batch files
    gateway = Gateway(config, reactor, fresh_journal=args.fresh_journal)
    failure = []

    def started_or_failed():
        d = gateway.start()
        d.addErrback(lambda f: (failure.append(f), reactor.stop()))
        return d

    reactor.callWhenRunning(started_or_failed)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: gateway.stop() if not failure else None)
    reactor.run()
    if failure:
        print(f"hssk-gateway: could not start: {failure[0].getErrorMessage()}", file=sys.stderr)
        return 1
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from gateway.app import validate_runtime

    config = _config_from(args)
    validate_runtime(config, reactor)
    plugins = describe_plugins(build_plugin_manager(config))
    journal = (f"journal PostgreSQL from ${config.store.dsn_env} as node {config.store.node or '(host name)'}"
               if config.store.backend == "postgresql"
               else f"journal {config.database_path}, synchronous={config.store.synchronous}")
    print(f"configuration OK: MLLP {config.mllp.listen}, HTTP {config.http.listen}, {journal}, "
          f"plugins: {', '.join(p.name for p in plugins) or 'none'}")
    return 0


def cmd_plugin_new(args: argparse.Namespace) -> int:
    """Write a new plugin package, and say what to do next: the README it writes says what to edit."""
    from gateway.scaffold import ScaffoldError, write_plugin

    try:
        root, written = write_plugin(args.name, Path(args.directory))
    except ScaffoldError as e:
        raise OperatorError(str(e)) from None
    print(f"wrote plugin {args.name} in {root}:")
    for path in written:
        print(f"  {path.relative_to(root)}")
    print(f"next: read {root / 'README.md'} (what to edit), then\n"
          f"  cd {root} && pip install -e '.[test]' && pytest")
    return 0


def _configuration_line(args: argparse.Namespace) -> str:
    """Which gateway a description is of. Without ``--config`` it is of the built-in defaults,
    which may differ from the running gateway's file in every plugin setting and client, so the
    operator is told rather than left to assume."""
    if args.config:
        return f"configuration: {args.config}"
    return ("configuration: built-in defaults and HSSK_* environment (no --config: pass the gateway's own "
            "--config to describe it)")


def _say_configuration(args: argparse.Namespace) -> None:
    """The configuration line: on stdout for text; for ``--json`` on stderr, only when it warns."""
    if not args.json:
        print(_configuration_line(args))
    elif not args.config:
        print(f"hssk-gateway: {_configuration_line(args)}", file=sys.stderr)


def cmd_plugins(args: argparse.Namespace) -> int:
    """The installed plugins, then the built-in ones (``core.…``) in the order they run."""
    config = _config_from(args)
    manager = build_plugin_manager(config)
    infos, built_ins = describe_plugins(manager), describe_built_ins(manager)
    _say_configuration(args)
    if args.json:
        print(json.dumps([info.__dict__ for info in infos + built_ins], ensure_ascii=False, indent=2))
        return 0
    for info in infos:
        print(f"{info.name:<20} {info.version:<10} {info.claims}")
    if not infos:
        print("no plugins loaded (is the project installed? plugins come from the 'hssk_gateway.plugins' entry points)")
    print("built in, in the order they run:")
    for info in built_ins:
        print(f"{info.name:<20} {info.version:<10} {info.claims}")
    return 0


def cmd_clients_list(args: argparse.Namespace) -> int:
    config = _config_from(args)
    rows = [{"name": c.name, "facilities": list(c.facilities), "tokens": len(c.token_sha256),
             "addresses": list(c.addresses), "certificates": list(c.certificates)} for c in config.clients]
    _say_configuration(args)
    if args.json:
        print(json.dumps({"required": config.auth.required, "clients": rows}, ensure_ascii=False, indent=2))
        return 0
    print(f"auth.required = {str(config.auth.required).lower()}: a sender that is no client is "
          f"{'refused' if config.auth.required else 'let in anonymously'}")
    for r in rows:
        print(f"{r['name']:<24} facilities {','.join(r['facilities']):<16} tokens {r['tokens']}  "
              f"addresses {','.join(r['addresses']) or '-'}  certificates {len(r['certificates'])}")
    if not rows:
        print("no [clients.NAME] tables")
    return 0


def cmd_clients_new_token(args: argparse.Namespace) -> int:
    """A fresh token for a client, and the digest its config table keeps: the token itself is
    shown once, here, and never stored by the gateway."""
    import secrets

    from gateway.core.clients import token_digest

    token = secrets.token_urlsafe(32)
    print(f"token (give it to the client, it is not shown again): {token}")
    print(f'config line: token_sha256 = ["{token_digest(token)}"]')
    return 0


def _parse_time(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or date-time (2025-03-15 or 2025-03-15T08:30)")


def _require_journal(config: GatewayConfig) -> None:
    """Inspection never creates a journal: a typo in --data-dir must not look like an empty one.
    (A PostgreSQL journal is where ``store.dsn_env`` says, or the connection fails saying why.)"""
    if config.store.backend == "sqlite" and not config.database_path.exists():
        raise ConfigError("data_dir", f"no journal at {config.database_path} (has the gateway run with this data dir?)")


def connection_with(args: argparse.Namespace, table: str, what: str) -> sqlite3.Connection:
    """A connection to the journal, which must have ``table`` (``what`` it holds, for the
    refusal): a journal no gateway of this version has started on yet lacks it."""
    from gateway.core.store import open_store

    config = _config_from(args)
    _require_journal(config)
    conn = open_store(config).connect()
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is None:
        conn.close()
        raise OperatorError(f"the journal {config.database_path} has no {what} yet: start this version's gateway on "
                            f"it once")
    return conn


def _journal(args: argparse.Namespace):
    from gateway.core.store import Journal, open_store

    config = _config_from(args)
    _require_journal(config)
    return Journal(open_store(config))


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


def cmd_messages_list(args: argparse.Namespace) -> int:
    journal = _journal(args)
    try:
        rows = journal.list_messages(control_id=args.control_id, sender=args.sender, status=args.status,
                                     since=args.since, until=args.until, client=args.client, limit=args.limit)
    finally:
        journal.close()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    print(f"{'ID':>8}  {'RECEIVED':19}  {'TRANSPORT':9}  {'SENDER':28}  {'CONTROL ID':22}  {'TYPE':9}  {'PLUGIN':12}  "
          f"{'ACK':5}  STATUS")
    for r in rows:
        print(f"{r['id']:>8}  {_when(r['received_at']):19}  {r['transport']:9}  {(r['sender'] or '-')[:28]:28}  "
              f"{(r['control_id'] or '-')[:22]:22}  {(r['message_type'] or '-')[:9]:9}  {(r['plugin'] or '-')[:12]:12}  "
              f"{_acks_sent(r):5}  {r['status']}")
    return 0


def _acks_sent(row: dict) -> str:
    """What the sender was told: ``CA``, ``CE,AE``, ``none`` (MSH-15/16 asked for no ACK); the
    decision's code for rows journaled before the codes were recorded, ``-`` for none at all."""
    if row["acks_sent"] is None:
        return row["ack_code"] or "-"
    return ",".join(row["acks_sent"]) or "none"


def _write_message(data: bytes) -> None:
    """HL7 ends each segment with a bare CR, which a terminal takes as "back to the start of this
    line", so every segment would overwrite the one before. On a terminal each segment gets a line
    of its own; into a file or a pipe the bytes go exactly as stored."""
    if sys.stdout.isatty():
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not data.endswith(b"\n"):
            data += b"\n"
    sys.stdout.buffer.write(data)


@audited(audit.MESSAGES_READ, lambda a: f"message {a.id}" + (" raw bytes" if a.raw else " masked view"))
def cmd_messages_show(args: argparse.Namespace) -> int:
    journal = _journal(args)
    try:
        row = journal.get_message(args.id)
    finally:
        journal.close()
    if row is None:
        print(f"no message with id {args.id}", file=sys.stderr)
        return 1
    raw = row.pop("raw")
    if args.raw:
        _write_message(raw)
        return 0
    row["errors"] = json.loads(row["errors"]) if row["errors"] else []
    row["records"] = json.loads(row["records"]) if row["records"] else None
    row["raw_bytes"] = len(raw)
    print(json.dumps(row, ensure_ascii=False, indent=2))
    return 0


@audited(audit.MESSAGES_REPLAY, lambda a: f"message {a.id}" if a.id else f"status={a.status} since={_iso(a.since)} until={_iso(a.until)} limit={a.limit}" + (" dry run" if a.dry_run else ""))
def cmd_messages_replay(args: argparse.Namespace) -> int:
    """Decide journaled messages again (see :mod:`gateway.core.replay`). With ``--url`` the running
    gateway does it through its admin API (its workers, its single journal writer); without, this
    process does, for a stopped gateway."""
    from gateway.core.replay import Selection

    selection = Selection(message_id=args.id, status=args.status, since=args.since, until=args.until,
                          limit=args.limit)
    problem = selection.problem()
    if problem is not None:
        raise OperatorError(f"{problem} (see --help)")
    config = _config_from(args)
    answer = _replay_by_admin_api(config, args, selection) if args.url else _replay_here(config, selection,
                                                                                          args.dry_run)
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
        return 0
    what = "would be" if answer["dry_run"] else "was"
    print(f"{'ID':>8}  {'CONTROL ID':22}  WAS  NOW  {'NEW ID':>8}  {'QUEUED':>6}  ERRORS")
    for r in answer["replayed"]:
        errors = r["skipped"] or "; ".join(f"{e['location']}: {e['text']}" if e["location"] else e["text"]
                                           for e in r["errors"]) or "-"
        print(f"{r['id']:>8}  {(r['control_id'] or '-')[:22]:22}  {r['was'] or '-':3}  {r['ack_code'] or '-':3}  "
              f"{r['message_id'] or '-':>8}  {r['queued']:>6}  {_one_line(errors, 80)}")
    print(f"{len(answer['replayed'])} messages replayed; the QUEUED column is what {what} queued (a record queued "
          f"already is not queued again)" + ("; nothing was journaled (--dry-run)" if answer["dry_run"] else "")
          + ("; more match: run again, or raise --limit" if answer["more"] else ""))
    return 0


def _replay_here(config: GatewayConfig, selection, dry_run: bool) -> dict:
    """The pipeline in this process, on the journal directly (brought to today's schema first),
    the plugins handed a journal of this process's own as ``serve`` hands them the gateway's."""
    from gateway.core.replay import replay_here

    plugins = build_plugin_manager(config)
    journal = _plugin_journal(config, plugins)
    plugins.hook.hssk_journal(journal=journal)
    answer = replay_here(journal.store, config, journal.pipeline, selection, dry_run, journal.unordered)
    if selection.message_id is not None and not answer["replayed"]:
        raise OperatorError(f"no message with id {selection.message_id}")
    return answer


def _plugin_journal(config: GatewayConfig, plugins, plugin: str = "") -> CommandJournal:
    """The journal of ``config``'s data dir for this process: brought to today's schema (the
    core's steps, then the plugins'), written in short transactions of its own."""
    from gateway.core.destination_kinds import batched_names
    from gateway.core.pipeline import Pipeline
    from gateway.core.plugin_journal import CommandJournal, Ownership, apply_migration_sets
    from gateway.core.plugins import migration_sets
    from gateway.core.store import open_store

    _require_journal(config)
    store = open_store(config)
    store.migrate()
    sets = migration_sets(plugins)
    apply_migration_sets(store, sets)
    unordered = batched_names(destination_kinds(plugins).configure(config.destinations))
    return CommandJournal(store, Ownership(s.name for s in sets), Pipeline(plugins.hook, config), unordered, plugin)


def _replay_by_admin_api(config: GatewayConfig, args: argparse.Namespace, selection) -> dict:
    """POST to the running gateway's ``/admin/messages/...replay``, with the admin token from the
    variable ``auth.admin_token_env`` names (pass the gateway's --config)."""
    from urllib.parse import urlencode

    params: dict[str, object] = {"dry_run": 1} if args.dry_run else {}
    if selection.message_id is not None:
        path = f"/admin/messages/{selection.message_id}/replay"
    else:
        path = "/admin/messages/replay"
        params.update(status=selection.status, since=_iso(selection.since), limit=selection.limit)
        if selection.until is not None:
            params["until"] = _iso(selection.until)
    return _admin_post(config, args.url, path + ("?" + urlencode(params) if params else ""), b"")


def _admin_post(config: GatewayConfig, url: str, path: str, body: bytes) -> dict:
    """POST ``body`` to the running gateway's admin API at ``url`` + ``path``, with the admin token
    from the variable ``auth.admin_token_env`` names (pass the gateway's --config); its JSON answer."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url.rstrip("/") + path, data=body, method="POST")
    token = os.environ.get(config.auth.admin_token_env, "") if config.auth.admin_token_env else ""
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            reason = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            reason = e.reason
        raise OperatorError(f"the gateway at {url} answered {e.code}: {reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise OperatorError(f"cannot reach the gateway's admin API at {url}: {e}") from None


@audited(audit.FEED, lambda a: f"source={a.source} file={os.path.basename(a.file)}")
def cmd_feed(args: argparse.Namespace) -> int:
    """Feed a file's records to a source (see :mod:`gateway.core.feed`). With ``--url`` the running
    gateway does it through its admin API (its workers, its single journal writer); without, this
    process does, only while no gateway holds the data directory."""
    config = _config_from(args)
    if not os.path.isfile(args.file):
        raise OperatorError(f"no file {args.file}")
    report = _feed_by_admin_api(config, args) if args.url else _feed_here(config, args.source, args.file)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(f"{report['records']} records of {report['file']} fed to {report['source']}: {report['accepted']} "
              f"queued, {report['repeats']} already there (fed before), {report['errors']} AE, "
              f"{report['rejected']} AR" + (f", {report['ignored']} ignored" if report["ignored"] else ""))
        for problem in report["problems"]:
            errors = "; ".join(f"{e['location']}: {e['text']}" if e["location"] else e["text"]
                               for e in problem["errors"]) or "-"
            print(f"  record {problem['record']}: {problem['ack_code']} (message {problem['message_id']}): "
                  f"{_one_line(errors, 100)}")
        if report["stopped"]:
            print(f"stopped: {report['stopped']}")
    return 1 if report["stopped"] else 0


def _feed_here(config: GatewayConfig, source: str, path: str, *, skip: int = 0, progress=None) -> dict:
    """This process's own intake and journal writer, holding the data directory's lock for the
    while, so that no gateway starts on the journal meanwhile (one writer per journal)."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    from gateway.core.datadir_lock import DataDirInUse, DataDirLock, holder_pid
    from gateway.core.feed import FeedRefused, feed_here

    _require_journal(config)
    holder = holder_pid(config.data_dir)
    if holder is not None:
        raise OperatorError(f"a gateway (PID {holder}) holds the data directory {config.data_dir}: feed through it "
                            f"with --url and its HTTP listener (http://127.0.0.1:8080), or stop it first")
    lock = DataDirLock(config.data_dir)
    try:
        lock.acquire()
    except DataDirInUse as e:
        raise OperatorError(f"{e}; feed through it with --url") from None
    try:
        plugins = build_plugin_manager(config)
        result: list = []

        def run() -> None:
            d = Deferred.fromCoroutine(feed_here(config, plugins, source, path, reactor, skip=skip, progress=progress))
            d.addBoth(result.append)
            d.addBoth(lambda _: reactor.stop())

        reactor.callWhenRunning(run)
        reactor.run()
    finally:
        lock.release()
    if not result:
        raise OperatorError("the feed was interrupted; what was journaled stays: feed the same file again to go on")
    if isinstance(result[0], Failure):
        if result[0].check(FeedRefused):
            raise OperatorError(result[0].getErrorMessage())
        result[0].raiseException()
    return result[0].to_dict()


def _feed_by_admin_api(config: GatewayConfig, args: argparse.Namespace) -> dict:
    """POST the file to the running gateway's ``/admin/feed/SOURCE``."""
    from urllib.parse import quote, urlencode

    with open(args.file, "rb") as f:
        body = f.read()
    path = f"/admin/feed/{quote(args.source, safe='')}?{urlencode({'file': os.path.basename(args.file)})}"
    return _admin_post(config, args.url, path, body)


class OperatorError(Exception):
    """A request the CLI refuses (unknown destination, no such row, wrong kind): ``main`` prints
    it and exits 1 without a traceback."""


def _outbox(args: argparse.Namespace) -> tuple[GatewayConfig, sqlite3.Connection]:
    """The config (for destination names and kinds) and a connection of this process's own,
    configured like the gateway's (WAL, busy timeout), so writes wait for the gateway's writer
    instead of failing."""
    from gateway.core.store import open_store

    config = _config_from(args)
    _require_journal(config)
    return config, open_store(config).connect()


T = TypeVar("T")


def _write(conn: sqlite3.Connection, task: Callable[[sqlite3.Connection, float], T]) -> T:
    """Run ``task(conn, now)`` in one short BEGIN IMMEDIATE transaction: the running gateway's
    writer and this process take turns on the write lock, and nothing is left half-done."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = task(conn, time.time())
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _known_destination(config: GatewayConfig, conn: sqlite3.Connection, name: str) -> str:
    """``name`` if it is configured or the outbox has rows (or state) for it; otherwise refuse
    and list the names that do exist."""
    from gateway.core.outbox import destination_names

    configured = {d.name for d in config.destinations}
    queued = destination_names(conn)
    if name in configured or name in queued:
        return name
    raise OperatorError(
        f"unknown destination {name!r}: configured: {', '.join(sorted(configured)) or 'none'}; "
        f"in the outbox: {', '.join(sorted(queued)) or 'none'} (pass --config with the gateway's configuration "
        f"file to use the destinations it configures)")


def _row_id(text: str) -> int:
    if text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not an outbox row id (a positive integer; see `outbox list`)")


def _positive_int(text: str) -> int:
    if text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")


def _iso(seconds: float | None) -> str:
    return datetime.fromtimestamp(seconds).isoformat(timespec="seconds") if seconds else "-"


def _age(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h02m``, ``2d04h``: enough to see which queue is stuck and since when."""
    if seconds <= 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _one_line(text: str | None, width: int) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def cmd_outbox_status(args: argparse.Namespace) -> int:
    from gateway.core.outbox import destination_status, not_routed_counts, with_idle_destinations

    config, conn = _outbox(args)
    try:
        now = time.time()
        status = with_idle_destinations(destination_status(conn, now), [d.name for d in config.destinations])
        not_routed = not_routed_counts(conn)
    finally:
        conn.close()
    kinds = {d.name: d.kind for d in config.destinations}
    for name, entry in status.items():
        entry.update(kind=kinds.get(name), configured=name in kinds, not_routed=not_routed.get(name, 0))
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=2))
        return 0
    if not status:
        print("no destinations configured or queued (pass --config with the gateway's configuration file)")
        return 0
    print(f"{'DESTINATION':24}  {'KIND':6}  {'PENDING':>8}  {'WAITING':>8}  {'IN FLIGHT':>9}  {'DEAD':>6}  {'DELIVERED':>9}  "
          f"{'OLDEST':>7}  {'CIRCUIT':16}  {'PAUSED':6}  NOT ROUTED")
    for name, e in status.items():
        print(f"{name[:24]:24}  {(e['kind'] or '-'):6}  {e['pending']:>8}  {e['waiting']:>8}  {e['in_flight']:>9}  {e['dead']:>6}  "
              f"{e['delivered']:>9}  {_age(e['oldest_pending_age_seconds']):>7}  {_circuit(e, now):16}  "
              f"{'yes' if e['paused'] else 'no':6}  {e['not_routed']:>10}")
    return 0


def _circuit(entry: dict, now: float) -> str:
    """The circuit as the running gateway last recorded it, and for how long: ``open 2m10s``."""
    state = entry["circuit_state"]
    if not state:
        return "-"
    return f"{state} {_age(now - entry['circuit_since'])}" if state != "closed" else state


def cmd_outbox_list(args: argparse.Namespace) -> int:
    from gateway.core.outbox import list_rows

    config, conn = _outbox(args)
    try:
        destination = _known_destination(config, conn, args.dest) if args.dest else None
        rows = list_rows(conn, destination=destination, state=args.state, limit=args.limit)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    print(f"{'ID':>8}  {'DESTINATION':20}  {'STATE':9}  {'ATTEMPTS':>8}  {'NEXT ATTEMPT':19}  {'LAST RESULT':11}  "
          f"{'LAST ERROR':48}  CREATED")
    for r in rows:
        next_attempt = _iso(r["next_attempt_at"]) if r["state"] == "pending" else "-"
        print(f"{r['id']:>8}  {r['destination'][:20]:20}  {r['state']:9}  {r['attempts']:>8}  {next_attempt:19}  "
              f"{(r['last_result'] or '-')[:11]:11}  {_one_line(r['last_error'], 48):48}  {_iso(r['created_at'])}")
    return 0


def cmd_outbox_show(args: argparse.Namespace) -> int:
    from gateway.core.outbox import get_row

    _, conn = _outbox(args)
    try:
        row = get_row(conn, args.id, with_payload=True)
    finally:
        conn.close()
    if row is None:
        raise OperatorError(f"no outbox row with id {args.id}")
    payload = row.pop("payload") or b""
    if args.payload:
        record(_config_from(args), audit.AuditEntry(audit.CLI, actor(args), audit.OUTBOX_PAYLOAD_READ,
                                                    target=f"outbox row {args.id}"))
        _write_message(payload)
        return 0
    row["payload_bytes"] = len(payload)
    print(json.dumps(row, ensure_ascii=False, indent=2))
    return 0


@audited(audit.OUTBOX_RETRY, lambda a: f"row {a.id}" if a.id else f"dest={a.dest} dead rows")
def cmd_outbox_retry(args: argparse.Namespace) -> int:
    from gateway.core.outbox import retry_dead, retry_dead_row

    if (args.id is None) == (args.dest is None):
        raise OperatorError("give either a row ID or --dest DEST --dead, not both and not neither")
    if args.dest is not None and not args.dead:
        raise OperatorError("--dest needs --dead: only dead rows are retried (say so explicitly)")
    config, conn = _outbox(args)
    try:
        if args.id is not None:
            was = _write(conn, lambda c, now: retry_dead_row(c, now, args.id))
            if was is None:
                raise OperatorError(f"no outbox row with id {args.id}")
            if was != "dead":
                raise OperatorError(f"outbox row {args.id} is {was}, not dead; only dead rows are retried")
            print(f"outbox row {args.id} is pending again (attempts reset); the running gateway delivers it at its "
                  f"next refresh")
            return 0
        destination = _known_destination(config, conn, args.dest)
        count = _write(conn, lambda c, now: retry_dead(c, now, destination=destination))
    finally:
        conn.close()
    print(f"{count} dead rows of {destination} are pending again (attempts reset); the running gateway delivers "
          f"them at its next refresh")
    return 0


def _set_paused(args: argparse.Namespace, paused: bool) -> int:
    from gateway.core.outbox import set_paused

    config, conn = _outbox(args)
    try:
        destination = _known_destination(config, conn, args.dest)
        _write(conn, lambda c, now: set_paused(c, now, destination, paused))
    finally:
        conn.close()
    if paused:
        print(f"{destination} paused: the running gateway stops claiming its rows at its next refresh "
              f"(every outbox.poll_interval_seconds); deliveries already in flight finish")
    else:
        print(f"{destination} resumed: the running gateway claims its due rows again at its next refresh "
              f"(every outbox.poll_interval_seconds)")
    return 0


@audited(audit.OUTBOX_PAUSE, lambda a: f"dest={a.dest}")
def cmd_outbox_pause(args: argparse.Namespace) -> int:
    return _set_paused(args, True)


@audited(audit.OUTBOX_RESUME, lambda a: f"dest={a.dest}")
def cmd_outbox_resume(args: argparse.Namespace) -> int:
    return _set_paused(args, False)


@audited(audit.OUTBOX_FLUSH, lambda a: f"dest={a.dest}")
def cmd_outbox_flush(args: argparse.Namespace) -> int:
    from gateway.core.outbox import request_flush

    config, conn = _outbox(args)
    try:
        destination = _known_destination(config, conn, args.dest)
        kind = next((d.kind for d in destination_kinds(build_plugin_manager(config)).configure(config.destinations)
                     if d.name == destination), None)
        if kind is None or not kind.batched:
            raise OperatorError(
                f"{destination} is {'not configured' if kind is None else f'a {kind.name} destination'}; flush runs a "
                f"configured batch destination's batch now (other kinds deliver each row as it comes)")
        _write(conn, lambda c, now: request_flush(c, now, destination))
    finally:
        conn.close()
    print(f"flush of {destination} requested: this command only records the request; the running gateway builds "
          f"and delivers the batch at its next refresh (every outbox.poll_interval_seconds)")
    return 0


@audited(audit.OUTBOX_PURGE, lambda a: f"delivered_before={_iso(a.delivered_before)}")
def cmd_outbox_purge(args: argparse.Namespace) -> int:
    from gateway.core.outbox import purge_delivered

    config, conn = _outbox(args)
    limit = config.outbox.prune_batch
    purged = 0
    try:
        while True:  # one short transaction per batch, so the gateway's writer is never held up long
            removed = _write(conn, lambda c, now: purge_delivered(c, args.delivered_before, limit))
            purged += removed
            if removed < limit:
                break
    finally:
        conn.close()
    print(f"purged {purged} delivered rows delivered before {_iso(args.delivered_before)}; journal bodies of "
          f"their messages were blanked where nothing is left to deliver")
    return 0


@audited(audit.JOURNAL_BACKUP, lambda a: f"into {a.dest}")
def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the journal into a new directory while the gateway runs (see :mod:`gateway.core.backup`)."""
    from gateway.core.backup import BackupError, backup_journal

    config = _config_from(args)
    _require_journal(config)
    try:
        report = backup_journal(config.database_path, Path(args.dest))
    except BackupError as e:
        raise OperatorError(str(e)) from None
    print(f"backed up {config.database_path} into {report.path} ({report.size_bytes} bytes, {report.messages} "
          f"messages, {report.outbox_rows} outbox rows); restore: stop the gateway, put {report.path.name} and "
          f"{report.path.name}.id into an empty data dir (mode 0700), start it there")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hssk-gateway", description="HSSK integration gateway",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="TOML configuration file (default: built-in defaults)")
    common.add_argument("--data-dir", metavar="DIR", help="where the journal lives (overrides data_dir)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--mllp-listen", metavar="ENDPOINT", help="Twisted endpoint, e.g. tcp:2575:interface=127.0.0.1 "
                                                                 "(without interface=: every interface)")
    serve.add_argument("--http-listen", metavar="ENDPOINT", help="Twisted endpoint, e.g. tcp:8080:interface=127.0.0.1 "
                                                                 "(without interface=: every interface)")
    serve.add_argument("--fresh-journal", action="store_true",
                       help="when the journal created in the data dir is missing, empty or unreadable, keep what is "
                            "there aside and start an empty one (otherwise the gateway refuses to start)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", parents=[common], help="validate the configuration and plugins, then exit")
    check.add_argument("--mllp-listen", metavar="ENDPOINT")
    check.add_argument("--http-listen", metavar="ENDPOINT")
    check.set_defaults(func=cmd_check_config)

    plugins = sub.add_parser("plugins", parents=[common], help="list loaded plugins, versions and claims")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    plugin = sub.add_parser("plugin", help="write a new plugin").add_subparsers(dest="action", required=True)
    new = plugin.add_parser("new", help="write a pip-installable plugin package: adapter, samples, tests, README")
    new.add_argument("name", help="the plugin's name: its package, entry point and [plugins.NAME] table (my_his)")
    new.add_argument("--directory", metavar="DIR", default=".", help="where to create the NAME folder (default: here)")
    new.set_defaults(func=cmd_plugin_new)

    clients = sub.add_parser("clients", help="who may send: configured clients, new tokens").add_subparsers(
        dest="action", required=True)
    client_list = clients.add_parser("list", parents=[common], help="configured clients, their facilities and means")
    client_list.add_argument("--json", action="store_true")
    client_list.set_defaults(func=cmd_clients_list)
    clients.add_parser("new-token", help="make a bearer token and the token_sha256 line for its client").set_defaults(
        func=cmd_clients_new_token)

    messages = sub.add_parser("messages", help="inspect the journal").add_subparsers(dest="action", required=True)
    listing = messages.add_parser("list", parents=[common], help="journaled messages, newest first")
    listing.add_argument("--control-id")
    listing.add_argument("--sender", help="APP|FACILITY, or APP alone")
    listing.add_argument("--status", choices=MESSAGE_STATUSES)
    listing.add_argument("--client", metavar="NAME", help="the authenticated [clients.NAME] that sent it")
    listing.add_argument("--since", type=_parse_time, help="ISO date/time, inclusive")
    listing.add_argument("--until", type=_parse_time, help="ISO date/time, exclusive")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_messages_list)
    show = messages.add_parser("show", parents=[common], help="one message with its errors and records")
    show.add_argument("id", type=int)
    show.add_argument("--raw", action="store_true", help="write the raw bytes as received")
    show.set_defaults(func=cmd_messages_show)
    replay = messages.add_parser("replay", parents=[common],
                                 help="decide journaled messages again with today's plugins and config")
    replay.add_argument("id", nargs="?", type=_positive_int, help="one message, by its journal id")
    replay.add_argument("--status", choices=("accepted", "error", "rejected"),
                        help="the latest attempts with this status (needs --since)")
    replay.add_argument("--since", type=_parse_time, help="ISO date/time, inclusive")
    replay.add_argument("--until", type=_parse_time, help="ISO date/time, exclusive")
    replay.add_argument("--limit", type=_positive_int, default=100, help="at most this many messages (default 100)")
    replay.add_argument("--dry-run", action="store_true", help="decide and show, journal nothing")
    replay.add_argument("--url", metavar="URL",
                        help="the running gateway's HTTP listener (http://127.0.0.1:8080): it replays through its "
                             "admin API; without --url this process does, for a stopped gateway")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=cmd_messages_replay)

    add_person_commands(sub, common)
    add_audit_commands(sub, common, _parse_time)
    add_report_commands(sub, common)
    backup = sub.add_parser("backup", parents=[common], help="copy the journal into a new directory while the gateway "
                                                             "runs (SQLite's online backup)")
    backup.add_argument("dest", metavar="DEST", help="a new or empty directory: it becomes a data dir to restore")
    backup.set_defaults(func=cmd_backup)

    feed = sub.add_parser("feed", parents=[common], help="journal and queue each record of a file (a population "
                                                           "list, an immunization export) as an input of SOURCE")
    feed.add_argument("source", metavar="SOURCE", help="a registered source that can be fed from a file (`plugins`)")
    feed.add_argument("file", metavar="FILE")
    feed.add_argument("--url", metavar="URL",
                      help="the running gateway's HTTP listener (http://127.0.0.1:8080): it feeds through its admin "
                           "API; without --url this process does, only while no gateway holds the data directory")
    feed.add_argument("--json", action="store_true")
    feed.set_defaults(func=cmd_feed)

    outbox = sub.add_parser("outbox", help="inspect and operate the delivery queues").add_subparsers(
        dest="action", required=True)
    status = outbox.add_parser("status", parents=[common],
                               help="per destination: pending, in flight, dead, oldest age, paused")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_outbox_status)
    rows = outbox.add_parser("list", parents=[common], help="outbox rows, oldest first (never the payload)")
    rows.add_argument("--dest", metavar="DEST", help="one destination")
    rows.add_argument("--state", choices=STATES)
    rows.add_argument("--limit", type=_positive_int, default=50)
    rows.add_argument("--json", action="store_true")
    rows.set_defaults(func=cmd_outbox_list)
    row = outbox.add_parser("show", parents=[common], help="one outbox row as JSON")
    row.add_argument("id", type=_row_id)
    row.add_argument("--payload", action="store_true", help="write the payload bytes instead (contains patient data)")
    row.set_defaults(func=cmd_outbox_show)
    retry = outbox.add_parser("retry", parents=[common], help="send dead rows again: one by ID, or --dest DEST --dead")
    retry.add_argument("id", nargs="?", type=_row_id)
    retry.add_argument("--dest", metavar="DEST")
    retry.add_argument("--dead", action="store_true", help="with --dest: every dead row of DEST")
    retry.set_defaults(func=cmd_outbox_retry)
    for name, func, text in (("pause", cmd_outbox_pause, "stop delivering to DEST (rows keep queueing)"),
                             ("resume", cmd_outbox_resume, "deliver to DEST again"),
                             ("flush", cmd_outbox_flush, "ask the running gateway to run batch DEST's batch now")):
        action = outbox.add_parser(name, parents=[common], help=text)
        action.add_argument("dest", metavar="DEST")
        action.set_defaults(func=func)
    purge = outbox.add_parser("purge", parents=[common], help="delete delivered rows and blank their journal bodies")
    purge.add_argument("--delivered-before", type=_parse_time, required=True, metavar="DATE",
                       help="ISO date/time (local), exclusive")
    purge.set_defaults(func=cmd_outbox_purge)
    _add_plugin_commands(parser, sub, common)
    return parser


def _add_plugin_commands(parser: argparse.ArgumentParser, sub, common: argparse.ArgumentParser) -> None:
    """``hssk-gateway PLUGIN COMMAND`` for each command an installed plugin adds (``hssk_commands``,
    :mod:`gateway.core.commands`); a plugin that could not say its commands is named in ``--help``."""
    from gateway.core.commands import installed_commands

    found = installed_commands(reserved=set(sub.choices))
    for plugin, commands in found.by_plugin.items():
        try:
            tree = argparse.ArgumentParser(prog=f"{parser.prog} {plugin}", add_help=False)
            actions = tree.add_subparsers(dest="action", required=True, metavar="COMMAND")
            for command in commands:
                own = actions.add_parser(command.name, parents=[common], help=command.help)
                if command.arguments is not None:
                    command.arguments(own)
                own.set_defaults(func=_plugin_command(plugin, command))
        except Exception as e:  # a plugin's broken arguments cost its own commands only
            found.problems.append(f"{plugin}: {type(e).__name__}: {e}")
            continue
        sub.add_parser(plugin, parents=[tree], help=f"commands of plugin {plugin}")
    if found.problems:
        parser.epilog = ("plugins whose commands are missing (hssk-gateway check-config says more):\n  "
                         + "\n  ".join(found.problems))


def _plugin_command(plugin: str, command: Command) -> Callable[[argparse.Namespace], int]:
    """Run a plugin's command with the configuration and the plugins loaded as ``serve`` would."""
    from gateway.core.commands import CommandContext

    def run(args: argparse.Namespace) -> int:
        config = _config_from(args)
        if plugin in config.plugins.disabled:
            raise ConfigError("plugins.disabled", f"names {plugin!r}, whose command {command.name!r} was asked for")
        plugins = build_plugin_manager(config)
        status = command.run(args, CommandContext(plugin, config, lambda: _plugin_journal(config, plugins, plugin),
                                                  lambda source, path, **options: _feed_here(config, source, path,
                                                                                             **options),
                                                  lambda action, target: _plugin_audit(config, plugin, action,
                                                                                       target)))
        return 0 if status is None else status

    return run


def _plugin_audit(config: GatewayConfig, plugin: str, action: str, target: str) -> None:
    """A plugin command's operator action, as the OS user, in the data dir's audit log."""
    from gateway.cli_audit import os_user, record
    from gateway.core.audit import CLI, AuditEntry

    if config.database_path.exists():
        record(config, AuditEntry(CLI, os_user(), action, "", f"{plugin}: {target}"))


def _reader_gone() -> int:
    """stdout's reader closed the pipe (``| head``): what was not written is not wanted. stdout
    is pointed at /dev/null so the interpreter's own flush at exit cannot fail again, and the
    status is the one a shell reports for a writer SIGPIPE ended."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _reader_gone()
    except ConfigError as e:
        print(f"hssk-gateway: configuration error: {e}", file=sys.stderr)
        return 2
    except (PluginLoadError, MigrationError) as e:
        print(f"hssk-gateway: {e}", file=sys.stderr)
        return 2
    except (OperatorError, CommandError) as e:
        print(f"hssk-gateway: {e}", file=sys.stderr)
        return 1
    except sqlite3.Error as e:
        print(f"hssk-gateway: journal error: {e} (is another process holding the write lock?)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
