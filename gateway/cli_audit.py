"""``hssk-gateway audit list|verify``, and how every other command records what it did there.

A CLI command acts as the OS user running it (``--operator`` adds a name where a command takes
one). Its entry is chained in the same transaction as the action where the action writes to the
journal (:func:`audited_write`); a command that only reads (a message body) or that ends in a
refusal chains one of its own (:func:`record`). A command that sends its action through a running
gateway's admin API (``--url``) records nothing here: the gateway records it, as the admin.
"""
from __future__ import annotations

import argparse
import functools
import getpass
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from gateway.config import GatewayConfig
from gateway.core.audit import ACTIONS, CLI, FAILED, OK, REFUSED, AuditEntry, append, list_entries, verify
from gateway.core.audit_syslog import SyslogSink

T = TypeVar("T")


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return f"uid {os.getuid()}"


def actor(args: argparse.Namespace) -> str:
    """The OS user, with the ``--operator`` name a command was given."""
    operator = getattr(args, "operator", None)
    return f"{operator} (OS user {os_user()})" if operator else os_user()


def _copy(config: GatewayConfig, rows: list[dict]) -> None:
    if config.audit.syslog and rows:
        sink = SyslogSink(config.audit.syslog, config.audit.syslog_app_name)
        try:
            sink.send(rows)
        finally:
            sink.close()


def audited_write(config: GatewayConfig, conn: sqlite3.Connection, entry: AuditEntry,
                  task: Callable[[sqlite3.Connection, float], T]) -> T:
    """``task`` and its audit entry in one ``BEGIN IMMEDIATE`` transaction: what changed is in
    the log, and nothing is in the log that did not change."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        now = time.time()
        result = task(conn, now)
        rows = append(conn, now, [entry])
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    _copy(config, rows)
    return result


def record(config: GatewayConfig, entry: AuditEntry) -> None:
    """One entry in a transaction of its own, on a connection of its own."""
    from gateway.core.store import open_store

    conn = open_store(config).connect()
    try:
        audited_write(config, conn, entry, lambda c, now: None)
    finally:
        conn.close()


def audited(action: str, target: Callable[[argparse.Namespace], str]):
    """Record a command's action once it ends: ``ok``, ``refused`` (what the command said) or
    ``failed``. For commands whose action is not one transaction of this process (a replay, a
    feed, outbox commands that loop over batches). With ``--url`` the gateway records it."""
    def wrap(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(command)
        def run(args: argparse.Namespace) -> int:
            from gateway.cli import OperatorError, _config_from

            if getattr(args, "url", None):
                return command(args)
            config = _config_from(args)
            if not config.database_path.exists():  # no journal: the command says so itself
                return command(args)
            try:
                status = command(args)
            except OperatorError as e:
                _record_ending(config, action, args, target, REFUSED, str(e))
                raise
            except Exception as e:
                _record_ending(config, action, args, target, FAILED, f"{type(e).__name__}: {e}")
                raise
            _record_ending(config, action, args, target, OK if status == 0 else FAILED,
                           "" if status == 0 else f"exit status {status}")
            return status

        return run

    return wrap


def _record_ending(config: GatewayConfig, action: str, args: argparse.Namespace,
                   target: Callable[[argparse.Namespace], str], outcome: str, reason: str) -> None:
    try:
        record(config, AuditEntry(CLI, actor(args), action, "", target(args), outcome, reason))
    except sqlite3.Error as e:  # the command's own error is the one to report; this one is said too
        print(f"hssk-gateway: the audit entry of {action} could not be written: {e}", file=sys.stderr)
        if outcome == OK:
            raise


def add_audit_commands(sub, common: argparse.ArgumentParser, parse_time: Callable[[str], float]) -> None:
    audit = sub.add_parser("audit", help="the audit log: who got in, and what operators did").add_subparsers(
        dest="action", required=True)
    listing = audit.add_parser("list", parents=[common], help="audit entries, newest first")
    listing.add_argument("--since", type=parse_time, help="ISO date/time, inclusive")
    listing.add_argument("--actor", metavar="NAME", help="exactly this actor (an OS user, 'admin (token)', a client)")
    listing.add_argument("--action", choices=ACTIONS)
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_audit_list)
    check = audit.add_parser("verify", parents=[common], help="check the hash chain; exit 1 at the first break")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_audit_verify)


def _connection(args: argparse.Namespace) -> sqlite3.Connection:
    from gateway.cli import connection_with

    return connection_with(args, "audit_log", "audit log")


def cmd_audit_list(args: argparse.Namespace) -> int:
    conn = _connection(args)
    try:
        rows = list_entries(conn, since=args.since, actor=args.actor, action=args.action, limit=args.limit)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    print(f"{'ID':>7}  {'TIME':19}  {'SURFACE':7}  {'ACTOR':24}  {'PEER':21}  {'ACTION':22}  {'OUTCOME':7}  "
          f"TARGET / REASON")
    for r in rows:
        detail = " / ".join(part for part in (r["target"], r["reason"]) if part) or "-"
        print(f"{r['id']:>7}  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r['at']))}  {r['surface']:7}  "
              f"{(r['actor'] or '-')[:24]:24}  {(r['peer'] or '-')[:21]:21}  {r['action']:22}  {r['outcome']:7}  {detail}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    conn = _connection(args)
    try:
        checked, broken = verify(conn)
    finally:
        conn.close()
    if args.json:
        print(json.dumps({"checked": checked, "intact": broken is None,
                          "broken_at": broken.entry_id if broken else None,
                          "problem": broken.problem if broken else None}, ensure_ascii=False))
    elif broken is None:
        print(f"audit log intact: {checked} entries, each linked to the one before")
    else:
        print(f"audit log broken at entry {broken.entry_id}: {broken.problem}")
    return 0 if broken is None else 1
