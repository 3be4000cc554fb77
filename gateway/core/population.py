"""A population list's persons into the person index and the outbox, a batch at a time.

A district's population or card list names a million persons, and most of them are unchanged
from the list before. Fed row by row through the pipeline (as ``hssk-gateway feed`` does), each
row would be a journal row, a decision and a person resolved one by one: about 1,600 rows a
second. Here a plugin that read the list hands over a batch of the rows that changed (new, or a
field or identifier that differs; it knows which by its own row digests) and, in ONE transaction:

- the person index finds or creates each row's person in bulk (:func:`index_list`): a new card
  for a known BHXH number joins that person's identifier history, a CCCD on the row too;
- each person's residence (province, district, commune) is recorded (``person_residence``);
- the persons are routed through the pipeline's route step (:meth:`Pipeline.route`): every
  destination whose routes take the batch's ``kind`` gets each person's record set rendered as
  it would get a message's, privacy-filtered, ordered by the person's id, so it queues behind
  what that person sent before;
- one journal row holds the batch (transport ``import``, sender ``LIST|<plugin>``, control id the
  digest of its rows, the rows as the list gave them): the outbox rows' message, what operators
  see (``messages list --sender LIST``), and what makes the same batch imported twice a repeat
  that queues nothing;
- the plugin's own task (its row digests, its checkpoint) runs in the same transaction, so what
  it records as done is exactly what was committed.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace

from gateway.core.documents import DocumentSource
from gateway.core.pipeline import Decision, Pipeline
from gateway.core.store import journal_decisions
from gateway.model.envelope import Envelope
from gateway.model.outcome import ACCEPT
from gateway.model.records import Person, RecordSet
from gateway.rules.person_index import PersonFacts, identifier_keys, index_list, person_key, record_residences

#: The transport of a list batch's journal row, and its sender's prefix (``LIST|bhxh``).
IMPORT_TRANSPORT = "import"
LIST_SENDER_PREFIX = "LIST|"


@dataclass(frozen=True)
class ListedPersons:
    """One batch of a population list's persons, as a plugin hands it over
    (:meth:`gateway.core.plugin_journal.PluginJournal.import_persons`).

    ``persons`` in the list's order, each with its identifiers (a BHYT card with its validity and
    MA_DKBD), name, birth date, sex and address codes; ``identities`` tell them apart in the
    outbox's idempotency keys (the BHXH number: unique in a list); ``rows`` are each person's row
    as the list gave it, one line of text each: the journal row's bytes (what operators see with
    ``messages show --raw``, and what the plugin's source reads back for ``messages replay``), so
    that journaling a batch costs no rendering of its own. ``kind`` is the message type
    destinations route by (``message_types``), ``source`` the registered source name the journal
    row carries, ``facility`` the facility the list is about, if any."""

    kind: str
    source: str
    persons: tuple[Person, ...]
    identities: tuple[str, ...]
    rows: tuple[str, ...]
    facility: str = ""

    def __post_init__(self) -> None:
        if not len(self.persons) == len(self.identities) == len(self.rows):
            raise ValueError(f"{len(self.persons)} persons, {len(self.identities)} identities and {len(self.rows)} "
                             f"rows: one of each per person")
        if any("\n" in row for row in self.rows):
            raise ValueError("a row is one line of text")
        if not self.source or not self.kind:
            raise ValueError("a batch names its source and kind")


@dataclass(frozen=True)
class ImportedPersons:
    """What became of a batch: its journal row (None for an empty batch), each person's id in the
    index (None for a person without an identifier), the outbox rows queued, and whether the
    batch repeated one journaled before (nothing queued again)."""

    message_id: int | None
    person_ids: tuple[str | None, ...]
    queued: int
    duplicate: bool = False


def import_listed(conn: sqlite3.Connection, now: float, pipeline: Pipeline, unordered: frozenset[str], plugin: str,
                  batch: ListedPersons) -> ImportedPersons:
    """Index, record and route ``batch`` inside the caller's transaction (see the module)."""
    if not batch.persons:
        return ImportedPersons(None, (), 0)
    facility = batch.facility
    facts = []
    for person in batch.persons:
        keys = identifier_keys(person.identifiers)
        facts.append(PersonFacts(person_key(keys[0][0]) if keys else "", keys, (), person.full_name,
                                 person.birth_date, person.sex, facility, plugin))
    person_ids = index_list(conn, facts, now)
    record_residences(conn, [(pid, p.address.province, p.address.district, p.address.commune)
                             for pid, p in zip(person_ids, batch.persons) if pid and p.address is not None],
                      plugin, now)
    raw = "\n".join(batch.rows).encode("utf-8")
    origin = DocumentSource.named_by_content(raw, LIST_SENDER_PREFIX + plugin, batch.kind, batch.facility,
                                             records=len(batch.persons))
    # Made as routed: with no destination taking the kind, no record set is made at all.
    record_sets = ((RecordSet(batch.kind, person=person), identity)
                   for person, identity in zip(batch.persons, batch.identities))
    routed = pipeline.route(origin, record_sets, plugin)
    by_key = {f.key: pid for f, pid in zip(facts, person_ids) if pid and f.key != pid}
    outbox = tuple(replace(i, ordering_key=by_key[i.ordering_key]) if i.ordering_key in by_key else i
                   for i in routed.outbox)
    decision = Decision(Envelope(raw, IMPORT_TRANSPORT, plugin, now), None, ACCEPT, (), plugin, outbox=outbox,
                        document=origin, not_routed=tuple(routed.not_routed), source_name=batch.source)
    [committed] = journal_decisions(conn, [decision], now, unordered)
    return ImportedPersons(committed.message_id, tuple(person_ids), 0 if committed.duplicate else len(outbox),
                           committed.duplicate)

