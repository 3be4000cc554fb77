"""Feeding a file an operator loads: each row of a population list (the plugin source of
``tests/sources/population_csv.py``) becomes one journaled message with idempotency keys of its
own, through the same intake, journal and outbox as what senders send; feeding the file again
queues nothing twice, so a feed that stopped goes on where it stopped. Through the running
gateway's admin API (``hssk-gateway feed --url``), or in the CLI's own process while no gateway
holds the data directory."""
import json
import os
import signal
import sqlite3
import subprocess

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.sources import population_csv
from tests.support import (
    CLI,
    REPO,
    TestPlugin,
    http_request,
    journal_rows,
    outbox_rows,
    run_cli,
    start_gateway,
    wait_until,
)

HEADER = "MA_CSKCB,SO_CCCD,HO_TEN,NGAY_SINH,GIOI_TINH,MA_THE_BHYT"
ROWS = [
    "79001,079085000123,Nguyễn Văn An,19850412,1,",
    "79001,,Trần Thị Bình,19900101,2,",  # no SO_CCCD: the row's own AE, the others go on
    "79001,079090000456,Lê Văn Cường,19901231,1,DN4790123456789",
    "79001,079301000789,Phạm Thị Dung,20010203,2,",
]


def population_file(path, rows=ROWS) -> bytes:
    data = ("\ufeff" + HEADER + "\r\n" + "\r\n".join(rows) + "\r\n").encode("utf-8")
    path.write_bytes(data)
    return data


async def start(data_dir, drop):
    return await start_gateway(data_dir, plugins=[TestPlugin(), population_csv], destinations={
        "files": {"kind": "file", "format": "json", "directory": str(drop)}})


@pytest_twisted.async_yield_fixture
async def gw(tmp_path):
    """A gateway with the population plugin and a JSON file destination under ``tmp_path``."""
    gateway = await start(tmp_path / "data", tmp_path / "drop")
    yield gateway
    await gateway.stop()


async def feed_by_admin(gw, data: bytes, name: str = "district7.csv", source: str = "population_csv"):
    return await http_request(gw, "POST", f"/admin/feed/{source}?file={name}", data, "text/csv")


@pytest.fixture
def population_installed(tmp_path, monkeypatch):
    """The population plugin installed through the entry-point group, as an integrator installs
    one, for the CLI in a subprocess."""
    site = tmp_path / "site"
    info = site / "hssk_population_csv-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hssk-population-csv\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[hssk_gateway.plugins]\npopulation_csv = tests.sources.population_csv\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), str(site),
                                                                   os.environ.get("PYTHONPATH")])))


@pytest_twisted.ensureDeferred
async def test_each_row_fed_through_the_running_gateway_is_one_journaled_message_with_its_own_keys(gw, tmp_path):
    report = (await feed_by_admin(gw, population_file(tmp_path / "district7.csv"))).json()

    assert {k: report[k] for k in ("source", "file", "records", "accepted", "repeats", "errors", "stopped")} == {
        "source": "population_csv", "file": "district7.csv", "records": 4, "accepted": 3, "repeats": 0,
        "errors": 1, "stopped": None}
    assert [(p["record"], p["ack_code"], p["errors"][0]["location"]) for p in report["problems"]] == [
        (2, "AE", "ROW^SO_CCCD")]
    rows = journal_rows(gw)
    assert [(r["transport"], r["listener"], r["source"], r["status"]) for r in rows] == [
        ("feed", "district7.csv", "population_csv", s) for s in ("accepted", "error", "accepted", "accepted")]
    queued = outbox_rows(gw)
    assert [q["message_id"] for q in queued] == [rows[0]["id"], rows[2]["id"], rows[3]["id"]]
    assert len({q["idempotency_key"] for q in queued}) == 3
    await wait_until(lambda: len(list((tmp_path / "drop").glob("*"))) == 3, what="three files delivered")


@pytest_twisted.ensureDeferred
async def test_feeding_the_same_file_again_queues_nothing_twice(gw, tmp_path):
    data = population_file(tmp_path / "district7.csv")
    await feed_by_admin(gw, data)

    again = (await feed_by_admin(gw, data)).json()

    assert (again["records"], again["accepted"], again["repeats"], again["errors"]) == (4, 0, 4, 0)
    assert len(journal_rows(gw)) == 4 and len(outbox_rows(gw)) == 3


@pytest_twisted.ensureDeferred
async def test_a_feed_that_stopped_half_way_goes_on_where_it_stopped_when_the_file_is_fed_again(gw, tmp_path):
    await feed_by_admin(gw, population_file(tmp_path / "half.csv", ROWS[:1]))

    whole = (await feed_by_admin(gw, population_file(tmp_path / "district7.csv"))).json()

    assert (whole["accepted"], whole["repeats"], whole["errors"]) == (2, 1, 1)
    assert [r["status"] for r in journal_rows(gw)] == ["accepted", "error", "accepted", "accepted"]
    assert len(outbox_rows(gw)) == 3


@pytest_twisted.ensureDeferred
async def test_only_a_source_with_a_split_is_fed_and_the_refusal_names_those_that_are(gw):
    answer = await feed_by_admin(gw, b"MSH|^~\\&|A|B\r", source="hl7v2")

    assert answer.code == 404
    assert answer.json()["error"] == ("source 'hl7v2' cannot be fed from a file (it has no split); sources fed "
                                      "from files here: population_csv")
    assert journal_rows(gw) == []


@pytest_twisted.ensureDeferred
async def test_the_cli_feeds_through_the_running_gateway_given_its_url(gw, tmp_path):
    population_file(tmp_path / "district7.csv")
    host, port = gw.address("http")

    result = await deferToThread(run_cli, "feed", "population_csv", tmp_path / "district7.csv",
                                 "--url", f"http://{host}:{port}", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accepted"] == 3
    assert [r["transport"] for r in journal_rows(gw)] == ["feed"] * 4


@pytest_twisted.ensureDeferred
async def test_the_cli_refuses_to_journal_beside_the_gateway_that_holds_the_data_directory(gw, population_installed, tmp_path):
    population_file(tmp_path / "district7.csv")

    result = await deferToThread(run_cli, "feed", "population_csv", tmp_path / "district7.csv",
                                 "--data-dir", tmp_path / "data")

    assert result.returncode == 1
    assert f"a gateway (PID {os.getpid()}) holds the data directory" in result.stderr.decode()
    assert "--url" in result.stderr.decode()
    assert journal_rows(gw) == []


@pytest_twisted.ensureDeferred
async def test_the_cli_feeds_a_stopped_gateways_journal_and_the_gateway_delivers_it_when_it_starts(
        tmp_path, population_installed):
    data_dir, drop = tmp_path / "data", tmp_path / "drop"
    await (await start(data_dir, drop)).stop()  # the journal a gateway created here
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{data_dir}"\n\n[destinations.files]\nkind = "file"\nformat = "json"\n'
                      f'directory = "{drop}"\n')
    population_file(tmp_path / "district7.csv")

    first = run_cli("feed", "population_csv", tmp_path / "district7.csv", "--config", config, "--json")
    again = run_cli("feed", "population_csv", tmp_path / "district7.csv", "--config", config, "--json")

    assert first.returncode == 0, first.stderr
    assert (json.loads(first.stdout)["accepted"], json.loads(again.stdout)["repeats"]) == (3, 4)
    conn = sqlite3.connect(data_dir / "gateway.db")
    try:
        assert conn.execute("SELECT count(*), min(transport), min(source) FROM messages").fetchone() == (
            4, "feed", "population_csv")
        assert conn.execute("SELECT count(*), min(state) FROM outbox").fetchone() == (3, "pending")
    finally:
        conn.close()
    gw = await start(data_dir, drop)
    try:
        await wait_until(lambda: len(list(drop.glob("*"))) == 3, what="the fed rows delivered by the gateway")
    finally:
        await gw.stop()


def counts(database) -> tuple[int, int, int, int]:
    """Journal rows, distinct control ids, outbox rows, distinct idempotency keys."""
    conn = sqlite3.connect(database)
    try:
        return (*conn.execute("SELECT count(*), count(DISTINCT control_id) FROM messages").fetchone(),
                *conn.execute("SELECT count(*), count(DISTINCT idempotency_key) FROM outbox").fetchone())
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_a_feed_killed_half_way_and_fed_again_journals_and_queues_every_row_exactly_once(tmp_path,
                                                                                             population_installed):
    data_dir = tmp_path / "data"
    await (await start(data_dir, tmp_path / "drop")).stop()
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{data_dir}"\n\n[destinations.files]\nkind = "file"\nformat = "json"\n'
                      f'directory = "{tmp_path / "drop"}"\n')
    rows = [f"79001,079085{n:06d},Nguyễn Văn An,19850412,1," for n in range(2000)]
    population_file(tmp_path / "big.csv", rows)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    feeding = subprocess.Popen([str(CLI), "feed", "population_csv", str(tmp_path / "big.csv"), "--config", str(config)],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_until(lambda: (data_dir / "gateway.db").exists() and counts(data_dir / "gateway.db")[0] >= 200,
                         timeout=60, what="the feed to journal 200 rows")
        feeding.send_signal(signal.SIGKILL)
    finally:
        feeding.wait()
    journaled = counts(data_dir / "gateway.db")[0]
    assert 200 <= journaled < 2000  # killed half-way

    again = await deferToThread(run_cli, "feed", "population_csv", tmp_path / "big.csv", "--config", config, "--json")

    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["records"], report["repeats"], report["accepted"]) == (2000, journaled, 2000 - journaled)
    assert counts(data_dir / "gateway.db") == (2000, 2000, 2000, 2000)
