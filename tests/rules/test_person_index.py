"""The person index: every accepted record set resolves to a person, found again by any
identifier ever seen for it, and the outbox orders each destination's rows by that person.

Gateways here are real (MLLP on 127.0.0.1, a journal file); the destination is paused so rows
stay queued and their order (pending, then waiting behind) can be read from the outbox."""
from __future__ import annotations

import json
import sqlite3

import pytest
import pytest_twisted

from gateway.core.outbox import set_paused
from gateway.core.store import Store
from gateway.rules.person_index import PersonFacts, fold_name, identifier_keys, index_list, person_key, resolve_persons
from gateway.model.records import Identifier
from tests.support import TestPlugin, connect_mllp, hl7, run_cli, select_rows, send_and_receive, start_gateway

CCCD, REISSUED = "079085000123", "079085000999"
CARD, RENEWED = "GD4790123456789", "DN4790123456789"
OTHER_CCCD = "079190000222"


def pid(*identifiers: str, name: str = "Nguyễn^Văn Thử", born: str = "19850412", sex: str = "M") -> str:
    return f"PID|1||{'~'.join(identifiers)}||{name}||{born}|{sex}"


def cccd(value: str) -> str:
    return f"{value}^^^BCA^NI"


def card(value: str) -> str:
    return f"{value}^^^BHXH^HC"


async def paused_gateway(tmp_path):
    """A gateway whose one destination takes nothing yet: queued rows keep their order states."""
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()],
                             destinations={"store": {"kind": "http", "url": "http://127.0.0.1:9/records"}})
    await gw.writer.run(lambda conn, now: set_paused(conn, now, "store", True))
    await gw.delivery.refresh()
    return gw


async def send_all(gw, *messages: tuple[str, str]) -> None:
    client = await connect_mllp(gw)
    try:
        for control_id, segment in messages:
            ack = await send_and_receive(client, hl7(segment, control_id=control_id))
            assert b"MSA|AA|" in ack, ack
    finally:
        client.transport.loseConnection()


def queued(gw) -> dict[str, tuple[str, str]]:
    """control id → (ordering key, state) of each outbox row."""
    return {r["control_id"]: (r["ordering_key"], r["state"]) for r in select_rows(
        gw, "SELECT o.id, o.ordering_key, o.state, m.control_id FROM outbox o JOIN messages m ON m.id = o.message_id",
        {}, alias="o.")}


def index_rows(gw, sql: str, *params) -> list[tuple]:
    conn = sqlite3.connect(gw.config.database_path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_a_reissued_cccd_is_the_same_person_and_its_rows_wait_behind_the_earlier_ones(tmp_path):
    gw = await paused_gateway(tmp_path)
    try:
        await send_all(gw, ("A1", pid(cccd(CCCD), card(CARD))),
                       ("A2", pid(cccd(REISSUED), cccd(CCCD), card(CARD))), ("A3", pid(cccd(REISSUED))))
        rows = queued(gw)
        history = index_rows(gw, "SELECT system, value FROM person_identifiers ORDER BY first_seen, key")
        persons = index_rows(gw, "SELECT id FROM persons")
    finally:
        await gw.stop()

    assert rows["A1"][0] == rows["A2"][0] == rows["A3"][0]
    assert (rows["A1"][1], rows["A2"][1], rows["A3"][1]) == ("pending", "waiting", "waiting")
    assert len(persons) == 1 and persons[0][0] == rows["A1"][0]
    assert ("CCCD", CCCD) in history and ("CCCD", REISSUED) in history and ("BHYT", CARD) in history


@pytest_twisted.ensureDeferred
async def test_another_cccd_on_a_record_sharing_a_card_is_another_person_and_the_card_stays_with_the_first(
        tmp_path):
    gw = await paused_gateway(tmp_path)
    try:
        await send_all(gw, ("F1", pid(cccd(CCCD), card(CARD))),
                       ("F2", pid(cccd(OTHER_CCCD), card(CARD), name="Trần^Thị B", born="19900101", sex="F")))
        rows = queued(gw)
        card_holder = index_rows(gw, "SELECT person_id FROM person_identifiers WHERE value = ?", CARD)
    finally:
        await gw.stop()

    assert rows["F1"][0] != rows["F2"][0]
    assert (rows["F1"][1], rows["F2"][1]) == ("pending", "pending")
    assert card_holder == [(rows["F1"][0],)]


@pytest_twisted.ensureDeferred
async def test_a_renewed_card_then_a_cccd_keep_the_person_known_first_by_its_card(tmp_path):
    gw = await paused_gateway(tmp_path)
    try:
        await send_all(gw, ("B1", pid(card(CARD))), ("B2", pid(card(RENEWED))),
                       ("B3", pid(cccd(CCCD), card(RENEWED))))
        rows = queued(gw)
    finally:
        await gw.stop()

    assert len({key for key, _ in rows.values()}) == 1
    assert [rows[c][1] for c in ("B1", "B2", "B3")] == ["pending", "waiting", "waiting"]


@pytest_twisted.ensureDeferred
async def test_rows_queued_before_the_index_knew_the_person_stay_in_one_order_with_the_rows_after(tmp_path):
    gw = await paused_gateway(tmp_path)
    try:
        await send_all(gw, ("C1", pid(cccd(CCCD))))
        await gw.writer.run(forget_every_person)
        before = queued(gw)["C1"]
        await send_all(gw, ("C2", pid(cccd(CCCD), card(CARD))))
        rows = queued(gw)
    finally:
        await gw.stop()

    assert rows["C1"] == before
    assert rows["C2"] == (before[0], "waiting")


@pytest_twisted.ensureDeferred
async def test_a_senders_merge_retires_the_person_its_previous_identifiers_name(tmp_path):
    gw = await paused_gateway(tmp_path)
    try:
        await send_all(gw, ("D1", pid(cccd(OTHER_CCCD), name="Trần^Thị B", born="19900101", sex="F")),
                       ("D2", pid(cccd(CCCD))))
        client = await connect_mllp(gw)
        merge = hl7(pid(cccd(CCCD)), f"MRG|{cccd(OTHER_CCCD)}", control_id="D3", message_type="ADT^A40^ADT_A39")
        assert b"MSA|AA|" in await send_and_receive(client, merge)
        client.transport.loseConnection()
        await send_all(gw, ("D4", pid(cccd(OTHER_CCCD), name="Trần^Thị B", born="19900101", sex="F")))
        rows = queued(gw)
        retired = index_rows(gw, "SELECT id, replaced_by FROM persons WHERE replaced_by IS NOT NULL")
        links = index_rows(gw, "SELECT kind, how FROM person_identity_links")
    finally:
        await gw.stop()

    assert retired == [(rows["D1"][0], rows["D2"][0])]
    assert rows["D4"] == (rows["D2"][0], "waiting")
    assert links == [("merged", "sender")]


def forget_every_person(conn: sqlite3.Connection, now: float) -> None:
    """The journal as a version before the index left it: rows queued, no person known."""
    conn.execute("DELETE FROM person_identifiers")
    conn.execute("DELETE FROM persons")


def facts(key: str, *identifiers: Identifier, **fields) -> PersonFacts:
    return PersonFacts(key=key, identifiers=identifier_keys(identifiers, "79001"), **fields)


@pytest.fixture
def journal(tmp_path):
    store = Store(tmp_path / "gateway.db")
    store.migrate()
    conn = store.connect()
    yield conn
    conn.close()


def resolve(conn, *batch: PersonFacts) -> dict[str, str]:
    conn.execute("BEGIN IMMEDIATE")
    resolved = resolve_persons(conn, batch, 1_700_000_000.0)
    conn.execute("COMMIT")
    return {f.key: resolved.keys.get(f.key, f.key) for f in batch}


def test_two_record_sets_of_a_new_person_in_one_commit_are_one_person(journal):
    first = facts("k-cccd", Identifier("CCCD", CCCD), name="Nguyễn Văn Thử")
    second = facts("k-card", Identifier("BHYT", CARD), Identifier("CCCD", CCCD))

    assert resolve(journal, first, second) == {"k-cccd": "k-cccd", "k-card": "k-cccd"}
    assert journal.execute("SELECT count(*) FROM persons").fetchone() == (1,)


def test_the_most_durable_identifier_decides_between_two_persons_and_leaves_the_other_its_own(journal):
    resolve(journal, facts("by-cccd", Identifier("CCCD", CCCD)), facts("by-card", Identifier("BHYT", CARD)))

    assert resolve(journal, facts("both", Identifier("BHYT", CARD), Identifier("CCCD", CCCD))) == {"both": "by-cccd"}
    assert journal.execute("SELECT person_id FROM person_identifiers WHERE value = ?", (CARD,)).fetchone() == \
        ("by-card",)


def test_a_known_person_costs_one_indexed_lookup_and_no_write(journal):
    known = facts("p", Identifier("CCCD", CCCD), Identifier("BHYT", CARD), name="Nguyễn Văn Thử",
                  birth_date="19850412", sex="1")
    resolve(journal, known)
    statements: list[str] = []
    journal.set_trace_callback(statements.append)

    resolve(journal, known)

    journal.set_trace_callback(None)
    work = [s for s in statements if s not in ("BEGIN IMMEDIATE", "COMMIT")]
    assert len(work) == 1 and work[0].startswith("SELECT")
    plan = " ".join(row[-1] for row in journal.execute("EXPLAIN QUERY PLAN " + work[0]))
    assert "USING INDEX" in plan or "USING PRIMARY KEY" in plan, plan
    assert "SCAN" not in plan, plan


@pytest_twisted.ensureDeferred
async def test_persons_are_shown_masked_and_a_reveal_is_recorded_with_who_asked(tmp_path):
    gw = await paused_gateway(tmp_path)
    try:
        await send_all(gw, ("E1", pid(cccd(CCCD), card(CARD))), ("E2", pid(cccd(REISSUED), cccd(CCCD), card(CARD))))
    finally:
        await gw.stop()
    data = ["--data-dir", tmp_path / "data"]

    [found] = json.loads(run_cli("persons", "find", "--name", "nguyen van", "--birth-date", "1985", *data,
                                 "--json").stdout)
    masked = run_cli("persons", "show", found["id"], *data).stdout.decode()
    shown = json.loads(run_cli("persons", "show", "--identifier", REISSUED, "--reveal", "--operator", "bs.lan",
                               *data, "--json").stdout)
    reveals = sqlite3.connect(tmp_path / "data" / "gateway.db").execute(
        "SELECT operator, os_user, command, persons FROM person_reveals").fetchall()

    assert CCCD not in masked and REISSUED not in masked and "Văn Thử" not in masked
    assert "Nguyễn V. T." in masked and "0790*****999" in masked
    assert {i["value"] for i in found["identifiers"]} == {"0790*****123", "0790*****999", "GD47********789",
                                                         "0123***789"}
    assert shown["id"] == found["id"] and shown["name"] == "Nguyễn Văn Thử"
    assert [i["value"] for i in shown["identifiers"] if i["system"] == "CCCD" and i["current"]] == [REISSUED]
    [(operator, os_user, command, persons)] = reveals
    assert (operator, command, json.loads(persons)) == ("bs.lan", "persons show", [found["id"]])
    assert os_user


def drop_identifiers(conn: sqlite3.Connection, now: float) -> None:
    """A damaged index (a table lost): resolving any person fails."""
    conn.execute("DROP TABLE person_identifiers")


@pytest_twisted.ensureDeferred
async def test_a_fault_of_the_index_costs_neither_the_commit_nor_the_ordering_of_the_message(tmp_path):
    gw = await paused_gateway(tmp_path)
    try:
        await send_all(gw, ("G1", pid(cccd(CCCD))))
        first = queued(gw)["G1"]
        await gw.writer.run(drop_identifiers)
        await send_all(gw, ("G2", pid(cccd(CCCD))))
        rows = queued(gw)
    finally:
        await gw.stop()

    assert rows["G2"] == (first[0], "waiting")


def _listed(bhxh: str, card_value: str = "", cccd_value: str = "", name: str = "Nguyễn Văn Thử") -> PersonFacts:
    ids = [Identifier("BHXH", bhxh)] + ([Identifier("BHYT", card_value)] if card_value else []) + (
        [Identifier("CCCD", cccd_value)] if cccd_value else [])
    keys = identifier_keys(ids)
    return PersonFacts(key=person_key(keys[0][0]), identifiers=keys, name=name, birth_date="19850412", sex="1",
                       plugin="bhxh")


def _index_state(conn: sqlite3.Connection) -> tuple[list, list]:
    return (conn.execute("SELECT id, name, birth_date, sex FROM persons ORDER BY id").fetchall(),
            conn.execute("SELECT key, person_id FROM person_identifiers ORDER BY key").fetchall())


def test_a_list_batch_in_bulk_ends_as_the_same_index_as_one_by_one(tmp_path):
    """Known persons (one with a CCCD of her own), then a batch with a new card, a CCCD attached,
    a renamed person, a row twice, a new person, and a row whose CCCD names one person and whose
    BHXH number another (settled one by one): the bulk path and ``resolve_persons`` agree."""
    known = [_listed("0123456789", CARD), _listed("0123456790", cccd_value=OTHER_CCCD), _listed("0123456791")]
    batch = [_listed("0123456789", RENEWED), _listed("0123456791", cccd_value=CCCD),
             _listed("0123456790", name="Trần Thị Bình", cccd_value=OTHER_CCCD), _listed("0123456792"),
             _listed("0123456792", CARD.replace("0123456789", "0123456792")),
             _listed("0123456790", cccd_value=REISSUED)]
    states, found = [], []
    for bulk in (True, False):
        store = Store(tmp_path / f"{bulk}.db")
        store.migrate()
        conn = store.connect()
        resolve_persons(conn, known, 1.0)
        if bulk:
            found.append(index_list(conn, batch, 2.0))
        else:
            found.append([resolve_persons(conn, [f], 2.0).keys.get(f.key, f.key) for f in batch])
        states.append(_index_state(conn))
        conn.close()

    assert found[0] == found[1]
    assert states[0] == states[1]
    assert found[0][:3] == [person_key(f"BHXH:{n}") for n in ("0123456789", "0123456791")] + [
        person_key(f"CCCD:{OTHER_CCCD}")]
    assert found[0][3] == found[0][4] and found[0][5] == person_key(f"CCCD:{REISSUED}")  # another CCCD: another person


def test_fold_name_folds_each_word_as_the_whole_name_would():
    assert fold_name("Nguyễn Thị  Ánh") == "nguyen thi anh"
    assert fold_name("ĐẶNG  đức") == "dang duc"
    # A mark standing alone between spaces goes, and leaves one space, not two.
    assert fold_name("Lê \u0301 Văn\u00a0\u0323\tBa") == "le van ba"
    assert fold_name("Σ\u20d7 x") == "σ x"
