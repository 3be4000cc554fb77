"""Several nodes on one PostgreSQL outbox (issue 21): a claimed row is leased to its node, no other
node takes it while the lease runs, any node takes it once the lease has run out, and a start-up
gives back only the starting node's own rows."""
from __future__ import annotations

import pytest
import pytest_twisted

from gateway.core.outbox import OutboxItem, Settled, claim_due, insert_outbox_rows, record_results, recover_in_flight
from gateway.core.postgres import PostgresStore
from tests.support import metric_value

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
