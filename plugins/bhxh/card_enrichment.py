"""The card check as an enrichment: a configured facility's records with a BHYT card are checked
at the BHXH portal before they are acknowledged.

Through the contract's remote lookups (``hssk_lookups`` → ``hssk_perform_lookup`` on the reactor
→ ``hssk_check_lookups``), so no pipeline worker waits for the portal:

- a usable card (000–002) passes without a word;
- a new card (003/004) passes with an informational ERR naming the new card (masked), and the
  new card is added to the person's identifiers in the person index: an event ``BHYT^NEWCARD``
  whose person carries the new card and the old one (the index keeps the history and the person;
  the newest card becomes the current one). Its record set goes where the routes send that kind,
  or to ``new_card_destinations`` only when the setting names some;
- an unusable card or wrong data (010, 05x, 06x, 070, 110, 12x, 130) is an ERR 103 at the card
  field (the name or birth date field for 060/061/070): severity ``E`` (AE) with
  ``unusable = "error"``, the default, or ``W`` (AA) with ``unusable = "warning"``;
- a card that could not be checked (no answer within ``timeout_seconds``, the circuit open, the
  rate limit, a server error 100/101/500, our staff or account refused 054/055/401) never
  blocks intake: with ``not_checked = "warning"`` (the default) the record is accepted with a
  warning ERR that says what happened; with ``"reject"`` it is answered AR 207, to be sent again.

Settings, ``[plugins.bhxh.card_check]`` (only ``url``, ``username``, ``password`` or
``password_env``, ``staff_name`` and ``staff_cccd`` are required, and only once a facility is
listed or ``hssk-gateway bhxh card`` is run): see the plugin's README.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.plugin import (ConfigError, Event, GatewayConfig, Identifier, Issue, Lookup, LookupAnswer, Person,
                            PluginJournal, RecordSet, Unavailable, mask_identifier)
from plugins.bhxh.card_check import CardChecker, CardResult, CheckSettings
from plugins.bhxh.card_codes import BIRTH, NAME, NEW_CARD, USABLE
from plugins.bhxh.card_client import PortalAccount, PortalClient

log = Logger(namespace="hssk.bhxh.card")

SERVICE = "bhxh_card"
NEW_CARD_KIND = "BHYT^NEWCARD"
SECTION = "plugins.bhxh.card_check"
_XML_KINDS = ("XML130", "XML130^CHECKIN")
_HL7_FIELDS = {"card": "PID^1^3", NAME: "PID^1^5", BIRTH: "PID^1^7"}
_XML_FIELDS = {"card": "XML1^1^MA_THE_BHYT", NAME: "XML1^1^HO_TEN", BIRTH: "XML1^1^NGAY_SINH"}
_FIELD_NAMES = {"card": "MA_THE_BHYT", NAME: "HO_TEN", BIRTH: "NGAY_SINH"}


@dataclass(frozen=True)
class CardCheckConfig:
    """``[plugins.bhxh.card_check]``, validated."""

    url: str = ""
    username: str = ""
    password: str = ""
    staff_name: str = ""
    staff_cccd: str = ""
    facilities: tuple[str, ...] = ()
    unusable: str = "error"
    not_checked: str = "warning"
    timeout_seconds: float = 3.0
    max_concurrent: int = 4
    new_card_destinations: tuple[str, ...] = ()
    check: CheckSettings = CheckSettings()

    @property
    def enriches(self) -> bool:
        return bool(self.facilities)

    def checks(self, facility: str) -> bool:
        return "*" in self.facilities or facility in self.facilities

    def account(self) -> PortalAccount:
        """The account to ask with; a :class:`ConfigError` naming what is missing."""
        for key in ("url", "username", "password", "staff_name", "staff_cccd"):
            if not getattr(self, key):
                raise ConfigError(f"{SECTION}.{key}", "required to check cards at the BHXH portal"
                                  + (" (or password_env: the environment variable that holds it)"
                                     if key == "password" else ""))
        return PortalAccount(self.url, self.username, self.password, self.staff_name, self.staff_cccd)


def card_check_table(config: GatewayConfig) -> object:
    """``[plugins.bhxh.card_check]`` of the configuration, as written (empty when absent)."""
    return config.plugin_settings("bhxh").get("card_check", {})


def read_config(table: object, environ: Mapping[str, str] = os.environ) -> CardCheckConfig:
    """The ``card_check`` table of ``[plugins.bhxh]``: every key checked, unknown ones refused."""
    if not isinstance(table, Mapping):
        raise ConfigError(SECTION, "a table of settings")
    check_keys = {f.name: f.default for f in fields(CheckSettings)}
    own = {f.name for f in fields(CardCheckConfig)} - {"check"} | {"password_env"}
    unknown = sorted(set(table) - own - set(check_keys))
    if unknown:
        raise ConfigError(f"{SECTION}.{unknown[0]}", f"unknown setting; known: {', '.join(sorted(own | set(check_keys)))}")
    password = _text(table, "password")
    if not password and table.get("password_env"):
        password = environ.get(_text(table, "password_env"), "")
        if not password:
            raise ConfigError(f"{SECTION}.password_env", f"the environment variable {table['password_env']} is not set")
    settings = CardCheckConfig(
        url=_text(table, "url"), username=_text(table, "username"), password=password,
        staff_name=_text(table, "staff_name"), staff_cccd=_text(table, "staff_cccd"),
        facilities=_texts(table, "facilities"), unusable=_choice(table, "unusable", ("error", "warning")),
        not_checked=_choice(table, "not_checked", ("warning", "reject")),
        timeout_seconds=_number(table, "timeout_seconds", 3.0), max_concurrent=int(_number(table, "max_concurrent", 4)),
        new_card_destinations=_texts(table, "new_card_destinations"),
        check=CheckSettings(**{key: type(default)(_number(table, key, default)) for key, default in check_keys.items()}))
    if settings.check.breaker_failures < 1:
        raise ConfigError(f"{SECTION}.breaker_failures", "at least 1")
    if settings.enriches:
        settings.account()
    return settings


def _text(table: Mapping[str, Any], key: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"{SECTION}.{key}", "a string")
    return value.strip()


def _texts(table: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{SECTION}.{key}", "a list of strings")
    return tuple(v.strip() for v in value)


def _choice(table: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = table.get(key, choices[0])
    if value not in choices:
        raise ConfigError(f"{SECTION}.{key}", f"one of {', '.join(choices)}, got {value!r}")
    return value


def _number(table: Mapping[str, Any], key: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{SECTION}.{key}", f"a number not below 0, got {value!r}")
    return value


def facility_of(records: RecordSet, envelope) -> str:
    """The facility a record set is from: the authenticated client's, else the episode's."""
    if envelope is not None and envelope.facility:
        return envelope.facility
    if records.encounter is not None and records.encounter.facility:
        return records.encounter.facility
    return ""


def location(records: RecordSet, field: str) -> str:
    """ERR-2 of the card, name or birth date: where a vendor profile read the card, else the
    field's place in XML 130 or HL7 (PID-3, where the identity rules name the card too)."""
    if field == "card" and records.location_of("MA_THE_BHYT"):
        return records.location_of("MA_THE_BHYT")
    return (_XML_FIELDS if records.kind in _XML_KINDS else _HL7_FIELDS)[field]


def new_card_event(result: CardResult, facility: str, destinations: tuple[str, ...]) -> Event:
    """The person index learns the new card: the person as the two cards name them. The key is a
    hash of the two, so the same news is queued once however often the old card is checked."""
    digest = hashlib.sha256(f"{result.card}|{result.new_card}".encode()).hexdigest()[:24]
    person = Person(identifiers=(
        Identifier("BHYT", result.new_card, valid_from=result.new_valid_from, valid_to=result.new_valid_to,
                   registered_facility=result.new_registered_facility),
        Identifier("BHYT", result.card, valid_from=result.valid_from, valid_to=result.valid_to,
                   registered_facility=result.registered_facility)))
    return Event("bhxh", f"new-card:{digest}", NEW_CARD_KIND, RecordSet(kind=NEW_CARD_KIND, person=person),
                 facility=facility, destinations=destinations)


class CardEnrichment:
    """The hooks' work, for :mod:`plugins.bhxh.plugin` to delegate to. ``clock`` is the checker's
    time (the reactor when None)."""

    def __init__(self, clock=None) -> None:
        self.settings = CardCheckConfig()
        self.journal: PluginJournal | None = None
        self.checker: CardChecker | None = None
        self._clock = clock

    def configure(self, config: GatewayConfig) -> None:
        """A new configuration (a start, a restart in one process) starts with a new checker: a
        new token, an empty cache, a closed circuit."""
        self.settings = read_config(card_check_table(config))
        if self.checker is not None:
            self.checker.client.close()
            self.checker = None

    def checker_for(self, reactor) -> CardChecker:
        """The one checker of this process (its token, cache, rate limit and breaker are shared
        by every check), made on first use."""
        if self.checker is None:
            clock = self._clock or reactor
            client = PortalClient(reactor, clock, self.settings.account(), self.settings.timeout_seconds)
            self.checker = CardChecker(client, self.settings.check, clock)
        return self.checker

    def lookups(self, records: RecordSet, envelope) -> list[Lookup] | None:
        settings = self.settings
        person = records.person
        card = person.identifier("BHYT") if person is not None else ""
        facility = facility_of(records, envelope)
        if not card or not settings.enriches or not settings.checks(facility):
            return None
        return [Lookup(SERVICE, card, (("name", person.full_name), ("birth", person.birth_date), ("facility", facility)),
                       timeout_seconds=settings.timeout_seconds, max_concurrent=settings.max_concurrent)]

    def perform(self, lookup: Lookup, reactor) -> Deferred | None:
        """A ``bhxh_card`` lookup, when this gateway checks cards (else another plugin of that
        service may: the first answer wins)."""
        if lookup.service != SERVICE or not self.settings.enriches:
            return None
        params = dict(lookup.params)
        d = self.checker_for(reactor).check(lookup.key, params.get("name", ""), params.get("birth", ""))
        return d.addCallback(self._answered, params.get("facility", ""))

    def _answered(self, result: CardResult, facility: str) -> dict:
        if result.kind == NEW_CARD and result.new_card and not result.cached:
            self.announce(result, facility)
        return result.as_plain()

    def announce(self, result: CardResult, facility: str) -> Deferred | None:
        """Queue the new card for the person index; logged, never the checked message's concern."""
        if self.journal is None:
            log.warn("new BHYT card {card} not added to the person index: no journal", card=mask_identifier(result.card))
            return None
        d = self.journal.queue_event(new_card_event(result, facility, self.settings.new_card_destinations))

        def queued(outcome):
            log.info("new BHYT card {new} for {card} queued for the person index ({ack})",
                     new=mask_identifier(result.new_card), card=mask_identifier(result.card), ack=outcome.ack_code)
            return outcome

        def failed(failure):
            log.error("new BHYT card {new} for {card} not queued: {error}", new=mask_identifier(result.new_card),
                      card=mask_identifier(result.card), error=failure.getErrorMessage())

        return d.addCallbacks(queued, failed)

    def judge(self, records: RecordSet, answers: Mapping[Lookup, LookupAnswer]) -> list[Issue] | None:
        issues: list[Issue] = []
        for lookup, answer in answers.items():
            if lookup.service != SERVICE or not self.settings.enriches:
                continue
            card = mask_identifier(lookup.key)
            where = location(records, "card")
            if not answer.answered:
                text = (f"{_FIELD_NAMES['card']}: BHYT card {card} not checked at the BHXH portal ({answer.outcome}"
                        + (f": {answer.error}" if answer.error else "") + ")")
                if self.settings.not_checked == "reject":
                    raise Unavailable([Issue(207, f"{text}; send again later", where)])
                issues.append(Issue(0, text, where, "W"))
                continue
            result = CardResult(**answer.value)
            if result.kind == USABLE:
                continue
            if result.kind == NEW_CARD:
                issues.append(Issue(0, f"{_FIELD_NAMES['card']}: BHYT card {card}: BHXH {result.code} {result.meaning}; "
                                       f"the new card is {mask_identifier(result.new_card)}: {result.action}", where, "I"))
                continue
            severity = "E" if self.settings.unusable == "error" else "W"
            issues.append(Issue(103, f"{_FIELD_NAMES[result.field]}: BHYT card {card} refused by the BHXH portal, "
                                     f"{result.code} {result.meaning}: {result.action}",
                                location(records, result.field), severity))
        return issues or None
