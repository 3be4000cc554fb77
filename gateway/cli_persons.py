"""``hssk-gateway persons …`` and ``hssk-gateway identity review …``: the person index for operators.

Both read and write the journal directly, as the outbox commands do, so they work whether or not
the gateway runs (a running gateway offers what a review links to the plugins at its next refresh).
Names and identifiers are masked unless ``--reveal`` is given; a reveal is recorded first
(``person_reveals``: who, the OS user and ``--operator``, when, with which command, which persons),
so nothing is shown in clear that the journal does not say was shown. A review decision records
who made it the same way.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import time

from gateway.cli_audit import actor, audited_write, os_user, record
from gateway.core.audit import CLI, PERSONS_REVEAL, REFUSED, REVIEW_ACCEPT, REVIEW_REJECT, AuditEntry
from gateway.model.masking import mask_identifier, mask_name
from gateway.rules import person_index
from gateway.rules.person_index import ReviewError, find_persons, person_status, person_view, record_reveal


def add_person_commands(sub, common: argparse.ArgumentParser) -> None:
    """Add ``persons`` and ``identity`` to the command line's subcommands."""
    persons = sub.add_parser("persons", help="the person index: who records are about").add_subparsers(
        dest="action", required=True)
    reveal = argparse.ArgumentParser(add_help=False)
    reveal.add_argument("--reveal", action="store_true",
                        help="show identifiers and names in clear (recorded: who, when, which persons)")
    reveal.add_argument("--operator", metavar="NAME", help="who is asking, recorded with a reveal or a decision "
                                                           "(default: the OS user)")
    reveal.add_argument("--json", action="store_true")
    show = persons.add_parser("show", parents=[common, reveal], help="one person: identifier history, relations, "
                                                                    "links, reviews")
    show.add_argument("person", nargs="?", help="the person's id (see persons find)")
    show.add_argument("--identifier", metavar="VALUE", help="the person an identifier names")
    show.add_argument("--system", choices=person_index.DURABILITY, help="the identifier's system")
    show.set_defaults(func=cmd_persons_show)
    find = persons.add_parser("find", parents=[common, reveal], help="persons by identifier, name and birth date")
    find.add_argument("--identifier", metavar="VALUE")
    find.add_argument("--system", choices=person_index.DURABILITY)
    find.add_argument("--name", metavar="TEXT", help="the start of the full name, diacritics and case ignored")
    find.add_argument("--birth-date", metavar="YYYYMMDD", help="the birth date, or its start (a year, a month)")
    find.add_argument("--provisional", action="store_true", help="only provisional persons still open")
    find.add_argument("--limit", type=int, default=20)
    find.set_defaults(func=cmd_persons_find)

    identity = sub.add_parser("identity", help="identity cases the person index could not decide").add_subparsers(
        dest="action", required=True)
    review = identity.add_parser("review", help="the review queue").add_subparsers(dest="decision", required=True)
    listing = review.add_parser("list", parents=[common], help="reviews waiting (--all: decided ones too)")
    listing.add_argument("--all", action="store_true")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_review_list)
    for name, text in (("accept", "link the review's subject with its candidate (the provisional person "
                                  "survives)"), ("reject", "close the review, linking nothing")):
        decide = review.add_parser(name, parents=[common], help=text)
        decide.add_argument("review", type=int)
        if name == "accept":
            decide.add_argument("--candidate", metavar="PERSON", help="which candidate, when there are several")
        decide.add_argument("--operator", metavar="NAME", help="who decides (default: the OS user)")
        decide.add_argument("--note", default="", help="why, kept with the decision")
        decide.add_argument("--json", action="store_true")
        decide.set_defaults(func=cmd_review_decide, accept=name == "accept")


def _connection(args: argparse.Namespace) -> sqlite3.Connection:
    from gateway.cli import connection_with

    return connection_with(args, "persons", "person index")


def cmd_persons_show(args: argparse.Namespace) -> int:
    from gateway.cli import OperatorError

    if bool(args.person) == bool(args.identifier):
        raise OperatorError("name one person: its id, or --identifier VALUE")
    conn = _connection(args)
    try:
        ids = [args.person] if args.person else find_persons(conn, identifier=args.identifier, system=args.system or "",
                                                              limit=2)
        if len(ids) != 1 or (view := person_view(conn, ids[0])) is None:
            raise OperatorError("no such person" if not ids or args.person else
                                "the identifier names several persons: use persons find")
        _reveal(conn, args, "persons show", [view["id"]])
    finally:
        conn.close()
    shown = view if args.reveal else _masked(view)
    if args.json:
        print(json.dumps(shown, ensure_ascii=False, indent=2))
    else:
        _print_person(shown)
    return 0


def cmd_persons_find(args: argparse.Namespace) -> int:
    from gateway.cli import OperatorError

    if not (args.identifier or args.name or args.birth_date or args.provisional):
        raise OperatorError("say what to find: --identifier, --name, --birth-date or --provisional")
    conn = _connection(args)
    try:
        ids = find_persons(conn, identifier=args.identifier or "", system=args.system or "", name=args.name or "",
                           birth_date=args.birth_date or "", provisional=args.provisional, limit=args.limit)
        views = [v for v in (person_view(conn, i) for i in ids) if v is not None]
        _reveal(conn, args, "persons find", [v["id"] for v in views])
    finally:
        conn.close()
    shown = views if args.reveal else [_masked(v) for v in views]
    if args.json:
        print(json.dumps(shown, ensure_ascii=False, indent=2))
        return 0
    print(f"{'PERSON':24}  {'STATUS':11}  {'NAME':28}  {'BORN':12}  {'SEX':3}  IDENTIFIERS")
    for v in shown:
        current = ", ".join(f"{i['system']} {i['value']}" for i in v["identifiers"] if i["current"])
        print(f"{v['id']:24}  {person_status(v):11}  {(v['name'] or '-')[:28]:28}  {v['birth_date'] or '-':12}  "
              f"{v['sex'] or '-':3}  {current or '-'}")
    return 0


def _reveal(conn: sqlite3.Connection, args: argparse.Namespace, command: str, persons: list[str]) -> None:
    """``person_reveals`` and the audit log, in one transaction, before anything is shown."""
    from gateway.cli import _config_from

    if args.reveal and persons:
        entry = AuditEntry(CLI, actor(args), PERSONS_REVEAL, target=f"{command}: {', '.join(persons)}")
        audited_write(_config_from(args), conn, entry,
                      lambda c, now: record_reveal(c, now, args.operator or "", os_user(), command, persons))


def _masked(view: dict) -> dict:
    """What an operator sees without ``--reveal``: names as family name and initials, identifiers
    by their shape (``0790*****123``)."""
    masked = dict(view, name=mask_name(view["name"] or ""))
    masked["identifiers"] = [dict(i, value=mask_identifier(i["value"])) for i in view["identifiers"]]
    for relation in ("parents", "children"):
        masked[relation] = [dict(r, name=mask_name(r["name"] or "")) for r in view[relation]]
    return masked


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


def _print_person(v: dict) -> None:
    status = person_status(v) + (f" by {v['replaced_by']}" if v["replaced_by"] else "")
    print(f"person {v['id']}: {status}")
    print(f"  name        {v['name'] or '-'}")
    multiple = f", birth order {v['birth_order']}" if v["birth_order"] else ""
    multiple += " (multiple birth)" if v["multiple_birth"] == "Y" else ""
    print(f"  born        {v['birth_date'] or '-'}, sex {v['sex'] or '-'}{multiple}")
    print(f"  first seen  {_when(v['created_at'])} from facility {v['facility'] or '-'} ({v['created_by'] or '-'})")
    print("  identifiers (newest first):")
    for i in v["identifiers"]:
        scope = f" {i['scope']}" if i["scope"] else ""
        print(f"    {i['system'] + scope:16}  {i['value']:24}  since {_when(i['first_seen'])}"
              f"{'  (current)' if i['current'] else ''}")
    for r in v["parents"]:
        print(f"  {r['kind']:10}  {r['id']}  {r['name'] or '-'}")
    for r in v["children"]:
        state = " (provisional)" if r["provisional"] is not None else ""
        print(f"  child       {r['id']}  {r['name'] or '-'}  born {r['birth_date'] or '-'}{state}")
    for retired in v["replaces"]:
        print(f"  replaces    {retired}")
    for link in v["links"]:
        announced = f"announced {_when(link['announced_at'])}" if link["announced_at"] else "not announced yet"
        other = f" with {link['other_id']}" if link["other_id"] else ""
        print(f"  link {link['id']:<6} {_when(link['created_at'])} {link['kind']} {link['how']}{other}, {announced}")
    for review in v["reviews"]:
        print(f"  review {review['id']:<4} {review['reason']}: {review['state']}"
              + (f" by {review['decided_by']}" if review["decided_by"] else ""))


def cmd_review_list(args: argparse.Namespace) -> int:
    conn = _connection(args)
    try:
        listed = person_index.review_queue(conn, None if args.all else "open")
    finally:
        conn.close()
    if args.json:
        print(json.dumps(listed, ensure_ascii=False, indent=2))
        return 0
    if not listed:
        print("no reviews waiting" if not args.all else "no reviews")
    for r in listed:
        decided = f" by {r['decided_by']} at {_when(r['decided_at'])}" if r["decided_by"] else ""
        subject = r["subject"]
        print(f"review {r['id']} ({_when(r['created_at'])}): {r['reason']}, {r['state']}{decided}")
        print(f"  subject    {subject['id']}  {subject['name'] or '-'}  born {subject['birth_date'] or '-'}  "
              f"{subject['status']}")
        for c in r["candidates"]:
            print(f"  candidate  {c['id']}  {c['name'] or '-'}  born {c['birth_date'] or '-'}  {c['status']}")
    return 0


def cmd_review_decide(args: argparse.Namespace) -> int:
    from gateway.cli import OperatorError, _config_from

    config = _config_from(args)
    conn = _connection(args)
    action = REVIEW_ACCEPT if args.accept else REVIEW_REJECT
    candidate = getattr(args, "candidate", None)
    target = f"review {args.review}" + (f" candidate {candidate}" if candidate else "")
    try:
        result = audited_write(config, conn, AuditEntry(CLI, actor(args), action, target=target),
                               lambda c, now: person_index.decide_review(c, now, args.review, args.accept, candidate,
                                                                         actor(args), args.note))
    except ReviewError as e:
        record(config, AuditEntry(CLI, actor(args), action, target=target, outcome=REFUSED, reason=str(e)))
        raise OperatorError(str(e)) from None
    finally:
        conn.close()
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        chosen = f" with {result['chosen']}" if result["chosen"] else ""
        print(f"review {result['review']} {result['state']}{chosen} by {result['decided_by']}"
              + ("; a running gateway tells the record stores at its next refresh" if args.accept else ""))
    return 0
