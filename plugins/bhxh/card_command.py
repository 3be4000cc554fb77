"""``hssk-gateway bhxh card CARD [--name NAME --birth DATE]``: one card checked at the BHXH portal
now, as the reception desk would, with the same client, codes and actions as the enrichment.

The card, the holder's name and birth date are masked unless ``--reveal`` (as in ``persons
show``); a reveal is logged and recorded in the audit log with the OS user. A new card (003/004) is added to the person index of
the data dir, as the enrichment does. Exit status: 0 the card is usable (000–004), 3 it is not
(the ERR the enrichment would give), 1 it could not be checked (the portal silent or failing,
the circuit open, our staff or account refused), 2 a configuration error.
"""
from __future__ import annotations

import argparse
import getpass
import json

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.plugin import Command, CommandContext, CommandError, ConfigError, mask_identifier, mask_name
from plugins.bhxh.card_check import CardChecker, CardNotChecked, CardResult
from plugins.bhxh.card_codes import NEW_CARD, USABLE
from plugins.bhxh.card_enrichment import card_check_table, new_card_event, read_config
from plugins.bhxh.card_client import PortalClient

log = Logger(namespace="hssk.bhxh.card")

#: Exit status of a card the portal knows but that cannot be used as it is.
NOT_USABLE = 3


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("card", help="the BHYT card code (15 characters) or the 10-digit BHXH number")
    parser.add_argument("--name", default="", help="the holder's full name, as on the card")
    parser.add_argument("--birth", default="", help="birth date yyyymmdd, or the year alone")
    parser.add_argument("--reveal", action="store_true", help="show the card, name and birth date in clear")
    parser.add_argument("--json", action="store_true", help="the result as JSON")


def check_card(reactor, settings, card: str, name: str, birth: str) -> Deferred:
    """One check with a client of its own; fires with a :class:`CardResult` or fails with
    :class:`CardNotChecked`, the client's connections closed either way."""
    client = PortalClient(reactor, reactor, settings.account(), settings.timeout_seconds)
    d = CardChecker(client, settings.check, reactor).check(card, name, birth)

    def closed(result):
        return client.close().addCallback(lambda _: result)

    return d.addBoth(closed)


def describe(result: CardResult, reveal: bool) -> dict:
    """The result as the operator sees it: masked unless ``reveal``."""
    shown = result.as_plain()
    if not reveal:
        for key in ("card", "new_card"):
            shown[key] = mask_identifier(shown[key]) if shown[key] else ""
        shown["holder_name"] = mask_name(shown["holder_name"])
        shown["birth_date"] = shown["birth_date"][:4]
    return shown


def print_result(shown: dict) -> None:
    print(f"card        {shown['card']}")
    print(f"result      {shown['code']} {shown['meaning']} ({shown['kind']})")
    print(f"action      {shown['action']}")
    if shown["holder_name"] or shown["birth_date"]:
        print(f"holder      {shown['holder_name'] or '-'}, born {shown['birth_date'] or '-'}")
    if shown["valid_to"]:
        print(f"valid       {shown['valid_from']}–{shown['valid_to']}, registered at {shown['registered_facility']}")
    if shown["new_card"]:
        print(f"new card    {shown['new_card']}, valid {shown['new_valid_from']}–{shown['new_valid_to']}, registered at "
              f"{shown['new_registered_facility']}")


def card_command(args: argparse.Namespace, context: CommandContext) -> int:
    settings = read_config(card_check_table(context.config))
    settings.account()
    outcome = run_reactor(lambda reactor: check_card(reactor, settings, args.card.strip(), args.name, args.birth))
    if isinstance(outcome, Failure):
        if outcome.check(CardNotChecked):
            raise CommandError(f"card {mask_identifier(args.card.strip())} not checked: {outcome.value.reason}")
        outcome.raiseException()
    result: CardResult = outcome
    if args.reveal:
        log.info("card check shown in clear to {os_user}", os_user=getpass.getuser(), command="bhxh card")
        context.audit("persons.reveal", f"bhxh card {mask_identifier(args.card.strip())}")
    shown = describe(result, args.reveal)
    if args.json:
        print(json.dumps(shown, ensure_ascii=False, indent=2))
    else:
        print_result(shown)
    if result.kind == NEW_CARD and result.new_card:
        print(f"person index: {_announce(context, result)}")
    return 0 if result.kind in (USABLE, NEW_CARD) else NOT_USABLE


def _announce(context: CommandContext, result: CardResult) -> str:
    try:
        journal = context.journal()
    except ConfigError as e:
        return f"not updated ({e})"
    queued = []
    journal.queue_event(new_card_event(result, "", read_config(card_check_table(context.config)).new_card_destinations)).addBoth(
        queued.append)
    outcome = queued[0]
    if isinstance(outcome, Failure):
        return f"not updated ({outcome.getErrorMessage()})"
    return f"new card queued (journal message {outcome.message_id}{', already known' if outcome.duplicate else ''})"


def run_reactor(work) -> object:
    """Run the reactor until ``work(reactor)``'s Deferred fires: its result, or its Failure."""
    from twisted.internet import reactor

    outcome = []

    def start() -> None:
        maybeDeferred(work, reactor).addBoth(outcome.append).addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    return outcome[0]


CARD = Command("card", "check one BHYT card at the BHXH portal now (KQNhanLichSuKCB2024): its result code and what "
                       "to do", card_command, arguments=_arguments)
