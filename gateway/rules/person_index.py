"""The person index: who each accepted record set is about, across cards, re-issued ids and merges.

Every accepted record set resolves to a *person*, a row of ``persons`` with an opaque id. A person
is found by any identifier ever seen for it (``person_identifiers``, the identifier history), and
the most durable one decides when several name different persons: the 12-digit personal id
(CCCD), then the BHXH number (also read from the last ten digits of a 15-character BHYT card, so a
renewed card finds the same person), the BHYT card, the passport, the facility's record number
(scoped by its assigning authority, else the sending facility). A person first seen gets as its id
the outbox ordering key its record set would have had without the index (:func:`ordering_key`), so
rows queued before the index existed and rows queued after stay in one order. From then on the
outbox orders each destination's rows by the person, not by the card: a re-issued CCCD or a new
card keeps the person, and their rows stay in order.

Resolution runs in the journal writer's transaction (:func:`resolve_persons`, called from
``journal_decisions``), in the order the batch is journaled, so two record sets of a new person in
one group commit find one person. The hot path is one indexed lookup per record set (all its
identifiers in one ``IN``); rows are written only for what is new.

**Links.** ``person_relations`` holds mother → child and guardian → child; a merge retires a
person (``persons.replaced_by``) and moves its identifiers and relations to the survivor, so a
lookup never follows a chain. An HL7 merge (ADT^A40, MRG-1 as ``Person.previous_identifiers``)
retires the person its previous identifiers name.

**Provisional persons.** A record set whose person is ``provisional`` (a plugin marks a newborn
registered under the mother's name, "CON BÀ …") is a child of the mother its record names: a
provisional person under her, with birth date, sex, facility and birth order. A later record that
names a child on its own (its own identifiers, the same mother, the same birth day and, for twins,
the same birth order) links the provisional person automatically: the record's identifiers are
added to it and it is no longer provisional, so everything about the child keeps one ordering key.
The same happens when the child's own record came first and the placeholder later. What cannot be
told apart goes to a review queue (``person_reviews``): twins without a birth order, two candidates,
a mother the record names by identifiers the index does not know while a provisional child under a
mother of that name waits. An operator's accept merges the two, the provisional person surviving.
Each link is logged (``person_identity_links``) and announced to the plugins after its commit
(``hssk_identity_linked``, :mod:`gateway.core.identity_updates`), so they can tell the record stores.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlite_utils

from gateway.model.masking import mask_name
from gateway.model.records import Identifier, Person, RecordSet, RelatedPerson

#: Identifier systems the index keys persons by, most durable first (vn-standards §3).
DURABILITY = ("CCCD", "BHXH", "BHYT", "PASSPORT", "MR")
_RANK = {system: n for n, system in enumerate(DURABILITY)}
#: Systems a person has one number of for life (save a re-issue): a record naming another one is
#: another person, whatever card it shares.
_FOR_LIFE = ("CCCD", "BHXH")
_BHYT_CARD = re.compile(r"[A-Z]{2}\d{13}")
#: The combining diacritical marks (U+0300–U+036F): every mark a Vietnamese letter decomposes into.
_VIETNAMESE_MARKS = re.compile("[\u0300-\u036f]+")

PROVISIONAL_REVIEW_REASONS = ("twins_without_birth_order", "two_candidates", "mother_identifiers_changed")

#: (key, system, value): one identifier as the index keys it.
IdKey = tuple[str, str, str]


def person_key(identity: str) -> str:
    """The id of the person an identity (``CCCD:079085000123``) names: a hash, so that neither the
    outbox's ordering keys nor the index's ids hold an identifier in clear. The outbox orders rows
    of a record set the index has not resolved by the same hash (``outbox.ordering_key``)."""
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:24]


def fold_name(name: str) -> str:
    """A name as searched and compared: lower case, diacritics and đ taken off, single spaces
    (``Nguyễn Thị  Ánh`` → ``nguyen thi anh``), so an ASCII-only sender finds the same person.
    Folded a word at a time: a population list's million names are made of a few thousand
    syllables, each folded once (:func:`_fold_word`)."""
    return " ".join(filter(None, map(_fold_word, name.split())))


@functools.lru_cache(maxsize=1 << 16)
def _fold_word(word: str) -> str:
    decomposed = unicodedata.normalize("NFD", word.replace("đ", "d").replace("Đ", "D"))
    plain = _VIETNAMESE_MARKS.sub("", decomposed)
    if not plain.isascii():  # marks outside the block Vietnamese uses, or letters of another script
        plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return plain.lower()


def identifier_keys(identifiers: Iterable[Identifier], facility: str = "") -> tuple[IdKey, ...]:
    """The identifiers the index keys by, most durable first, each once. A record number is only
    unique where it was given: it is scoped by its assigning authority, else by ``facility``. A
    15-character BHYT card also gives the BHXH number it carries (its last ten digits), so a
    renewed card, or a mother named by her new card, finds the same person."""
    found: dict[str, IdKey] = {}
    for identifier in identifiers:
        system = identifier.system
        if system not in _RANK:
            continue
        value = identifier.value.strip()
        if system == "BHYT" or system == "PASSPORT":
            value = value.upper()
        if not value:
            continue
        key = f"MR:{identifier.assigner or facility}:{value}" if system == "MR" else f"{system}:{value}"
        if key not in found:
            found[key] = (key, system, value)
        if system == "BHYT" and _BHYT_CARD.fullmatch(value):
            carried = f"BHXH:{value[5:]}"
            if carried not in found:
                found[carried] = (carried, "BHXH", value[5:])
    return tuple(sorted(found.values(), key=_by_rank))


def _by_rank(key: IdKey) -> int:
    return _RANK[key[1]]


@dataclass(frozen=True)
class PersonFacts:
    """What the index needs of one record set's person, read on the pipeline worker (where the
    records are) and carried with the decision to the journal writer, which resolves it.

    ``key`` is the record set's outbox ordering key as :func:`gateway.core.outbox.ordering_key`
    made it: the outbox rows carry it until the writer replaces it with the person's id."""

    key: str
    identifiers: tuple[IdKey, ...]
    previous: tuple[IdKey, ...] = ()
    name: str = ""
    birth_date: str = ""
    sex: str = ""
    facility: str = ""
    plugin: str = ""
    provisional: str = ""
    multiple_birth: str = ""
    birth_order: str = ""
    mother: tuple[IdKey, ...] = ()
    mother_name: str = ""
    guardian: tuple[IdKey, ...] = ()
    guardian_name: str = ""


def person_facts(records: RecordSet, key: str, facility: str, plugin: str) -> PersonFacts | None:
    """The facts of ``records``'s person, or None when there is nobody the index could find again
    (no person, or no identifier and no mother to file a provisional child under)."""
    person = records.person
    if person is None:
        return None
    identifiers = identifier_keys(person.identifiers, facility)
    mother = next((r for r in person.related if r.relationship == "mother"), None)
    guardian = next((r for r in person.related if r.relationship == "guardian"), None)
    mother_keys = identifier_keys(mother.identifiers, facility) if mother else ()
    if not identifiers and not (person.provisional and mother_keys):
        return None
    return PersonFacts(
        key=key, identifiers=identifiers, previous=identifier_keys(person.previous_identifiers, facility),
        name=person.full_name, birth_date=person.birth_date, sex=person.sex, facility=facility, plugin=plugin,
        provisional=person.provisional, multiple_birth=person.multiple_birth, birth_order=person.birth_order,
        mother=mother_keys, mother_name=_name_of(mother),
        guardian=identifier_keys(guardian.identifiers, facility) if guardian else (), guardian_name=_name_of(guardian))


def _name_of(related) -> str:
    return " ".join(p for p in (related.family, related.middle, related.given) if p) if related else ""


# --- schema -------------------------------------------------------------------------------------

def create_person_index(db: sqlite_utils.Database) -> None:
    """The index's tables (a core schema step: the journal writer resolves every accepted record
    set against them, so they exist wherever the journal does)."""
    db["persons"].create({
        "id": str, "created_at": float, "updated_at": float, "name": str, "name_folded": str, "birth_date": str,
        "sex": str, "facility": str, "created_by": str, "provisional": str, "multiple_birth": str,
        "birth_order": str, "replaced_by": str, "replaced_at": float,
    }, pk="id", not_null={"created_at"})
    db["persons"].create_index(["name_folded", "birth_date"], index_name="persons_by_name")
    db.execute("CREATE INDEX persons_provisional ON persons (created_at) "
               "WHERE provisional IS NOT NULL AND replaced_by IS NULL")
    db.execute("CREATE INDEX persons_provisional_by_birth ON persons (birth_date) "
               "WHERE provisional IS NOT NULL AND replaced_by IS NULL")
    db["person_identifiers"].create({
        "key": str, "person_id": str, "system": str, "value": str, "scope": str, "first_seen": float,
    }, pk="key", not_null={"person_id", "system", "value"})
    db["person_identifiers"].create_index(["person_id"], index_name="person_identifiers_by_person")
    db["person_identifiers"].create_index(["value"], index_name="person_identifiers_by_value")
    db["person_relations"].create({
        "child": str, "kind": str, "parent": str, "created_at": float,
    }, pk=("child", "kind", "parent"))
    db["person_relations"].create_index(["parent", "kind"], index_name="person_relations_by_parent")
    db["person_identity_links"].create({
        "id": int, "created_at": float, "kind": str, "how": str, "person_id": str, "other_id": str,
        "provisional_id": str, "created_by": str, "previous": str, "review_id": int, "announced_at": float,
    }, pk="id", not_null={"created_at", "kind", "how", "person_id"})
    db.execute("CREATE INDEX person_identity_links_pending ON person_identity_links (id) WHERE announced_at IS NULL")
    db["person_reviews"].create({
        "id": int, "created_at": float, "reason": str, "subject": str, "candidates": str, "state": str,
        "decided_at": float, "decided_by": str, "chosen": str, "note": str,
    }, pk="id", not_null={"created_at", "reason", "subject", "candidates", "state"})
    db["person_reviews"].create_index(["state", "id"], index_name="person_reviews_by_state")
    db["person_reveals"].create({
        "id": int, "revealed_at": float, "operator": str, "os_user": str, "command": str, "persons": str,
    }, pk="id", not_null={"revealed_at", "os_user", "command"})


def create_person_residence(db: sqlite_utils.Database) -> None:
    """Where each person lives, as a population list says (province, district and commune codes,
    QĐ 124/2004): one row per person, the latest list's, so coverage by district can be counted
    (``hssk-gateway report coverage``). ``source`` names the list's plugin."""
    db["person_residence"].create({
        "person_id": str, "province": str, "district": str, "commune": str, "source": str, "updated_at": float,
    }, pk="person_id", not_null={"updated_at"})
    db["person_residence"].create_index(["province", "district"], index_name="person_residence_by_district")


# --- resolution, in the journal writer's transaction --------------------------------------------

@dataclass(frozen=True)
class Resolved:
    """What the index made of a batch's record sets: each facts' ordering key → its person's id
    (only those that differ), and how many identity links it made (announced after the commit)."""

    keys: dict[str, str]
    links: int


def resolve_persons(conn: sqlite3.Connection, facts: Sequence[PersonFacts], now: float) -> Resolved:
    """Resolve each record set's person in order, creating and linking as needed (see the module's
    docstring). Runs inside the caller's transaction."""
    index = _Index(conn, now)
    keys: dict[str, str] = {}
    for f in facts:
        person = index.resolve(f)
        if person is not None and person != f.key:
            keys[f.key] = person
    return Resolved(keys, index.links)


#: Bound values per ``IN`` list of the bulk path (SQLite allows 32,766 since 3.32).
_IN_CHUNK = 2000


def index_list(conn: sqlite3.Connection, facts: Sequence[PersonFacts], now: float) -> list[str | None]:
    """The persons of a population list's rows, in order: found by their identifiers, or created,
    in bulk. A list names a million persons, and :func:`resolve_persons` costs one lookup (and a
    few writes) per record set; here a batch costs a few ``IN`` queries and one ``executemany``
    per table, with the same rules as one by one: a row whose identifiers are all unknown is a new
    person (its id made from its most durable identifier, as :func:`resolve_persons` makes it); a
    row whose known identifiers all name one person, identified and holding no other CCCD or
    BHXH number than the row's, is that person, its new identifiers (a new card, a CCCD) added to
    its history and its name, birth date and sex updated. Any other row (identifiers naming two
    persons, a provisional person, another for-life number) is resolved by :func:`resolve_persons`
    itself. Rows without an identifier are None. Runs inside the caller's transaction."""
    batch = _ListBatch(conn, now)
    batch.load([k for f in facts for k, _, _ in f.identifiers], [f.key for f in facts if f.key])
    found = [batch.resolve(f) for f in facts]
    batch.flush()
    return found


class _ListBatch:
    """What :func:`index_list` knows and has yet to write within one batch."""

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self.conn = conn
        self.now = now
        self.owner: dict[str, str] = {}  # identifier key -> person id
        self.persons: dict[str, tuple[str | None, str, str, str]] = {}  # id -> provisional, name, birth, sex
        self.for_life: dict[tuple[str, str], set[str]] = {}  # (person, CCCD|BHXH) -> its keys
        self.new_persons: list[tuple] = []
        self.new_identifiers: list[tuple] = []
        self.updates: dict[str, PersonFacts] = {}

    def load(self, keys: Sequence[str], new_ids: Sequence[str] = ()) -> None:
        """What the index holds of ``keys``: their persons, and the persons ``new_ids`` (the ids
        rows would give a new person) name already."""
        keys = list(dict.fromkeys(keys))
        for chunk in _chunks(keys):
            self.owner.update(self.conn.execute(
                f"SELECT key, person_id FROM person_identifiers WHERE key IN ({', '.join('?' * len(chunk))})",
                chunk).fetchall())
        people = list(({self.owner[k] for k in keys if k in self.owner} | set(new_ids)) - set(self.persons))
        for chunk in _chunks(people):
            marks = ", ".join("?" * len(chunk))
            for person, provisional, name, birth_date, sex in self.conn.execute(
                    f"SELECT id, provisional, coalesce(name, ''), coalesce(birth_date, ''), coalesce(sex, '') "
                    f"FROM persons WHERE id IN ({marks})", chunk):
                self.persons[person] = (provisional, name, birth_date, sex)
            for person, system, key in self.conn.execute(
                    f"SELECT person_id, system, key FROM person_identifiers WHERE person_id IN ({marks}) "
                    f"AND system IN ('CCCD', 'BHXH')", chunk):
                self.for_life.setdefault((person, system), set()).add(key)

    def resolve(self, f: PersonFacts) -> str | None:
        if not f.identifiers:
            return None
        named = {self.owner[k] for k, _, _ in f.identifiers if k in self.owner}
        if not named:
            person = person_key(f.identifiers[0][0])
            if person not in self.persons:
                self.new_persons.append((person, self.now, self.now, f.name, fold_name(f.name), f.birth_date, f.sex,
                                         f.facility, f.plugin))
                self.persons[person] = (None, f.name, f.birth_date, f.sex)
                self.attach(person, f.identifiers)
                return person
        elif len(named) == 1:
            [person] = named
            known = self.persons.get(person)
            if known is not None and known[0] is None and not self.names_another(person, f):
                self.attach(person, [k for k in f.identifiers if k[0] not in self.owner])
                if any(new and new != old for new, old in zip((f.name, f.birth_date, f.sex), known[1:])):
                    self.updates[person] = f
                    self.persons[person] = (None, *(new or old for new, old in
                                                    zip((f.name, f.birth_date, f.sex), known[1:])))
                return person
        return self.one_by_one(f)

    def names_another(self, person: str, f: PersonFacts) -> bool:
        """As :meth:`_Index.names_another`: the row's CCCD (or BHXH number) is not the person's own,
        who has one."""
        for system in _FOR_LIFE:
            mine = {k for k, s, _ in f.identifiers if s == system}
            theirs = self.for_life.get((person, system), set())
            if mine and theirs and not mine & theirs:
                return True
        return False

    def attach(self, person: str, keys: Iterable[IdKey]) -> None:
        owner, new, now = self.owner, self.new_identifiers, self.now
        for key, system, value in keys:
            owner[key] = person
            new.append((key, person, system, value, key.split(":")[1] if system == "MR" else "", now))
            if system in _FOR_LIFE:
                self.for_life.setdefault((person, system), set()).add(key)

    def one_by_one(self, f: PersonFacts) -> str | None:
        """A row the bulk rules do not settle: what is pending written first, then the index's own
        resolution, and what it changed read back."""
        self.flush()
        person = _Index(self.conn, self.now).resolve(f)
        for key, _, _ in f.identifiers:
            self.owner.pop(key, None)
        self.persons.pop(person, None)
        self.for_life = {k: v for k, v in self.for_life.items() if k[0] != person}
        self.load([k for k, _, _ in f.identifiers])
        return person

    def flush(self) -> None:
        if self.new_persons:
            self.conn.executemany(
                "INSERT INTO persons (id, created_at, updated_at, name, name_folded, birth_date, sex, facility, "
                "created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", self.new_persons)
        if self.new_identifiers:
            self.conn.executemany("INSERT OR IGNORE INTO person_identifiers (key, person_id, system, value, scope, "
                                  "first_seen) VALUES (?, ?, ?, ?, ?, ?)", self.new_identifiers)
        if self.updates:
            self.conn.executemany(
                "UPDATE persons SET name = coalesce(nullif(?, ''), name), name_folded = coalesce(nullif(?, ''), "
                "name_folded), birth_date = coalesce(nullif(?, ''), birth_date), sex = coalesce(nullif(?, ''), sex), "
                "updated_at = ? WHERE id = ?",
                [(f.name, fold_name(f.name), f.birth_date, f.sex, self.now, person)
                 for person, f in self.updates.items()])
        self.new_persons, self.new_identifiers, self.updates = [], [], {}


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    """``values`` in lists of exactly :data:`_IN_CHUNK`, the last padded with a value no key or id
    has: every query then has one text, and the connection caches one prepared statement for it
    rather than one per length (each of thousands of bound values, a megabyte apiece)."""
    for n in range(0, len(values), _IN_CHUNK):
        chunk = list(values[n:n + _IN_CHUNK])
        yield chunk + [""] * (_IN_CHUNK - len(chunk))


def record_residences(conn: sqlite3.Connection, rows: Iterable[tuple[str, str, str, str]], source: str,
                      now: float) -> None:
    """Each ``(person id, province, district, commune)`` as where that person lives now."""
    conn.executemany(
        "INSERT INTO person_residence (person_id, province, district, commune, source, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (person_id) DO UPDATE SET province = excluded.province, "
        "district = excluded.district, commune = excluded.commune, source = excluded.source, "
        "updated_at = excluded.updated_at",
        [(person, province, district, commune, source, now) for person, province, district, commune in rows])


@dataclass(frozen=True)
class _Candidate:
    id: str
    birth_order: str
    multiple_birth: str


class _Index:
    """The index's writes within one transaction."""

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self.conn = conn
        self.now = now
        self.links = 0

    # finding

    def lookup(self, keys: Sequence[IdKey]) -> dict[str, tuple[str, str | None, str, str, str]]:
        """key → (person id, provisional, name, birth date, sex) of every known key: one indexed query."""
        if not keys:
            return {}
        rows = self.conn.execute(
            f"SELECT i.key, p.id, p.provisional, p.name, p.birth_date, p.sex FROM person_identifiers i "
            f"JOIN persons p ON p.id = i.person_id WHERE i.key IN ({', '.join('?' * len(keys))})",
            [k for k, _, _ in keys]).fetchall()
        return {row[0]: row[1:] for row in rows}

    def find(self, keys: Sequence[IdKey]) -> str | None:
        found = self.lookup(keys)
        return next((found[k][0] for k, _, _ in keys if k in found), None)

    # the record set's own person

    def resolve(self, f: PersonFacts) -> str | None:
        found = self.lookup(f.identifiers)
        known = next((found[k] for k, _, _ in f.identifiers if k in found), None)
        if known is not None and self.names_another(known[0], f.identifiers, found):
            known = None
        if known is None and f.previous:
            known = next(iter(self.lookup(f.previous).values()), None)
        if known is not None:
            person, provisional, name, birth_date, sex = known
            self.attach(person, [k for k in f.identifiers if k[0] not in found])
            if provisional is not None and not f.provisional:
                self.identify(person, f, previous=self.keys_of(person, exclude=f.identifiers), how="automatic")
            elif provisional is None and not f.provisional and any(
                    new and new != old for new, old in ((f.name, name), (f.birth_date, birth_date), (f.sex, sex))):
                self.update_demographics(person, f)
            self.merge_previous(person, f.previous)
            self.relate(person, f)
            return person
        if f.provisional and f.mother:
            return self.place_provisional(f)
        if not f.identifiers:
            return None
        if f.mother and f.birth_date and not f.provisional:
            person = self.match_provisional_child(f)
            if person is not None:
                return person
        person = self.create(f, provisional=f.provisional or None)
        self.relate(person, f)
        return person

    def names_another(self, person: str, keys: Sequence[IdKey], found: dict) -> bool:
        """Whether the record is someone else than ``person``, found by a less durable key (a card,
        a record number): its CCCD or BHXH number is none of ``person``'s, who has one of their own.
        A card printed on two persons' records is a data error, not one person; a re-issued CCCD
        is the same person when the record names the old one too (PID-3, or MRG-1 of an ADT^A40)."""
        for system in _FOR_LIFE:
            mine = [k for k, s, _ in keys if s == system]
            if mine and not any(k in found and found[k][0] == person for k in mine) and self.conn.execute(
                    "SELECT 1 FROM person_identifiers WHERE person_id = ? AND system = ? LIMIT 1",
                    (person, system)).fetchone():
                return True
        return False

    def place_provisional(self, f: PersonFacts) -> str:
        """A newborn under the mother's name: the identified child of hers born that day if there
        is exactly one, else a provisional person (and a review when several could be it)."""
        mother = self.find(f.mother) or self.create_relative(f.mother, f.mother_name, f)
        children = self.children(mother, f.birth_date, provisional=False) if f.birth_date else []
        choice, chosen, reason = _choose(children, f.birth_order, f.multiple_birth)
        if choice == "one":
            self.attach(chosen[0], f.identifiers)
            self.log_link("identified", "automatic", chosen[0], provisional_id="", created_by=f.plugin,
                          previous=f.identifiers)
            return chosen[0]
        existing = self.conn.execute("SELECT id FROM persons WHERE id = ?", (f.key,)).fetchone()
        person = existing[0] if existing else self.create(f, provisional=f.provisional)
        self.attach(person, f.identifiers)
        self.add_relation(person, "mother", mother)
        if choice == "ambiguous" and not existing:
            self.open_review(reason, person, chosen)
        return person

    def match_provisional_child(self, f: PersonFacts) -> str | None:
        """A child named on its own, with a mother and a birth date: the provisional person it is,
        linked, or None (and a review when it may be one of several, or its mother is not known by
        these identifiers while a provisional child under a mother of her name waits)."""
        mother = self.find(f.mother)
        if mother is None:
            waiting = self.provisional_children_of_named_mother(f.mother_name, f.birth_date)
            if waiting:
                person = self.create(f, provisional=None)
                self.relate(person, f)
                self.open_review("mother_identifiers_changed", person, [c.id for c in waiting])
                return person
            return None
        candidates = self.children(mother, f.birth_date, provisional=True)
        choice, chosen, reason = _choose(candidates, f.birth_order, f.multiple_birth)
        if choice == "none":
            return None
        if choice == "one":
            [person] = chosen
            self.attach(person, f.identifiers)
            self.identify(person, f, previous=self.keys_of(person, exclude=f.identifiers), how="automatic")
            return person
        person = self.create(f, provisional=None)
        self.relate(person, f)
        self.open_review(reason, person, chosen)
        return person

    def children(self, mother: str, birth_date: str, provisional: bool) -> list[_Candidate]:
        rows = self.conn.execute(
            "SELECT p.id, p.birth_date, coalesce(p.birth_order, ''), coalesce(p.multiple_birth, '') "
            "FROM person_relations r JOIN persons p ON p.id = r.child "
            "WHERE r.parent = ? AND r.kind = 'mother' AND p.replaced_by IS NULL AND "
            + ("p.provisional IS NOT NULL" if provisional else "p.provisional IS NULL"), (mother,)).fetchall()
        day = birth_date[:8]
        return [_Candidate(i, order, multiple) for i, born, order, multiple in rows if (born or "")[:8] == day]

    def provisional_children_of_named_mother(self, mother_name: str, birth_date: str) -> list[_Candidate]:
        folded = fold_name(mother_name)
        if not folded:
            return []
        day = birth_date[:8]
        # From the few provisional children born that day (an index of their own), never from the
        # mothers of a name, which a common name makes thousands.
        rows = self.conn.execute(
            "SELECT p.id, coalesce(p.birth_order, ''), coalesce(p.multiple_birth, '') FROM persons p "
            "JOIN person_relations r ON r.child = p.id AND r.kind = 'mother' JOIN persons m ON m.id = r.parent "
            "WHERE p.provisional IS NOT NULL AND p.replaced_by IS NULL AND p.birth_date >= ? AND p.birth_date < ? "
            "AND +m.name_folded = ?", (day, day + "~", folded)).fetchall()
        return [_Candidate(i, order, multiple) for i, order, multiple in rows]

    # writing

    def create(self, f: PersonFacts, provisional: str | None) -> str:
        person = f.key
        self.conn.execute(
            "INSERT INTO persons (id, created_at, updated_at, name, name_folded, birth_date, sex, facility, "
            "created_by, provisional, multiple_birth, birth_order) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (person, self.now, self.now, f.name, fold_name(f.name), f.birth_date, f.sex, f.facility, f.plugin,
             provisional, f.multiple_birth, f.birth_order))
        self.attach(person, f.identifiers)
        return person

    def create_relative(self, keys: Sequence[IdKey], name: str, f: PersonFacts) -> str:
        """A mother or guardian first met in a record about someone else: a person of her own,
        her id made from her most durable identifier as an ordering key would be."""
        person = person_key(keys[0][0])
        self.conn.execute(
            "INSERT OR IGNORE INTO persons (id, created_at, updated_at, name, name_folded, facility, created_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", (person, self.now, self.now, name, fold_name(name), f.facility, f.plugin))
        self.attach(person, keys)
        return person

    def attach(self, person: str, keys: Iterable[IdKey]) -> None:
        """Add identifiers to ``person``'s history; one another person holds already stays theirs."""
        rows = [(key, person, system, value, key.split(":")[1] if system == "MR" else "", self.now)
                for key, system, value in keys]
        if rows:
            self.conn.executemany("INSERT OR IGNORE INTO person_identifiers (key, person_id, system, value, scope, "
                                  "first_seen) VALUES (?, ?, ?, ?, ?, ?)", rows)

    def keys_of(self, person: str, exclude: Sequence[IdKey] = ()) -> tuple[IdKey, ...]:
        skip = {k for k, _, _ in exclude}
        rows = self.conn.execute("SELECT key, system, value FROM person_identifiers WHERE person_id = ?",
                                 (person,)).fetchall()
        return tuple(sorted((tuple(r) for r in rows if r[0] not in skip), key=lambda k: _RANK.get(k[1], 99)))

    def identify(self, person: str, f: PersonFacts, previous: Sequence[IdKey], how: str,
                 review_id: int | None = None) -> None:
        """A provisional person is named now by a record of its own: no longer provisional."""
        created_by = self.conn.execute("SELECT coalesce(created_by, '') FROM persons WHERE id = ?",
                                       (person,)).fetchone()[0]
        self.conn.execute("UPDATE persons SET provisional = NULL, updated_at = ? WHERE id = ?", (self.now, person))
        self.update_demographics(person, f)
        self.log_link("identified", how, person, provisional_id=person, created_by=created_by, previous=previous,
                      review_id=review_id)

    def update_demographics(self, person: str, f: PersonFacts) -> None:
        self.conn.execute(
            "UPDATE persons SET name = coalesce(nullif(?, ''), name), name_folded = coalesce(nullif(?, ''), "
            "name_folded), birth_date = coalesce(nullif(?, ''), birth_date), sex = coalesce(nullif(?, ''), sex), "
            "multiple_birth = coalesce(nullif(?, ''), multiple_birth), birth_order = coalesce(nullif(?, ''), "
            "birth_order), updated_at = ? WHERE id = ?",
            (f.name, fold_name(f.name), f.birth_date, f.sex, f.multiple_birth, f.birth_order, self.now, person))

    def relate(self, person: str, f: PersonFacts) -> None:
        for kind, keys, name in (("mother", f.mother, f.mother_name), ("guardian", f.guardian, f.guardian_name)):
            if keys:
                parent = self.find(keys) or self.create_relative(keys, name, f)
                if parent != person:
                    self.add_relation(person, kind, parent)

    def add_relation(self, child: str, kind: str, parent: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO person_relations (child, kind, parent, created_at) "
                          "VALUES (?, ?, ?, ?)", (child, kind, parent, self.now))

    def merge_previous(self, person: str, previous: Sequence[IdKey]) -> None:
        """A sender's merge (ADT^A40): the person its previous identifiers name is this one."""
        for retired in dict.fromkeys(found[0] for found in self.lookup(previous).values()):
            if retired != person:
                merge(self.conn, retired, person, self.now)
                self.log_link("merged", "sender", person, other_id=retired)

    def open_review(self, reason: str, subject: str, candidates: Sequence[str]) -> None:
        self.conn.execute("INSERT INTO person_reviews (created_at, reason, subject, candidates, state) "
                          "VALUES (?, ?, ?, ?, 'open')", (self.now, reason, subject, json.dumps(list(candidates))))

    def log_link(self, kind: str, how: str, person: str, *, other_id: str = "", provisional_id: str = "",
                 created_by: str = "", previous: Sequence[IdKey] = (), review_id: int | None = None) -> None:
        self.conn.execute(
            "INSERT INTO person_identity_links (created_at, kind, how, person_id, other_id, provisional_id, "
            "created_by, previous, review_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self.now, kind, how, person, other_id, provisional_id, created_by,
             json.dumps([[system, value] for _, system, value in previous]), review_id))
        self.links += 1


def _choose(candidates: list[_Candidate], order: str, multiple: str) -> tuple[str, list[str], str]:
    """Which candidate a child is: ``("one", [id], "")``, ``("ambiguous", ids, reason)`` or
    ``("none", [], "")``. A birth order decides between twins; without one, a lone candidate is
    the child unless either side says it is one of a multiple birth."""
    if not candidates:
        return "none", [], ""
    ids = [c.id for c in candidates]
    twins = multiple == "Y" or any(c.multiple_birth == "Y" for c in candidates)
    if order:
        exact = [c.id for c in candidates if c.birth_order == order]
        if len(exact) == 1:
            return "one", exact, ""
        if exact:
            return "ambiguous", exact, "two_candidates"
        unordered = [c for c in candidates if not c.birth_order]
        if not unordered:
            return "none", [], ""
        if len(candidates) == 1 and not twins:
            return "one", ids, ""
        return "ambiguous", [c.id for c in unordered], "twins_without_birth_order" if twins else "two_candidates"
    if len(candidates) == 1 and not twins:
        return "one", ids, ""
    return "ambiguous", ids, "twins_without_birth_order" if twins else "two_candidates"


def merge(conn: sqlite3.Connection, retired: str, survivor: str, now: float) -> None:
    """``retired`` is ``survivor``: its identifiers and relations move over (so a lookup never
    follows a chain), and it points at the survivor."""
    conn.execute("UPDATE person_identifiers SET person_id = ? WHERE person_id = ?", (survivor, retired))
    for column in ("child", "parent"):
        conn.execute(f"UPDATE OR IGNORE person_relations SET {column} = ? WHERE {column} = ?", (survivor, retired))
        conn.execute(f"DELETE FROM person_relations WHERE {column} = ?", (retired,))
    conn.execute("DELETE FROM person_relations WHERE child = parent")
    conn.execute("UPDATE persons SET replaced_by = ?, replaced_at = ?, updated_at = ? WHERE id = ?",
                 (survivor, now, now, retired))
    conn.execute("UPDATE persons SET replaced_by = ?, updated_at = ? WHERE replaced_by = ?", (survivor, now, retired))


# --- reviews ------------------------------------------------------------------------------------

class ReviewError(Exception):
    """A review decision that cannot be made (no such review, decided already, a wrong candidate)."""


def list_reviews(conn: sqlite3.Connection, state: str | None = "open") -> list[dict]:
    query = "SELECT * FROM person_reviews" + (" WHERE state = ?" if state else "") + " ORDER BY id"
    conn.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in conn.execute(query, (state,) if state else ())]
    finally:
        conn.row_factory = None
    for row in rows:
        row["candidates"] = json.loads(row["candidates"])
    return rows


def person_status(view: dict) -> str:
    """``replaced``, ``provisional`` or ``identified``: what an operator needs first of a person."""
    if view["replaced_by"]:
        return "replaced"
    return "provisional" if view["provisional"] is not None else "identified"


def review_queue(conn: sqlite3.Connection, state: str | None = "open") -> list[dict]:
    """The reviews in ``state`` (None: all) as an operator sees them: subject and candidates with
    their names masked (family name and initials), birth date and status, to decide by."""
    reviews = list_reviews(conn, state)
    persons = {i: person_view(conn, i) for r in reviews for i in [r["subject"], *r["candidates"]]}

    def who(person_id: str) -> dict:
        view = persons.get(person_id)
        if view is None:
            return {"id": person_id, "name": "", "birth_date": "", "status": "unknown"}
        return {"id": person_id, "name": mask_name(view["name"] or ""), "birth_date": view["birth_date"],
                "status": person_status(view)}

    return [dict(r, subject=who(r["subject"]), candidates=[who(c) for c in r["candidates"]]) for r in reviews]


def decide_review(conn: sqlite3.Connection, now: float, review_id: int, accept: bool, candidate: str | None,
                  decided_by: str, note: str = "") -> dict:
    """Accept (link the subject with ``candidate``, or the only candidate) or reject a review,
    recording who decided. An accepted link merges the identified person into the provisional one,
    which survives, so what the record stores got about the child keeps one ordering key."""
    row = conn.execute("SELECT subject, candidates, state FROM person_reviews WHERE id = ?", (review_id,)).fetchone()
    if row is None:
        raise ReviewError(f"no review {review_id}")
    subject, candidates, state = row[0], json.loads(row[1]), row[2]
    if state != "open":
        raise ReviewError(f"review {review_id} was {state} already")
    chosen = ""
    if accept:
        if candidate is None and len(candidates) != 1:
            raise ReviewError(f"review {review_id} has {len(candidates)} candidates: name one with --candidate "
                              f"({', '.join(candidates)})")
        chosen = candidate if candidate is not None else candidates[0]
        if chosen not in candidates:
            raise ReviewError(f"{chosen} is not a candidate of review {review_id} ({', '.join(candidates)})")
        _link_reviewed(conn, now, review_id, subject, chosen)
    conn.execute("UPDATE person_reviews SET state = ?, decided_at = ?, decided_by = ?, chosen = ?, note = ? "
                 "WHERE id = ?", ("accepted" if accept else "rejected", now, decided_by, chosen, note, review_id))
    return {"review": review_id, "state": "accepted" if accept else "rejected", "subject": subject,
            "chosen": chosen, "decided_by": decided_by}


def _link_reviewed(conn: sqlite3.Connection, now: float, review_id: int, subject: str, chosen: str) -> None:
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT id, provisional, replaced_by, name, birth_date, sex, multiple_birth, birth_order FROM persons "
        "WHERE id IN (?, ?)", (subject, chosen))}
    for person in (subject, chosen):
        if person not in rows or rows[person][1] is not None:
            raise ReviewError(f"person {person} of review {review_id} is no longer in the index as it was (merged "
                              f"since); reject the review")
    survivor, retired = (subject, chosen) if rows[subject][0] is not None else (chosen, subject)
    index = _Index(conn, now)
    previous = index.keys_of(survivor)
    merge(conn, retired, survivor, now)
    _, _, name, birth_date, sex, multiple, order = rows[retired]
    f = PersonFacts(key=survivor, identifiers=(), name=name or "", birth_date=birth_date or "", sex=sex or "",
                    multiple_birth=multiple or "", birth_order=order or "")
    if rows[survivor][0] is not None:
        index.identify(survivor, f, previous=previous, how="reviewed", review_id=review_id)
    else:
        index.log_link("merged", "reviewed", survivor, other_id=retired, previous=previous, review_id=review_id)
    conn.execute("UPDATE person_identity_links SET other_id = ? WHERE review_id = ?", (retired, review_id))


# --- what plugins are told -------------------------------------------------------------------

@dataclass(frozen=True)
class PersonLink:
    """An identity link the person index made, as a plugin hears of it (``hssk_identity_linked``).

    ``kind`` is ``identified`` (a provisional person is named now: ``person`` carries its own
    identifiers, and ``previous_identifiers`` those the record stores knew the provisional one by)
    or ``merged`` (``other_id`` was retired into ``person_id``). ``how``: ``automatic``,
    ``reviewed`` (an operator's decision) or ``sender`` (a sender's ADT^A40). ``created_by`` is the
    plugin whose record set made the provisional person; ``destinations`` those that had queued
    rows for the person before the link, so an identity update can go to exactly them, behind
    what they got (``Event.destinations``)."""

    id: int
    kind: str
    how: str
    person_id: str
    other_id: str
    created_by: str
    person: Person
    previous_identifiers: tuple[Identifier, ...]
    destinations: tuple[str, ...]
    linked_at: float


def pending_links(conn: sqlite3.Connection, limit: int = 100) -> list[PersonLink]:
    """Links not yet announced to the plugins, oldest first (read on a connection of its own)."""
    rows = conn.execute(
        "SELECT id, kind, how, person_id, coalesce(other_id, ''), coalesce(created_by, ''), coalesce(previous, '[]'), "
        "created_at FROM person_identity_links WHERE announced_at IS NULL ORDER BY id LIMIT ?", (limit,)).fetchall()
    names = [r[0] for r in conn.execute(_DESTINATIONS)] if rows else []
    links = []
    for link_id, kind, how, person_id, other_id, created_by, previous, created_at in rows:
        destinations = tuple(name for name in names if conn.execute(
            "SELECT 1 FROM outbox WHERE destination = ? AND ordering_key IN (?, ?) AND created_at <= ? LIMIT 1",
            (name, person_id, other_id, created_at)).fetchone())
        links.append(PersonLink(link_id, kind, how, person_id, other_id, created_by, _person(conn, person_id),
                                tuple(Identifier(s, v) for s, v in json.loads(previous)), destinations, created_at))
    return links


#: The outbox's destination names, one index seek each (``SELECT DISTINCT`` would read the index whole).
_DESTINATIONS = """
WITH RECURSIVE d(name) AS (
    SELECT min(destination) FROM outbox
    UNION ALL SELECT (SELECT min(destination) FROM outbox WHERE destination > d.name) FROM d WHERE d.name IS NOT NULL)
SELECT name FROM d WHERE name IS NOT NULL
"""


def _person(conn: sqlite3.Connection, person_id: str) -> Person:
    """The person as the index knows it now: its latest identifier of each system (plus every
    BHYT card still recorded, most recent first), name, birth date, sex, birth order, mother."""
    row = conn.execute("SELECT coalesce(name, ''), coalesce(birth_date, ''), coalesce(sex, ''), "
                       "coalesce(multiple_birth, ''), coalesce(birth_order, '') FROM persons WHERE id = ?",
                       (person_id,)).fetchone() or ("", "", "", "", "")
    identifiers = _current_identifiers(conn, person_id)
    family, _, given = row[0].partition(" ")
    middle, _, given = given.rpartition(" ")
    mothers = [m for (m,) in conn.execute("SELECT parent FROM person_relations WHERE child = ? AND kind = 'mother'",
                                          (person_id,))]
    related = tuple(RelatedPerson("mother", identifiers=_current_identifiers(conn, m)) for m in mothers)
    return Person(identifiers=identifiers, family=family, middle=middle, given=given, birth_date=row[1], sex=row[2],
                  multiple_birth=row[3], birth_order=row[4], related=related)


def _current_identifiers(conn: sqlite3.Connection, person_id: str) -> tuple[Identifier, ...]:
    rows = conn.execute("SELECT system, value, scope FROM person_identifiers WHERE person_id = ? "
                        "ORDER BY first_seen DESC, key", (person_id,)).fetchall()
    latest: dict[str, Identifier] = {}
    for system, value, scope in rows:
        latest.setdefault(system, Identifier(system, value, scope or ""))
    return tuple(sorted(latest.values(), key=lambda i: _RANK.get(i.system, 99)))


def mark_announced(conn: sqlite3.Connection, now: float, link_ids: Sequence[int]) -> None:
    conn.executemany("UPDATE person_identity_links SET announced_at = ? WHERE id = ?", [(now, i) for i in link_ids])


@dataclass(frozen=True)
class IndexCounts:
    """What the metrics say of the index: open provisional persons and the age of the oldest, links
    by how they were made, reviews waiting."""

    provisional: int
    oldest_provisional_age: float
    links: dict[str, int]
    reviews_waiting: int


def index_counts(conn: sqlite3.Connection, now: float) -> IndexCounts:
    count, oldest = conn.execute("SELECT count(*), min(created_at) FROM persons "
                                 "WHERE provisional IS NOT NULL AND replaced_by IS NULL").fetchone()
    links = dict(conn.execute("SELECT how, count(*) FROM person_identity_links GROUP BY how").fetchall())
    waiting = conn.execute("SELECT count(*) FROM person_reviews WHERE state = 'open'").fetchone()[0]
    return IndexCounts(count, max(0.0, now - oldest) if oldest is not None else 0.0, links, waiting)


# --- operators' questions ------------------------------------------------------------------------

def find_persons(conn: sqlite3.Connection, *, identifier: str = "", system: str = "", name: str = "",
                 birth_date: str = "", provisional: bool = False, limit: int = 20) -> list[str]:
    """Ids of the persons (retired ones included, they say where they went) an operator asks for:
    by an identifier's value (any system unless ``system``, any scope of a record number), by the
    start of a name (diacritics and case ignored) and the start of a birth date, or the provisional
    ones still open, oldest first."""
    clauses, params = [], []
    if identifier:
        value = identifier.strip()
        clauses.append("p.id IN (SELECT person_id FROM person_identifiers WHERE value IN (?, ?)"
                       + (" AND system = ?" if system else "") + ")")
        params += [value, value.upper()] + ([system] if system else [])
    if name:
        folded = fold_name(name)
        clauses.append("p.name_folded >= ? AND p.name_folded < ?")
        params += [folded, folded + "\uffff"]
    if birth_date:
        clauses.append("p.birth_date >= ? AND p.birth_date < ?")
        params += [birth_date, birth_date + "~"]
    if provisional:
        clauses.append("p.provisional IS NOT NULL AND p.replaced_by IS NULL")
    where = " AND ".join(clauses) or "1"
    return [r[0] for r in conn.execute(f"SELECT p.id FROM persons p WHERE {where} ORDER BY p.created_at, p.id "
                                       f"LIMIT ?", [*params, limit])]


def person_view(conn: sqlite3.Connection, person_id: str) -> dict | None:
    """One person as the index knows it, in clear (the caller masks): demographics, the identifier
    history newest first, relations, what was merged into it, its links and reviews."""
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM persons WHERE id = ?", (person_id,)).fetchone()
        if row is None:
            return None
        person = {k: row[k] for k in ("id", "name", "birth_date", "sex", "facility", "created_by", "provisional",
                                      "multiple_birth", "birth_order", "replaced_by", "created_at", "updated_at")}
        identifiers = [dict(r) for r in conn.execute(
            "SELECT system, value, scope, first_seen FROM person_identifiers WHERE person_id = ? "
            "ORDER BY first_seen DESC, key", (person_id,))]
        seen: set[str] = set()
        for entry in identifiers:
            entry["current"] = entry["system"] not in seen
            seen.add(entry["system"])
        person["identifiers"] = identifiers
        person["parents"] = [dict(r) for r in conn.execute(
            "SELECT r.kind, p.id, p.name, p.birth_date FROM person_relations r JOIN persons p ON p.id = r.parent "
            "WHERE r.child = ? ORDER BY r.kind, p.id", (person_id,))]
        person["children"] = [dict(r) for r in conn.execute(
            "SELECT r.kind, p.id, p.name, p.birth_date, p.provisional, p.birth_order FROM person_relations r "
            "JOIN persons p ON p.id = r.child WHERE r.parent = ? ORDER BY p.birth_date, p.id", (person_id,))]
        person["replaces"] = [r[0] for r in conn.execute(
            "SELECT id FROM persons WHERE replaced_by = ? ORDER BY replaced_at", (person_id,))]
        person["links"] = [dict(r) for r in conn.execute(
            "SELECT id, created_at, kind, how, person_id, other_id, announced_at FROM person_identity_links "
            "WHERE person_id = ? OR other_id = ? ORDER BY id", (person_id, person_id))]
        person["reviews"] = [{**dict(r), "candidates": json.loads(r["candidates"])} for r in conn.execute(
            "SELECT id, created_at, reason, subject, candidates, state, decided_by, chosen FROM person_reviews "
            "WHERE subject = ? OR candidates LIKE ? ORDER BY id", (person_id, f'%"{person_id}"%'))]
        return person
    finally:
        conn.row_factory = None


def record_reveal(conn: sqlite3.Connection, now: float, operator: str, os_user: str, command: str,
                  persons: Sequence[str]) -> None:
    """An operator saw these persons' identifiers and names in clear: who, when, with what."""
    conn.execute("INSERT INTO person_reveals (revealed_at, operator, os_user, command, persons) VALUES (?, ?, ?, ?, ?)",
                 (now, operator, os_user, command, json.dumps(list(persons))))
