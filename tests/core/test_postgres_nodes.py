"""Several nodes on one PostgreSQL journal (issue 21): a claimed outbox row is leased to its node,
no other node takes it while the lease runs, any node takes it once the lease has run out, a
start-up gives back only the starting node's own rows, two nodes' group commits that wait for
each other both commit, and two nodes' audit entries make one chain."""
from __future__ import annotations

import threading

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from gateway.core.outbox import OutboxItem, Settled, claim_due, insert_outbox_rows, record_results, recover_in_flight
from gateway.core.audit import AuditEntry, append, verify
from gateway.core.metrics import Metrics
from gateway.core.postgres import PostgresStore
from gateway.core.store import JournalWriter
from tests.support import metric_value, sample_value as metric_value_of

LEASE = 30.0


@pytest.fixture
def nodes(postgres_dsn):
    a, b = (PostgresStore(postgres_dsn, node, LEASE) for node in ("node-a", "node-b"))
    a.migrate()
    conns = a.connect(), b.connect()
    conns[0].execute("INSERT INTO messages (received_at, committed_at, transport, sender, control_id, status, raw, "
                     "repeat_count) VALUES (0, 0, 'mllp', 'S|F', 'C1', 'accepted', X'', 0)")
    yield conns
    for conn in conns:
        conn.close()


def item(key: str, person: str) -> OutboxItem:
    return OutboxItem("store", key, person, "application/json", b"{}")


def owners(conn) -> dict[str, tuple]:
    return {key: (state, owner) for key, state, owner in conn.execute(
        "SELECT idempotency_key, state, lease_owner FROM outbox ORDER BY id")}


def test_a_leased_row_is_no_other_nodes_until_its_lease_runs_out(nodes):
    a, b = nodes
    insert_outbox_rows(a, [(1, item("p1", "P")), (1, item("p2", "P")), (1, item("q1", "Q"))], 10.0)
    [p1] = claim_due(a, 11.0, "store", 1, frozenset())

    assert [d.idempotency_key for d in claim_due(b, 12.0, "store", 10, frozenset())] == ["q1"]
    assert claim_due(b, 11.0 + LEASE - 1, "store", 10, frozenset()) == []
    [taken] = claim_due(b, 11.0 + LEASE + 1, "store", 10, frozenset())
    assert taken.idempotency_key == "p1" and owners(a)["p1"] == ("in_flight", "node-b")

    # Node A comes back from a long pause: its late result is not recorded, the row is B's.
    record_results(a, 50.0, [Settled(p1.row_id, "delivered", "2xx", "", None, 10.0)])
    assert owners(a)["p1"] == ("in_flight", "node-b") and owners(a)["p2"] == ("waiting", None)
    record_results(b, 51.0, [Settled(taken.row_id, "delivered", "2xx", "", None, 10.0)])
    assert owners(a)["p1"] == ("delivered", None) and owners(a)["p2"] == ("pending", None)


def test_a_start_up_gives_back_only_the_starting_nodes_rows(nodes):
    a, b = nodes
    insert_outbox_rows(a, [(1, item("p1", "P")), (1, item("q1", "Q"))], 10.0)
    claim_due(a, 11.0, "store", 1, frozenset())
    claim_due(b, 11.0, "store", 1, frozenset())

    assert recover_in_flight(b, 12.0) == 1

    assert owners(a) == {"p1": ("in_flight", "node-a"), "q1": ("pending", None)}


@pytest_twisted.ensureDeferred
async def test_a_node_names_itself_and_its_backend_in_its_metrics(gateway_on_each_backend):
    store = gateway_on_each_backend.store

    assert metric_value(gateway_on_each_backend, "hssk_node_info", node=store.node, backend=store.dialect) == 1


@pytest_twisted.ensureDeferred
async def test_two_nodes_group_commits_that_deadlock_are_run_again_and_both_commit(postgres_dsn):
    stores = [PostgresStore(postgres_dsn, node, LEASE) for node in ("node-a", "node-b")]
    stores[0].migrate()
    metrics = [Metrics(), Metrics()]
    writers = [JournalWriter(store, reactor, m) for store, m in zip(stores, metrics)]
    both_hold_their_first = threading.Barrier(2)
    runs = []

    def locking(first: str, second: str):
        def task(conn, now):
            runs.append(first)
            conn.lock_keys([first])
            if runs.count(first) == 1:  # the first attempt waits until the other holds its lock
                both_hold_their_first.wait(10)
            conn.lock_keys([second])
            return first + second
        return task

    for writer in writers:
        writer.start()
    try:
        results = await gatherResults([writers[0].run(locking("x", "y")), writers[1].run(locking("y", "x"))])
    finally:
        for writer in writers:
            await writer.stop()

    assert sorted(results) == ["xy", "yx"]
    assert sorted(runs) == ["x", "x", "y"] or sorted(runs) == ["x", "y", "y"]  # one of the two ran again
    assert [metric_value_of(m, "hssk_commit_failures_total") for m in metrics] == [0, 0]


def test_two_nodes_appending_to_the_audit_log_at_once_keep_one_chain(nodes):
    a, b = nodes
    a.execute("BEGIN")
    append(a, 10.0, [AuditEntry("admin", "alice", "outbox.retry")])
    appended = threading.Thread(target=lambda: (b.execute("BEGIN"), append(b, 11.0, [AuditEntry("cli", "bob", "replay")]),
                                                b.execute("COMMIT")))
    appended.start()
    appended.join(0.5)
    assert appended.is_alive(), "node B chained while node A's entry was not committed"
    a.execute("COMMIT")
    appended.join(10)

    assert verify(a) == (2, None)
