"""``hssk-gateway immunization import FILE``: a list export fed row by row through the gateway's
feed, with its columns mapped by the config, streamed, shown, and resumed after an interruption
with no row lost or doubled. The command runs as an operator runs it (a subprocess of the
installed console script), on the journal of a gateway that ran here, or through a running
gateway's admin API. The 200,000-row run is ``bench/immunization_import.py``."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread

from gateway.testing import GatewayUnderTest

REPO = Path(__file__).resolve().parents[3]
CLI = Path(sys.executable).parent / "hssk-gateway"
HEADER = ("MA_CSKCB,MA_DOI_TUONG,HO_TEN,NGAY_SINH,GIOI_TINH,SO_CCCD,MA_THE_BHYT,HO_TEN_ME,CCCD_ME,MA_VACXIN,"
          "TEN_VACXIN,MUI_THU,NGAY_TIEM,SO_LO,HAN_DUNG,NHA_SAN_XUAT,TRANG_THAI,LY_DO_KHONG_TIEM,MA_MUI_TIEM")


def rows(count: int) -> list[str]:
    """Two doses per child, each child with its CCCD and NIIS id, and its mother's CCCD."""
    return [f"79001,NIIS{n // 2:08d},Nguyễn Văn An,20240110,1,079224{n // 2:06d},,Lê Thị Mẫu,079190{n // 2:06d},"
            f"{('08', '19')[n % 2]},Vắc xin,1,2025031{n % 9 + 1},LOT{n % 50},20261231,Nhà SX,CP,,MT{n:09d}"
            for n in range(count)]


def write_csv(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest_twisted.async_fixture
async def journal_dir(tmp_path):
    """A data dir whose journal a gateway created (and stopped), and a config with a file destination."""
    data_dir = tmp_path / "data"
    gateway = await GatewayUnderTest(data_dir, ["immunization"]).start()
    await gateway.stop()
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{data_dir}"\n\n[destinations.files]\nkind = "file"\nformat = "json"\n'
                      f'directory = "{tmp_path / "drop"}"\n', encoding="utf-8")
    return data_dir, config


def run(*args, config: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    return subprocess.run([str(CLI), "immunization", "import", *map(str, args), "--config", str(config), "--json",
                           "--quiet"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def counts(data_dir: Path) -> tuple[int, int, int, int]:
    """Journal rows, distinct control ids, outbox rows, distinct idempotency keys."""
    conn = sqlite3.connect(data_dir / "gateway.db")
    try:
        return (*conn.execute("SELECT count(*), count(DISTINCT control_id) FROM messages").fetchone(),
                *conn.execute("SELECT count(*), count(DISTINCT idempotency_key) FROM outbox").fetchone())
    finally:
        conn.close()


def records_of(data_dir: Path) -> list[dict]:
    conn = sqlite3.connect(data_dir / "gateway.db")
    try:
        return [json.loads(r) if r else {} for (r,) in conn.execute("SELECT records FROM messages ORDER BY id")]
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_each_row_becomes_a_person_and_a_dose_and_a_bad_row_is_listed_by_its_place(journal_dir, tmp_path):
    data_dir, config = journal_dir
    lines = [
        "79001,NIIS00000001,Trần Thị Bình,20240301,2,079324000555,TE1792400005555,,,102,DPT-VGB-Hib,2,20250410,QV1,"
        "20261231,SII,CP,,MT1",
        "79001,NIIS00000002,CON BA LE THI MAU,20250315,2,,,Lê Thị Mẫu,079190000456,08,Viêm gan B,1,15/03/2025,,,,CP,,"
        "MT2",
        "79001,NIIS00000003,Phạm Văn Cường,20230101,1,,,,,03,MMR,1,20250502,,,,RE,00,MT3",
        "79001,NIIS00000004,Đỗ Văn Dũng,2023-01-01,1,,,,,03,MMR,1,20250502,,,,CP,,MT4",
    ]
    result = await deferToThread(run, write_csv(tmp_path / "export.csv", lines), config=config)

    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert (report["rows"], report["accepted"], report["errors"]) == (4, 3, 1)
    [problem] = report["problems"]
    assert (problem["record"], problem["errors"][0]["location"]) == (4, "ROW^NGAY_SINH")
    first, newborn, refusal, _ = records_of(data_dir)
    [dose] = first["immunizations"]
    assert (dose["vaccine_code"], dose["national_code"], dose["dose_number"], dose["record_id"]) == \
        ("102", "DPT-VGB-Hib", "2", "MT1")
    assert {i["system"] for i in first["person"]["identifiers"]} == {"CCCD", "BHYT", "MR"}
    assert (newborn["person"]["provisional"], newborn["immunizations"][0]["administered_at"]) == ("newborn", "20250315")
    assert (refusal["immunizations"][0]["completion"], refusal["immunizations"][0]["refusal_reason"]) == ("RE", "00")


@pytest_twisted.ensureDeferred
async def test_the_columns_are_mapped_by_the_config(journal_dir, tmp_path):
    data_dir, config = journal_dir
    config.write_text(config.read_text() + '\n[plugins.immunization.csv_columns]\nvaccine = "CVX"\n'
                                           'administered_at = "NGAY"\n', encoding="utf-8")
    header = HEADER.replace("MA_VACXIN", "CVX").replace("NGAY_TIEM", "NGAY")

    result = await deferToThread(run, write_csv(tmp_path / "renamed.csv", rows(2), header=header), config=config)

    assert json.loads(result.stdout)["accepted"] == 2, result.stdout + result.stderr
    assert [r["immunizations"][0]["vaccine_code"] for r in records_of(data_dir)] == ["08", "19"]


@pytest_twisted.ensureDeferred
async def test_an_import_killed_half_way_resumes_from_its_checkpoint_with_no_row_lost_or_doubled(journal_dir,
                                                                                                 tmp_path):
    data_dir, config = journal_dir
    export = write_csv(tmp_path / "big.csv", rows(3000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    importing = subprocess.Popen([str(CLI), "immunization", "import", str(export), "--config", str(config), "--quiet"],
                                 cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while importing.poll() is None and _checkpoint(data_dir) < 1200:
            await task.deferLater(reactor, 0.05, lambda: None)
        importing.send_signal(signal.SIGKILL)
    finally:
        importing.wait()
    journaled, checkpoint = counts(data_dir)[0], _checkpoint(data_dir)
    assert 1000 <= checkpoint <= journaled < 3000, (checkpoint, journaled)

    again = await deferToThread(run, export, config=config)

    report = json.loads(again.stdout)
    assert again.returncode == 0, again.stderr
    assert (report["skipped"], report["repeats"], report["accepted"]) == (
        checkpoint, journaled - checkpoint, 3000 - journaled)
    assert counts(data_dir) == (3000, 3000, 3000, 3000)


@pytest_twisted.ensureDeferred
async def test_an_import_through_the_running_gateway_goes_in_chunks_and_a_second_one_skips_every_row(tmp_path):
    gateway = await GatewayUnderTest(tmp_path / "data", ["immunization"], {"outbox.poll_interval_seconds": 0.2}).start()
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    export = write_csv(tmp_path / "export.csv", rows(2500))
    url = "http://{}:{}".format(*gateway.address("http"))
    try:
        first = await deferToThread(run, export, "--url", url, config=config)
        second = await deferToThread(run, export, "--url", url, config=config)
    finally:
        await gateway.stop()

    assert first.returncode == 0, first.stderr
    assert (json.loads(first.stdout)["accepted"], json.loads(second.stdout)["skipped"]) == (2500, 2500)
    assert counts(tmp_path / "data")[:2] == (2500, 2500)


def _checkpoint(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / "gateway.db", timeout=30)
    try:
        found = conn.execute("SELECT max(done) FROM immunization_imports").fetchone()
        return found[0] or 0
    except sqlite3.OperationalError:  # the plugin's table not created yet
        return 0
    finally:
        conn.close()
