"""Per-person sequencing in the outbox table itself, on a real journal of each backend.

A person's first undelivered row is pending, the rest wait; each finished row (delivered or
dead) lets exactly the next one go, so claiming never has to look past pending rows.
"""
from __future__ import annotations

import pytest

from gateway.core.outbox import (OutboxItem, Settled, claim_due, insert_outbox_rows, record_results,
                                 recover_in_flight)


@pytest.fixture
def conn(any_store):
    conn = any_store.connect()
    conn.execute("INSERT INTO messages (received_at, committed_at, transport, sender, control_id, status, raw, "
                 "repeat_count) VALUES (0, 0, 'mllp', 'S|F', 'C1', 'accepted', X'', 0)")
    yield conn
    conn.close()


def item(key: str, person: str, destination: str = "store") -> OutboxItem:
    return OutboxItem(destination, key, person, "application/json", b"{}")


def states(conn) -> dict[str, str]:
    return dict(conn.execute("SELECT idempotency_key, state FROM outbox ORDER BY id"))


def test_a_persons_later_rows_wait_and_move_up_one_at_a_time(conn):
    insert_outbox_rows(conn, [(1, item("a1", "A")), (1, item("b1", "B")), (1, item("a2", "A"))], 10.0)
    insert_outbox_rows(conn, [(1, item("a3", "A"))], 11.0)
    assert states(conn) == {"a1": "pending", "b1": "pending", "a2": "waiting", "a3": "waiting"}

    claimed = claim_due(conn, 20.0, "store", 10, frozenset())
    assert [d.idempotency_key for d in claimed] == ["a1", "b1"]

    by_key = {d.idempotency_key: d.row_id for d in claimed}
    record_results(conn, 21.0, [Settled(by_key["a1"], "dead", "4xx", "HTTP 400", None, 10.0)])
    assert states(conn) == {"a1": "dead", "b1": "in_flight", "a2": "pending", "a3": "waiting"}

    [a2] = claim_due(conn, 22.0, "store", 10, frozenset({"B"}))
    record_results(conn, 23.0, [Settled(a2.row_id, "pending", "5xx", "HTTP 503", 100.0, 10.0)])
    assert states(conn)["a3"] == "waiting"  # a retrying row still holds its person's later rows
    assert claim_due(conn, 50.0, "store", 10, frozenset({"B"})) == []


def test_sequencing_is_per_destination_and_skipped_for_unordered_ones(conn):
    insert_outbox_rows(conn, [(1, item("s1", "A")), (1, item("s2", "A")),
                              (1, item("n1", "A", "national")), (1, item("w1", "A", "weekly")),
                              (1, item("w2", "A", "weekly"))], 10.0, unordered=frozenset({"weekly"}))

    assert states(conn) == {"s1": "pending", "s2": "waiting", "n1": "pending", "w1": "pending", "w2": "pending"}


def test_start_up_releases_waiting_rows_with_nothing_ahead_of_them(conn):
    insert_outbox_rows(conn, [(1, item("a1", "A")), (1, item("a2", "A")), (1, item("a3", "A"))], 10.0)
    conn.execute("DELETE FROM outbox WHERE idempotency_key = 'a1'")  # e.g. an operator's manual purge

    recover_in_flight(conn, 30.0)

    assert states(conn) == {"a2": "pending", "a3": "waiting"}


def test_a_row_queued_already_does_not_hold_back_the_persons_next_row(conn):
    insert_outbox_rows(conn, [(1, item("a1", "A"))], 10.0)
    [a1] = claim_due(conn, 11.0, "store", 10, frozenset())
    record_results(conn, 12.0, [Settled(a1.row_id, "delivered", "2xx", "", None, 10.0)])

    # The same record again (a replay, another client's copy of the message) beside the person's next one.
    insert_outbox_rows(conn, [(1, item("a1", "A")), (1, item("a2", "A"))], 13.0)

    assert states(conn) == {"a1": "delivered", "a2": "pending"}
