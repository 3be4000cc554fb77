"""``hssk-gateway outbox ...`` as operators run it: the installed console script in a subprocess,
against a journal whose outbox a real gateway filled — rows delivered to a folder, rows dead
because their folder cannot exist, rows pending because theirs is in the way — and, for the
writes, against a running gateway that must pick the change up."""
import json
import shutil
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread

from tests.support import run_cli, run_json, TestPlugin, connect_mllp, hl7, metric_value, msa, send_and_receive, start_gateway, wait_until

ADT_CONTROL_IDS = ("OB-1", "OB-2", "OB-3")


def destinations(blocker: Path) -> dict[str, dict]:
    """``blocker`` is a regular file: a folder inside it cannot exist (NotADirectoryError, dead at
    once) and a folder at its path cannot be made (FileExistsError, retried after a backoff that
    is an hour long, so the rows stay pending; its circuit opens on that first failure)."""
    return {
        "delivered_here": {"kind": "file", "directory": "outbox/ok"},
        "dead_end": {"kind": "file", "directory": str(blocker / "out"), "message_types": ["ADT^*"]},
        "stuck": {"kind": "file", "directory": str(blocker), "message_types": ["ADT^*"],
                  "backoff_base_seconds": 3600, "backoff_cap_seconds": 3600, "circuit_failures": 1},
        "weekly": {"kind": "batch", "directory": "outbox/weekly", "schedule": "weekly MON 02:00",
                   "message_types": ["ZZZ^Z99"]},
    }


def overrides_for(tables: dict[str, dict]) -> dict:
    return {f"destinations.{name}.{key}": value for name, table in tables.items() for key, value in table.items()}


def write_config(path: Path, tables: dict[str, dict]) -> Path:
    """The same destinations as a TOML file, for the CLI's --config (JSON scalars and lists of
    plain strings are valid TOML)."""
    path.write_text("".join(f"[destinations.{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
                            for name, table in tables.items()))
    return path


def counts(database: Path) -> dict[tuple[str, str], int]:
    conn = sqlite3.connect(database)
    try:
        return {(d, s): n for d, s, n in conn.execute(
            "SELECT destination, state, count(*) FROM outbox GROUP BY destination, state")}
    finally:
        conn.close()


def attempts_of(database: Path, destination: str) -> list[int]:
    conn = sqlite3.connect(database)
    try:
        return [a for (a,) in conn.execute("SELECT attempts FROM outbox WHERE destination = ? ORDER BY id",
                                           (destination,))]
    finally:
        conn.close()


def recorded_circuit(database: Path, destination: str) -> str | None:
    conn = sqlite3.connect(database)
    try:
        row = conn.execute("SELECT circuit_state FROM destination_state WHERE destination = ?",
                           (destination,)).fetchone()
        return row[0] if row else None
    finally:
        conn.close()


def settled(database: Path) -> bool:
    """Every row has had its first outcome: 4 delivered, 3 dead, the stuck person's first row tried
    (their two later rows wait behind it) and the open circuit recorded."""
    found = counts(database)
    return (found.get(("delivered_here", "delivered")) == 4 and found.get(("dead_end", "dead")) == 3
            and found.get(("stuck", "pending")) == 1 and found.get(("stuck", "waiting")) == 2
            and attempts_of(database, "stuck")[0] >= 1
            and not any(state == "in_flight" for _, state in found)
            and recorded_circuit(database, "stuck") == "open")


async def fill_outbox(data_dir: Path, tables: dict[str, dict]) -> None:
    """Three ADT messages of one person (routed to all three file destinations) and one ORU
    (delivered_here only), then wait until every row has had its first outcome and stop."""
    gw = await start_gateway(data_dir, plugins=[TestPlugin()], **overrides_for(tables))
    try:
        client = await connect_mllp(gw)
        for control_id in ADT_CONTROL_IDS:
            assert msa(await send_and_receive(client, hl7(control_id=control_id)))[1] == "AA"
        oru = hl7(control_id="OB-ORU", sending_app="LIS_THU_NGHIEM", message_type="ORU^R01^ORU_R01")
        assert msa(await send_and_receive(client, oru))[1] == "AA"
        client.transport.loseConnection()
        await client.closed
        await wait_until(lambda: settled(gw.config.database_path), what="every outbox row's first outcome")
    finally:
        await gw.stop()


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """(data dir, config file) of an outbox a real gateway filled and then stopped. Read-only:
    tests that write work on a copy (``journal``)."""
    root = tmp_path_factory.mktemp("outbox_cli")
    blocker = root / "blocker"
    blocker.write_text("a file where the destinations want a folder\n")
    tables = destinations(blocker)
    data_dir = root / "data"
    pytest_twisted.blockon(ensureDeferred(fill_outbox(data_dir, tables)))
    return data_dir, write_config(root / "gateway.toml", tables)


@pytest.fixture
def journal(filled, tmp_path):
    """A private copy of the filled data dir, for tests that change it."""
    data_dir, config = filled
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    return copy, config


def rows_by_destination(data_dir: Path, config: Path, destination: str, *flags) -> list[dict]:
    return run_json("outbox", "list", "--config", config, "--data-dir", data_dir, "--dest", destination, *flags)


# --- status ---------------------------------------------------------------------------------------


def test_status_table_shows_counts_oldest_age_circuit_and_paused_per_destination(filled):
    data_dir, config = filled

    result = run_cli("outbox", "status", "--config", config, "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["DESTINATION", "KIND", "PENDING", "WAITING", "IN", "FLIGHT", "DEAD", "DELIVERED",
                                "OLDEST", "CIRCUIT", "PAUSED", "NOT", "ROUTED"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["delivered_here"] == ["delivered_here", "file", "0", "0", "0", "0", "4", "-", "closed", "no", "0"]
    assert rows["dead_end"] == ["dead_end", "file", "0", "0", "0", "3", "0", "-", "closed", "no", "0"]
    assert rows["stuck"][:7] == ["stuck", "file", "1", "2", "0", "0", "0"] and rows["stuck"][7] != "-"
    assert rows["stuck"][8] == "open" and rows["stuck"][9][-1] == "s" and rows["stuck"][10:] == ["no", "0"]
    assert rows["weekly"] == ["weekly", "batch", "0", "0", "0", "0", "0", "-", "-", "no", "0"]


def test_status_json_gives_numbers_and_the_recorded_circuit_state(filled):
    data_dir, config = filled

    status = run_json("outbox", "status", "--config", config, "--data-dir", data_dir)

    assert set(status) == {"delivered_here", "dead_end", "stuck", "weekly"}
    assert {entry["not_routed"] for entry in status.values()} == {0}
    stuck = status["stuck"]
    assert (stuck["pending"], stuck["waiting"], stuck["in_flight"], stuck["dead"], stuck["delivered"]) == (1, 2, 0, 0, 0)
    assert stuck["oldest_pending_age_seconds"] > 0
    assert (stuck["kind"], stuck["configured"], stuck["paused"], stuck["circuit_state"]) == ("file", True, False, "open")
    assert 0 < stuck["circuit_since"] <= datetime.now().timestamp()
    assert status["delivered_here"]["circuit_state"] == "closed"
    assert status["weekly"]["pending"] == 0 and status["weekly"]["circuit_state"] is None


@pytest_twisted.ensureDeferred
async def test_a_restart_without_a_destination_forgets_its_circuit(journal):
    data_dir, config = journal
    tables = destinations(Path("unused"))
    tables["stuck"]["enabled"] = False
    gw = await start_gateway(data_dir, plugins=[TestPlugin()], **overrides_for(tables))
    await gw.stop()

    status = await deferToThread(run_json, "outbox", "status", "--config", config, "--data-dir", data_dir)

    assert status["stuck"]["circuit_state"] is None and status["stuck"]["pending"] == 1
    assert status["delivered_here"]["circuit_state"] == "closed"


def test_status_reads_a_journal_the_gateway_has_not_migrated_yet(tmp_path):
    """The CLI of a newer version, before the gateway was restarted on it (journal at 0002)."""
    import sqlite_utils

    from gateway.core.store import MIGRATIONS

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = sqlite_utils.Database(data_dir / "gateway.db")
    db["_migrations"].create({"name": str, "applied_at": float}, pk="name")
    for name, step in MIGRATIONS[:2]:
        step(db)
        db["_migrations"].insert({"name": name, "applied_at": 0.0})
    db["destination_state"].insert({"destination": "lab", "paused": 1, "updated_at": 0.0})
    db.close()

    status = run_json("outbox", "status", "--data-dir", data_dir)

    assert (status["lab"]["paused"], status["lab"]["circuit_state"]) == (True, None)


def test_status_without_the_config_still_lists_destinations_the_outbox_knows(filled):
    data_dir, _ = filled

    status = run_json("outbox", "status", "--data-dir", data_dir)

    assert set(status) == {"delivered_here", "dead_end", "stuck"}
    assert status["dead_end"]["dead"] == 3 and status["dead_end"]["configured"] is False


# --- list and show --------------------------------------------------------------------------------


def test_list_dead_rows_of_one_destination_says_why_each_died(filled):
    data_dir, config = filled

    rows = rows_by_destination(data_dir, config, "dead_end", "--state", "dead")

    assert len(rows) == 3
    assert {(r["destination"], r["state"], r["attempts"], r["last_result"]) for r in rows} == {
        ("dead_end", "dead", 1, "io_error")}
    assert all("cannot write into" in r["last_error"] for r in rows)
    assert all("payload" not in r for r in rows)


def test_list_filters_by_state_across_destinations(filled):
    data_dir, _ = filled

    rows = run_json("outbox", "list", "--data-dir", data_dir, "--state", "delivered")

    assert [r["destination"] for r in rows] == ["delivered_here"] * 4


def test_list_limit_keeps_the_oldest_rows(filled):
    data_dir, _ = filled
    everything = run_json("outbox", "list", "--data-dir", data_dir)

    first_two = run_json("outbox", "list", "--data-dir", data_dir, "--limit", "2")

    assert len(everything) == 10
    assert [r["id"] for r in first_two] == sorted(r["id"] for r in everything)[:2]


def test_list_table_shows_next_attempt_for_pending_rows_and_truncated_errors(filled):
    data_dir, config = filled

    result = run_cli("outbox", "list", "--config", config, "--data-dir", data_dir, "--dest", "stuck")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["ID", "DESTINATION", "STATE", "ATTEMPTS", "NEXT", "ATTEMPT", "LAST", "RESULT", "LAST",
                                "ERROR", "CREATED"]
    tried = lines[1]
    fields = tried.split()
    assert fields[1:3] == ["stuck", "pending"] and int(fields[3]) >= 1
    assert datetime.fromisoformat(fields[4]) > datetime.now()  # backed off by up to an hour
    assert fields[5] == "io_error"
    assert "…" in tried and "writing into" in tried
    assert datetime.fromisoformat(fields[-1]) <= datetime.now()


def test_list_never_prints_a_payload(filled):
    data_dir, _ = filled
    payload = run_cli("outbox", "show", "1", "--payload", "--data-dir", data_dir).stdout

    listed = run_cli("outbox", "list", "--data-dir", data_dir).stdout + run_cli(
        "outbox", "list", "--data-dir", data_dir, "--json").stdout

    assert b"079085000123" in payload
    assert b"079085000123" not in listed


def test_show_prints_the_row_without_its_payload_but_with_its_size(filled):
    data_dir, _ = filled

    result = run_cli("outbox", "show", "1", "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    stored = sqlite3.connect(data_dir / "gateway.db").execute("SELECT payload FROM outbox WHERE id = 1").fetchone()[0]
    assert row["id"] == 1 and "payload" not in row
    assert row["payload_bytes"] == len(stored)


def test_show_payload_writes_the_exact_bytes_queued(filled):
    data_dir, _ = filled

    result = run_cli("outbox", "show", "2", "--payload", "--data-dir", data_dir)

    stored = sqlite3.connect(data_dir / "gateway.db").execute("SELECT payload FROM outbox WHERE id = 2").fetchone()[0]
    assert result.returncode == 0, result.stderr
    assert result.stdout == stored


@pytest.mark.parametrize(("args", "code", "message"), [
    (("outbox", "show", "999999"), 1, b"no outbox row with id 999999"),
    (("outbox", "show", "abc"), 2, b"'abc' is not an outbox row id"),
    (("outbox", "retry", "0"), 2, b"'0' is not an outbox row id"),
    (("outbox", "list", "--dest", "nowhere"), 1, b"unknown destination 'nowhere'"),
    (("outbox", "list", "--state", "lost"), 2, b"invalid choice: 'lost'"),
    (("outbox", "list", "--limit", "-3"), 2, b"'-3' is not a positive integer"),
    (("outbox", "pause", "nowhere"), 1, b"unknown destination 'nowhere'"),
    (("outbox", "retry", "--dest", "nowhere", "--dead"), 1, b"unknown destination 'nowhere'"),
    (("outbox", "purge", "--delivered-before", "16/03/2025"), 2, b"is not an ISO date"),
    (("outbox", "purge"), 2, b"--delivered-before"),
])
def test_refusals_exit_nonzero_and_say_what_was_wrong(filled, args, code, message):
    data_dir, config = filled

    result = run_cli(*args, "--config", config, "--data-dir", data_dir)

    assert result.returncode == code
    assert message in result.stderr
    assert b"Traceback" not in result.stderr


def test_unknown_destination_message_lists_the_known_ones(filled):
    data_dir, config = filled

    result = run_cli("outbox", "list", "--dest", "nowhere", "--config", config, "--data-dir", data_dir)

    assert b"configured: dead_end, delivered_here, stuck, weekly; in the outbox: dead_end, delivered_here, stuck" in (
        result.stderr)


def test_outbox_commands_without_a_journal_fail_clearly_and_create_nothing(tmp_path):
    missing = tmp_path / "no-such-dir"

    result = run_cli("outbox", "status", "--data-dir", missing)

    assert result.returncode != 0
    assert f"no journal at {missing / 'gateway.db'}".encode() in result.stderr
    assert not missing.exists()


# --- writes against a stopped gateway's journal -----------------------------------------------------


def test_retry_one_dead_row_makes_it_pending_with_attempts_reset(journal):
    data_dir, config = journal
    dead = rows_by_destination(data_dir, config, "dead_end", "--state", "dead")[0]

    result = run_cli("outbox", "retry", dead["id"], "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr
    assert b"pending again" in result.stdout and b"next refresh" in result.stdout
    after = json.loads(run_cli("outbox", "show", dead["id"], "--data-dir", data_dir).stdout)
    assert (after["state"], after["attempts"]) == ("pending", 0)
    assert counts(data_dir / "gateway.db")[("dead_end", "dead")] == 2


def test_retry_of_a_row_that_is_not_dead_is_refused_and_changes_nothing(journal):
    data_dir, config = journal
    pending = rows_by_destination(data_dir, config, "stuck")[0]

    result = run_cli("outbox", "retry", pending["id"], "--data-dir", data_dir)

    assert result.returncode == 1
    assert f"outbox row {pending['id']} is pending, not dead".encode() in result.stderr
    assert json.loads(run_cli("outbox", "show", pending["id"], "--data-dir", data_dir).stdout)["attempts"] == (
        pending["attempts"])


def test_retry_dest_dead_makes_every_dead_row_of_that_destination_pending(journal):
    data_dir, config = journal

    result = run_cli("outbox", "retry", "--dest", "dead_end", "--dead", "--config", config, "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"3 dead rows of dead_end are pending again")
    found = counts(data_dir / "gateway.db")
    assert found[("dead_end", "pending")] == 3 and ("dead_end", "dead") not in found


@pytest.mark.parametrize(("args", "message"), [
    ((), b"give either a row ID or --dest DEST --dead"),
    (("1", "--dest", "dead_end", "--dead"), b"give either a row ID or --dest DEST --dead"),
    (("--dest", "dead_end"), b"--dest needs --dead"),
])
def test_retry_needs_exactly_one_target(journal, args, message):
    data_dir, config = journal

    result = run_cli("outbox", "retry", *args, "--config", config, "--data-dir", data_dir)

    assert result.returncode == 1
    assert message in result.stderr
    assert counts(data_dir / "gateway.db")[("dead_end", "dead")] == 3


def test_pause_and_resume_set_the_flag_that_status_shows(journal):
    data_dir, config = journal

    paused = run_cli("outbox", "pause", "stuck", "--config", config, "--data-dir", data_dir)
    status_paused = run_json("outbox", "status", "--config", config, "--data-dir", data_dir)
    resumed = run_cli("outbox", "resume", "stuck", "--config", config, "--data-dir", data_dir)
    status_resumed = run_json("outbox", "status", "--config", config, "--data-dir", data_dir)

    assert paused.returncode == 0 and resumed.returncode == 0
    assert b"stops claiming its rows at its next refresh" in paused.stdout
    assert status_paused["stuck"]["paused"] is True and status_paused["dead_end"]["paused"] is False
    assert status_resumed["stuck"]["paused"] is False


def test_a_configured_destination_without_rows_can_be_paused(journal):
    data_dir, config = journal

    result = run_cli("outbox", "pause", "weekly", "--config", config, "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr
    assert run_json("outbox", "status", "--config", config, "--data-dir", data_dir)["weekly"]["paused"] is True


def test_flush_records_the_request_for_the_running_gateway_and_says_so(journal):
    data_dir, config = journal

    result = run_cli("outbox", "flush", "weekly", "--config", config, "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr
    assert b"only records the request" in result.stdout and b"at its next refresh" in result.stdout
    requested = run_json("outbox", "status", "--config", config, "--data-dir", data_dir)["weekly"]["flush_requested_at"]
    assert requested is not None and abs(requested - datetime.now().timestamp()) < 60


def test_flush_of_a_destination_that_is_not_a_batch_is_refused(journal):
    data_dir, config = journal

    result = run_cli("outbox", "flush", "dead_end", "--config", config, "--data-dir", data_dir)

    assert result.returncode == 1
    assert b"dead_end is a file destination; flush runs a configured batch destination's batch" in result.stderr
    assert run_json("outbox", "status", "--config", config, "--data-dir", data_dir)["dead_end"][
        "flush_requested_at"] is None


def test_purge_deletes_only_rows_delivered_before_the_date(journal):
    data_dir, config = journal

    too_early = run_cli("outbox", "purge", "--delivered-before", "2000-01-01", "--data-dir", data_dir)
    tomorrow = (datetime.now() + timedelta(days=1)).date().isoformat()
    result = run_cli("outbox", "purge", "--delivered-before", tomorrow, "--data-dir", data_dir)

    assert too_early.returncode == 0 and too_early.stdout.startswith(b"purged 0 delivered rows")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"purged 4 delivered rows")
    found = counts(data_dir / "gateway.db")
    assert ("delivered_here", "delivered") not in found
    assert found[("dead_end", "dead")] == 3 and (found[("stuck", "pending")], found[("stuck", "waiting")]) == (1, 2)


def test_purge_blanks_the_journal_body_only_of_messages_with_nothing_left_to_deliver(journal):
    data_dir, _ = journal
    tomorrow = (datetime.now() + timedelta(days=1)).date().isoformat()

    run_cli("outbox", "purge", "--delivered-before", tomorrow, "--data-dir", data_dir)

    sizes = dict(sqlite3.connect(data_dir / "gateway.db").execute("SELECT control_id, length(raw) FROM messages"))
    assert sizes["OB-ORU"] == 0  # its one row was delivered and purged
    assert all(sizes[c] > 0 for c in ADT_CONTROL_IDS)  # dead and pending rows still need them


# --- writes while the gateway runs ---------------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def running(tmp_path):
    """A running gateway with the same destinations, one dead row and one pending row settled."""
    blocker = tmp_path / "blocker"
    blocker.write_text("in the way\n")
    tables = destinations(blocker)
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], **overrides_for(tables))
    client = await connect_mllp(gw)
    assert msa(await send_and_receive(client, hl7(control_id="LIVE-1")))[1] == "AA"
    client.transport.loseConnection()
    await client.closed
    database = gw.config.database_path
    await wait_until(lambda: counts(database).get(("dead_end", "dead")) == 1
                     and counts(database).get(("delivered_here", "delivered")) == 1
                     and attempts_of(database, "stuck")[0] >= 1, what="the first outcomes")
    yield gw, write_config(tmp_path / "gateway.toml", tables)
    await gw.stop()


@pytest_twisted.ensureDeferred
async def test_pause_from_the_cli_reaches_the_running_gateway_at_its_next_refresh(running):
    gw, config = running

    assert metric_value(gw, "hssk_destination_paused", destination="dead_end") == 0

    result = await deferToThread(run_cli, "outbox", "pause", "dead_end", "--config", config,
                                 "--data-dir", gw.config.data_dir)
    await gw.delivery.refresh()

    assert result.returncode == 0, result.stderr
    assert metric_value(gw, "hssk_destination_paused", destination="dead_end") == 1


@pytest_twisted.ensureDeferred
async def test_retry_from_the_cli_is_delivered_again_by_the_running_gateway(running):
    gw, config = running
    labels = {"destination": "dead_end", "outcome": "dead", "result": "io_error"}
    assert metric_value(gw, "hssk_delivery_attempts_total", **labels) == 1

    result = await deferToThread(run_cli, "outbox", "retry", "--dest", "dead_end", "--dead", "--config", config,
                                 "--data-dir", gw.config.data_dir)
    await gw.delivery.refresh()

    assert result.returncode == 0, result.stderr
    await wait_until(lambda: metric_value(gw, "hssk_delivery_attempts_total", **labels) == 2,
                     what="a second attempt at the retried row")
    await wait_until(lambda: counts(gw.config.database_path).get(("dead_end", "dead")) == 1,
                     what="the second outcome recorded")
    assert attempts_of(gw.config.database_path, "dead_end") == [1]  # reset by the retry, then one more attempt
