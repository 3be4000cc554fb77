"""``hssk_migrations`` and ``hssk_journal``: a plugin's own tables, created by named steps of its
own after the core's, recorded per set and never run twice, and read and written only through
the journal object the gateway hands it — whose writer is the journal's one writer, and which
lets a plugin change its own tables and nothing else.

The plugins are ``tests/hooks/person_links.py`` and the small ones below; nothing under
``gateway/`` knows them."""
from __future__ import annotations

import sqlite3

import pytest
import pytest_twisted

from gateway.core.plugin_journal import MigrationError, PluginTaskError
from gateway.plugin import MigrationSet
from tests.core.fault_plugin import start_isolated
from tests.hooks import person_links
from tests.hooks.support import installed
from tests.support import (TestPlugin, connect_mllp, err_segments, hl7, journal_rows, msa, outbox_rows, sample,
                           send_and_receive, start_gateway)

PERSON = "PID|1||079085000111^^^BCA^NI||Nguyễn^Văn A||19850412|M"
FILES = {"files": {"kind": "file", "directory": "files"}}


def query(gateway, sql: str) -> list[tuple]:
    conn = sqlite3.connect(gateway.config.database_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


class Audit:
    """Writes one row per record set it checks, from the pipeline worker, through ``journal.wait``."""

    def __init__(self, steps=None) -> None:
        self.steps = steps or [("0001_create_seen", lambda db: db["audit_seen"].create({"kind": str}))]
        self.journal = None

    def hssk_migrations(self):
        return [MigrationSet("audit", self.steps)]

    def hssk_journal(self, journal):
        self.journal = journal

    def hssk_check(self, message, records):
        self.journal.wait(self.journal.write, lambda conn, now: conn.execute(
            "INSERT INTO audit_seen (kind) VALUES (?)", (records.kind,)))


@pytest_twisted.ensureDeferred
async def test_the_plugins_steps_run_once_after_the_cores_recorded_per_set(tmp_path):
    data = tmp_path / "data"
    gw = await start_gateway(data, plugins=[TestPlugin(), person_links])
    await gw.stop()
    first = query(gw, "SELECT set_name, step, applied_at FROM _plugin_migrations ORDER BY step")
    gw = await start_gateway(data, plugins=[TestPlugin(), person_links])
    await gw.stop()

    assert [row[:2] for row in first] == [("person_links", "0001_create_merges"),
                                          ("person_links", "0002_index_surviving")]
    assert query(gw, "SELECT set_name, step, applied_at FROM _plugin_migrations ORDER BY step") == first
    assert query(gw, "SELECT name FROM sqlite_master WHERE tbl_name = 'person_links_merges' AND type = 'index' "
                     "AND name NOT LIKE 'sqlite_%'") == [("person_links_merges_by_surviving",)]


@pytest_twisted.ensureDeferred
async def test_a_step_added_later_is_the_only_one_that_runs(tmp_path):
    data = tmp_path / "data"
    audit = Audit()
    gw = await start_gateway(data, plugins=[TestPlugin(), audit])
    await gw.stop()
    ran = []
    audit.steps = [audit.steps[0], ("0002_add_at", lambda db: ran.append(db["audit_seen"].add_column("at", float)))]

    gw = await start_gateway(data, plugins=[TestPlugin(), audit])
    await gw.stop()

    assert len(ran) == 1
    assert [step for (step,) in query(gw, "SELECT step FROM _plugin_migrations")] == ["0001_create_seen", "0002_add_at"]


@pytest.mark.parametrize("step", [
    lambda db: db.execute("DELETE FROM messages"),
    lambda db: db["outbox"].add_column("plugin_note", str),
    lambda db: db["person_links_merges"].create({"x": str}),
], ids=["core_rows", "core_schema", "another_plugins_table"])
@pytest_twisted.ensureDeferred
async def test_a_step_that_touches_a_table_not_its_own_is_rolled_back_and_stops_start_up(tmp_path, step):
    audit = Audit(steps=[("0001_create_seen", lambda db: (db["audit_seen"].create({"kind": str}), step(db)))])

    with pytest.raises(MigrationError) as raised:
        await start_gateway(tmp_path / "data", plugins=[TestPlugin(), audit])

    assert "schema step '0001_create_seen' of plugin migration set 'audit' failed" in str(raised.value)
    assert "may create and change only tables named audit_" in str(raised.value)
    conn = sqlite3.connect(tmp_path / "data" / "gateway.db")
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'audit_seen'").fetchall() == []
    assert conn.execute("SELECT count(*) FROM _plugin_migrations").fetchone() == (0,)


@pytest_twisted.ensureDeferred
async def test_a_hook_on_a_worker_reads_and_writes_the_plugins_tables(tmp_path):
    audit = Audit()
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), person_links, audit], destinations=FILES)
    try:
        await person_links.JOURNAL.write(lambda conn, now: conn.execute(
            "INSERT INTO person_links_merges VALUES ('079085000111', '079085000999', 'CCCD', ?)", (now,)))
        client = await connect_mllp(gw)
        ack = await send_and_receive(client, hl7(PERSON, control_id="OLD1"))
        client.transport.loseConnection()
    finally:
        await gw.stop()

    assert msa(ack)[1] == "AA"
    [warning] = err_segments(ack)
    assert (warning[4], warning[8]) == ("W", "PID-3: 0790*****111 was merged into 0790*****999")
    assert query(gw, "SELECT kind FROM audit_seen") == [("ADT^A04",)]


@pytest_twisted.ensureDeferred
async def test_a_plugin_task_that_touches_the_gateways_tables_fails_alone(tmp_path):
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), person_links], destinations=FILES)
    try:
        client = await connect_mllp(gw)
        await send_and_receive(client, hl7(PERSON, control_id="KEEP1"))
        with pytest.raises(PluginTaskError, match="not authorized"):
            await person_links.JOURNAL.write(lambda conn, now: conn.execute("DELETE FROM outbox"))
        with pytest.raises(PluginTaskError, match="not authorized"):
            await person_links.JOURNAL.write(lambda conn, now: conn.execute("COMMIT"))
        after = await send_and_receive(client, hl7(PERSON, control_id="KEEP2"))
        client.transport.loseConnection()
    finally:
        await gw.stop()

    assert msa(after)[1] == "AA"
    assert len(outbox_rows(gw)) == 2 and len(journal_rows(gw)) == 2


@pytest_twisted.ensureDeferred
async def test_a_pipeline_child_reads_the_plugins_table_and_cannot_write(tmp_path, monkeypatch):
    env = installed(tmp_path, {"person_links": "tests.hooks.person_links", "iis_vxu": "tests.hooks.iis_vxu"})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    gw = await start_isolated(tmp_path, destinations=FILES)
    try:
        await person_links.JOURNAL.write(lambda conn, now: conn.execute(
            "INSERT INTO person_links_merges VALUES ('0000054321', '0000099999', 'BHXH', ?)", (now,)))
        client = await connect_mllp(gw)
        client.send(sample("vxu_v04.hl7"))
        frames = await client.wait_frames(2)
        client.transport.loseConnection()
    finally:
        await gw.stop()

    assert any(err[8].startswith("PID-3: 0000") and "was merged into" in err[8] for err in err_segments(frames[-1]))
