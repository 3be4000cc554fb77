"""``hssk-gateway``: serve, check the config, list plugins, inspect the journal."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime

from gateway import __version__
from gateway.config import ConfigError, GatewayConfig, load_config, validate_runtime
from gateway.core.plugins import PluginLoadError, build_plugin_manager, describe_plugins


def _config_from(args: argparse.Namespace) -> GatewayConfig:
    return load_config(args.config, overrides={
        "data_dir": getattr(args, "data_dir", None),
        "mllp.listen": getattr(args, "mllp_listen", None),
        "http.listen": getattr(args, "http_listen", None),
    })


def cmd_serve(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from gateway.app import Gateway
    from gateway.logs import start_logging

    config = _config_from(args)
    validate_runtime(config, reactor)
    start_logging(config.log_format)
    gateway = Gateway(config, reactor)
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

    config = _config_from(args)
    validate_runtime(config, reactor)
    plugins = describe_plugins(build_plugin_manager(config))
    print(f"configuration OK: MLLP {config.mllp.listen}, HTTP {config.http.listen}, journal {config.database_path}, "
          f"synchronous={config.store.synchronous}, plugins: {', '.join(p.name for p in plugins) or 'none'}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    config = _config_from(args)
    infos = describe_plugins(build_plugin_manager(config))
    if args.json:
        print(json.dumps([info.__dict__ for info in infos], ensure_ascii=False, indent=2))
        return 0
    for info in infos:
        print(f"{info.name:<20} {info.version:<10} {info.claims}")
    if not infos:
        print("no plugins loaded (is the project installed? plugins come from the 'hssk_gateway.plugins' entry points)")
    return 0


def _parse_time(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or date-time (2025-03-15 or 2025-03-15T08:30)")


def _journal(args: argparse.Namespace):
    from gateway.core.store import Journal, Store

    config = _config_from(args)
    if not config.database_path.exists():
        raise ConfigError("data_dir", f"no journal at {config.database_path} (has the gateway run with this data dir?)")
    return Journal(Store(config.database_path, config.store.synchronous))


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


def cmd_messages_list(args: argparse.Namespace) -> int:
    journal = _journal(args)
    try:
        rows = journal.list_messages(control_id=args.control_id, sender=args.sender, status=args.status,
                                     since=args.since, until=args.until, limit=args.limit)
    finally:
        journal.close()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    print(f"{'ID':>8}  {'RECEIVED':19}  {'TRANSPORT':9}  {'SENDER':28}  {'CONTROL ID':22}  {'TYPE':9}  {'PLUGIN':12}  ACK  STATUS")
    for r in rows:
        print(f"{r['id']:>8}  {_when(r['received_at']):19}  {r['transport']:9}  {(r['sender'] or '-')[:28]:28}  "
              f"{(r['control_id'] or '-')[:22]:22}  {(r['message_type'] or '-')[:9]:9}  {(r['plugin'] or '-')[:12]:12}  "
              f"{r['ack_code'] or '-':3}  {r['status']}")
    return 0


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
        sys.stdout.buffer.write(raw)
        return 0
    row["errors"] = json.loads(row["errors"]) if row["errors"] else []
    row["records"] = json.loads(row["records"]) if row["records"] else None
    row["raw_bytes"] = len(raw)
    print(json.dumps(row, ensure_ascii=False, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hssk-gateway", description="HSSK integration gateway")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="TOML configuration file (default: built-in defaults)")
    common.add_argument("--data-dir", metavar="DIR", help="where the journal lives (overrides data_dir)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--mllp-listen", metavar="ENDPOINT", help="Twisted endpoint, e.g. tcp:2575:interface=127.0.0.1")
    serve.add_argument("--http-listen", metavar="ENDPOINT", help="Twisted endpoint, e.g. tcp:8080")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", parents=[common], help="validate the configuration and plugins, then exit")
    check.add_argument("--mllp-listen", metavar="ENDPOINT")
    check.add_argument("--http-listen", metavar="ENDPOINT")
    check.set_defaults(func=cmd_check_config)

    plugins = sub.add_parser("plugins", parents=[common], help="list loaded plugins, versions and claims")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    messages = sub.add_parser("messages", help="inspect the journal").add_subparsers(dest="action", required=True)
    listing = messages.add_parser("list", parents=[common], help="journaled messages, newest first")
    listing.add_argument("--control-id")
    listing.add_argument("--sender", help="APP|FACILITY, or APP alone")
    listing.add_argument("--status", choices=("accepted", "error", "rejected", "ignored"))
    listing.add_argument("--since", type=_parse_time, help="ISO date/time, inclusive")
    listing.add_argument("--until", type=_parse_time, help="ISO date/time, exclusive")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_messages_list)
    show = messages.add_parser("show", parents=[common], help="one message with its errors and records")
    show.add_argument("id", type=int)
    show.add_argument("--raw", action="store_true", help="write the raw bytes as received")
    show.set_defaults(func=cmd_messages_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"hssk-gateway: configuration error: {e}", file=sys.stderr)
        return 2
    except PluginLoadError as e:
        print(f"hssk-gateway: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
