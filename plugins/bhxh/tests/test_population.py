"""``hssk-gateway bhxh import FILE``: a population or card list into the person index, run as an
operator runs it (the installed console script, a subprocess) on the journal of a gateway that
ran here, or beside a running gateway that delivers what it queues. The 1,000,000-row run is
``bench/bhxh_import.py``."""
from __future__ import annotations

import json
import os
import pty
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread

from gateway.testing import GatewayUnderTest
from gateway.testing.recording import RecordingDestination, recording_settings

REPO = Path(__file__).resolve().parents[3]
CLI = Path(sys.executable).parent / "hssk-gateway"
HEADER = "maSoBHXH,hoTen,ngaySinh,gioiTinh,diaChi,maThe,gtTheTu,gtTheDen,maDKBD,CCCD,maTinh,maHuyen,maXa"


def row(n: int, card_group: str = "GD", cccd: str = "", district: str = "760") -> str:
    bhxh = f"79{n:08d}"
    return (f"{bhxh},Nguyễn Văn An,{n % 28 + 1:02d}/03/1985,Nam,\"{n} Lê Lợi, Quận 1\",{card_group}479{bhxh},"
            f"01/01/2025,31/12/2025,79001,{cccd},79,{district},26734")


def write_list(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest_twisted.async_fixture
async def journal_dir(tmp_path):
    """A data dir whose journal a gateway created (and stopped), and a config with a file destination."""
    data_dir = tmp_path / "data"
    gateway = await GatewayUnderTest(data_dir, ["bhxh"]).start()
    await gateway.stop()
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{data_dir}"\n\n[destinations.files]\nkind = "file"\nformat = "json"\n'
                      f'directory = "{tmp_path / "drop"}"\n', encoding="utf-8")
    return data_dir, config


def run(path: Path, *args, config: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    done = subprocess.run([str(CLI), "bhxh", "import", str(path), *map(str, args), "--config", str(config), "--json",
                           "--quiet"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def query(data_dir: Path, sql: str, *params) -> list[tuple]:
    conn = sqlite3.connect(data_dir / "gateway.db", timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def identifiers_of(data_dir: Path, bhxh: str) -> set[tuple[str, str]]:
    return set(query(data_dir, "SELECT system, value FROM person_identifiers WHERE person_id = (SELECT person_id "
                               "FROM person_identifiers WHERE key = ?)", f"BHXH:{bhxh}"))


@pytest_twisted.ensureDeferred
async def test_a_new_card_or_a_cccd_for_a_known_bhxh_number_updates_that_person_and_keeps_the_history(journal_dir,
                                                                                                       tmp_path):
    data_dir, config = journal_dir
    await deferToThread(run, write_list(tmp_path / "january.csv", [row(1), row(2), row(3)]), config=config)

    report = await deferToThread(run, write_list(tmp_path / "february.csv", [
        row(1, card_group="HS"), row(2, cccd="079085000002"), row(3)]), config=config)

    assert (report["changed"], report["unchanged"], report["queued"]) == (2, 1, 2)
    assert query(data_dir, "SELECT count(*) FROM persons") == [(3,)]
    assert identifiers_of(data_dir, "7900000001") == {
        ("BHXH", "7900000001"), ("BHYT", "GD4797900000001"), ("BHYT", "HS4797900000001")}
    assert ("CCCD", "079085000002") in identifiers_of(data_dir, "7900000002")
    assert query(data_dir, "SELECT count(*), count(DISTINCT ordering_key) FROM outbox") == [(5, 3)]
    assert query(data_dir, "SELECT DISTINCT province, district, commune, source FROM person_residence") == [
        ("79", "760", "26734", "bhxh")]


@pytest_twisted.ensureDeferred
async def test_importing_the_same_list_again_routes_nothing(journal_dir, tmp_path):
    data_dir, config = journal_dir
    listed = write_list(tmp_path / "list.csv", [row(n) for n in range(1, 21)])
    first = await deferToThread(run, listed, config=config)
    journaled = query(data_dir, "SELECT count(*) FROM messages")

    again = await deferToThread(run, listed, config=config)

    assert (first["changed"], first["queued"]) == (20, 20)
    assert (again["rows"], again["changed"], again["unchanged"], again["queued"]) == (20, 0, 20, 0)
    assert query(data_dir, "SELECT count(*) FROM messages") == journaled
    assert query(data_dir, "SELECT count(*) FROM outbox") == [(20,)]


@pytest_twisted.ensureDeferred
async def test_a_batch_replayed_from_the_journal_is_decided_again_and_queues_nothing_twice(journal_dir, tmp_path):
    data_dir, config = journal_dir
    await deferToThread(run, write_list(tmp_path / "list.csv", [row(n) for n in range(1, 4)]), config=config)
    [(batch, raw)] = query(data_dir, "SELECT id, raw FROM messages WHERE transport = 'import'")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}

    replayed = await deferToThread(subprocess.run, [str(CLI), "messages", "replay", str(batch), "--config",
                                                    str(config), "--json"],
                                   cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    assert replayed.returncode == 0, replayed.stderr
    [entry] = json.loads(replayed.stdout)["replayed"]
    assert (entry["ack_code"], entry["queued"]) == ("AA", 0), entry
    assert raw.decode("utf-8").split("\n")[0].split("\t")[:3] == ["7900000001", "Nguyễn Văn An", "19850302"]
    assert query(data_dir, "SELECT count(*), count(DISTINCT idempotency_key) FROM outbox") == [(3, 3)]


@pytest_twisted.ensureDeferred
async def test_an_xml_list_and_its_bad_rows_each_named_by_row_and_field(journal_dir, tmp_path):
    data_dir, config = journal_dir
    residents = "".join(
        f"<NGUOI><maSoBHXH>{bhxh}</maSoBHXH><hoTen>Trần Thị Bình</hoTen><ngaySinh>{birth}</ngaySinh>"
        f"<gioiTinh>Nữ</gioiTinh><maThe>{card}</maThe><maHuyen>761</maHuyen></NGUOI>"
        for bhxh, birth, card in (("7900000011", "1990", "DN4797900000011"), ("79000012", "01/02/1990", ""),
                                  ("7900000013", "31/02/1990", ""), ("7900000014", "02/02/1990", "DN47979")))
    listed = tmp_path / "list.xml"
    listed.write_text(f'<?xml version="1.0" encoding="UTF-8"?><DSACH>{residents}</DSACH>', encoding="utf-8")

    report = await deferToThread(run, listed, config=config)

    assert (report["rows"], report["changed"], report["problems"]) == (4, 1, 3)
    assert [(p["row"], p["field"]) for p in report["listed_problems"]] == [
        (2, "maSoBHXH"), (3, "ngaySinh"), (4, "maThe")]
    assert "79000012" not in json.dumps(report)
    assert query(data_dir, "SELECT row, field FROM bhxh_population_problems ORDER BY row") == [
        (2, "maSoBHXH"), (3, "ngaySinh"), (4, "maThe")]
    assert query(data_dir, "SELECT birth_date, sex FROM persons") == [("1990", "2")]


@pytest_twisted.ensureDeferred
async def test_the_columns_are_mapped_by_the_config(journal_dir, tmp_path):
    data_dir, config = journal_dir
    config.write_text(config.read_text() + '\n[plugins.bhxh.population_columns]\nmaSoBHXH = "MA_SO_BHXH"\n'
                                           'maHuyen = "MA_HUYEN"\n', encoding="utf-8")
    header = HEADER.replace("maSoBHXH", "MA_SO_BHXH").replace("maHuyen", "MA_HUYEN")

    report = await deferToThread(run, write_list(tmp_path / "renamed.csv", [row(5, district="762")], header),
                                 config=config)

    assert report["changed"] == 1
    assert query(data_dir, "SELECT district FROM person_residence") == [("762",)]


@pytest_twisted.ensureDeferred
async def test_progress_is_a_bar_on_a_terminal_and_plain_lines_otherwise(journal_dir, tmp_path):
    _, config = journal_dir
    listed = write_list(tmp_path / "list.csv", [row(n) for n in range(1, 4)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    command = [str(CLI), "bhxh", "import", str(listed), "--config", str(config), "--restart"]
    plain = await deferToThread(subprocess.run, command, cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=120)
    main, terminal = pty.openpty()
    try:
        await deferToThread(subprocess.run, command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=terminal,
                            timeout=120)
        shown = os.read(main, 65536).decode("utf-8")
    finally:
        os.close(main)
        os.close(terminal)

    assert "bhxh import: 3 rows (100%), 3 changed" in plain.stderr and "\r" not in plain.stderr
    assert "\r[##############################] 3 rows (100%), 0 changed" in shown


def _checkpoint(data_dir: Path) -> int:
    try:
        found = query(data_dir, "SELECT max(rows) FROM bhxh_population_imports")
    except sqlite3.OperationalError:  # the plugin's table not created yet
        return 0
    return found[0][0] or 0


@pytest_twisted.ensureDeferred
async def test_an_import_killed_half_way_resumes_after_its_last_batch_with_no_row_lost_or_doubled(journal_dir,
                                                                                                  tmp_path):
    data_dir, config = journal_dir
    listed = write_list(tmp_path / "big.csv", [row(n) for n in range(6000)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    importing = subprocess.Popen([str(CLI), "bhxh", "import", str(listed), "--config", str(config), "--quiet",
                                  "--batch-rows", "200"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        while importing.poll() is None and _checkpoint(data_dir) < 1000:
            await task.deferLater(reactor, 0.02, lambda: None)
        importing.send_signal(signal.SIGKILL)
    finally:
        importing.wait()
    checkpoint = _checkpoint(data_dir)
    assert 1000 <= checkpoint < 6000 and query(data_dir, "SELECT count(*) FROM outbox") == [(checkpoint,)]

    report = await deferToThread(run, listed, "--batch-rows", "200", config=config)

    assert (report["resumed_after"], report["changed"], report["rows"]) == (checkpoint, 6000 - checkpoint, 6000)
    assert query(data_dir, "SELECT count(*), count(DISTINCT idempotency_key), count(DISTINCT ordering_key) "
                           "FROM outbox") == [(6000, 6000, 6000)]
    assert query(data_dir, "SELECT count(*) FROM persons") == [(6000,)]
    assert query(data_dir, "SELECT count(*) FROM bhxh_population_rows") == [(6000,)]


ADT = ("MSH|^~\\&|HIS_THU_NGHIEM|79001|HSSK|79|20250101120000||ADT^A04|ADT1|P|2.5\r"
       "PID|1||079085000001^^^BCA^NI~GD4797900000001^^^BHXH^HC||Nguyễn^Văn An||19850302|M\r")


@pytest_twisted.ensureDeferred
async def test_changed_residents_reach_the_record_store_in_order_behind_what_the_person_sent_before(tmp_path):
    store = RecordingDestination().start()
    settings = {**recording_settings(store, ["json"]), "outbox.poll_interval_seconds": 0.2}
    gateway = await GatewayUnderTest(tmp_path / "data", ["bhxh", "viettel_his"], {
        **settings, "plugins.viettel_his.sending_applications": ["HIS_THU_NGHIEM"]}).start()
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[destinations.json]\nkind = "http"\nformat = "json"\n'
                      f'url = "{store.url("json")}"\n', encoding="utf-8")
    try:
        (await gateway.send_mllp(ADT.encode("utf-8"))).assert_accepted()
        await deferToThread(run, write_list(tmp_path / "january.csv", [row(1), row(2)]), config=config)
        await deferToThread(run, write_list(tmp_path / "february.csv", [row(1, card_group="HS"), row(2)]),
                            config=config)
        await store.wait_for(lambda: len(store.received) == 4, timeout=15)
    finally:
        await gateway.stop()
        await store.stop()

    first = []
    for delivery in store.received:
        records = json.loads(delivery.body)["records"]
        values = {i["value"] for i in records["person"]["identifiers"]}
        if "GD4797900000001" in values or "HS4797900000001" in values:
            first.append((records["kind"], sorted(v for v in values if v.endswith("4797900000001"))))
    assert first == [("ADT^A04", ["GD4797900000001"]), ("BHXH_POPULATION", ["GD4797900000001"]),
                     ("BHXH_POPULATION", ["HS4797900000001"])]
    assert query(tmp_path / "data", "SELECT count(*) FROM persons") == [(2,)]
    assert len(query(tmp_path / "data", "SELECT DISTINCT ordering_key FROM outbox")) == 2
