"""``hssk-gateway report coverage``: on a fixture province (three districts, two dozen residents
imported from a population list, clinical records sent to the real gateway over MLLP) the figures
are exactly the ones counted by hand, in the table, the JSON, the CSV and the PNG."""
from __future__ import annotations

import csv
import datetime as dt
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest_twisted
from twisted.internet.threads import deferToThread

from gateway.cli import main
from gateway.testing import GatewayUnderTest

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "hssk-gateway"
HEADER = "maSoBHXH,hoTen,ngaySinh,gioiTinh,diaChi,maThe,gtTheTu,gtTheDen,maDKBD,CCCD,maTinh,maHuyen,maXa"
#: district → (residents, of them with a clinical record)
PROVINCE = {"760": (10, 8), "761": (8, 2), "762": (6, 6)}


def residents() -> list[tuple[str, str, bool]]:
    """(BHXH number, district, has a record) of every resident of the fixture province."""
    found, n = [], 0
    for district, (count, treated) in PROVINCE.items():
        for k in range(count):
            n += 1
            found.append((f"79{n:08d}", district, k < treated))
    return found


def adt(bhxh: str, control_id: str) -> bytes:
    return (f"MSH|^~\\&|HIS_THU_NGHIEM|79001|HSSK|79|20250101120000||ADT^A04|{control_id}|P|2.5\r"
            f"PID|1||GD479{bhxh}^^^BHXH^HC||Nguyễn^Văn An||19850302|M\r").encode("utf-8")


@pytest_twisted.async_fixture(scope="module")
async def province(tmp_path_factory):
    """The journal after a population list import and the clinical records of the treated residents
    (one of them twice, and one patient who lives elsewhere)."""
    tmp_path = tmp_path_factory.mktemp("province")
    data_dir = tmp_path / "data"
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{data_dir}"\n[destinations.files]\nkind = "file"\nformat = "json"\n'
                      f'directory = "{tmp_path / "drop"}"\n', encoding="utf-8")
    gateway = await GatewayUnderTest(data_dir, ["bhxh", "viettel_his"], {
        "plugins.viettel_his.sending_applications": ["HIS_THU_NGHIEM"]}, config_file=config).start()
    try:
        listed = tmp_path / "province.csv"
        listed.write_text(HEADER + "\n" + "".join(
            f"{bhxh},Nguyễn Văn An,02/03/1985,Nam,Quận {district},GD479{bhxh},01/01/2025,31/12/2025,79001,,79,"
            f"{district},26734\n" for bhxh, district, _ in residents()), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
        imported = await deferToThread(subprocess.run, [str(CLI), "bhxh", "import", str(listed), "--config",
                                                        str(config), "--quiet"],
                                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert imported.returncode == 0, imported.stderr
        treated = [bhxh for bhxh, _, has in residents() if has]
        for n, bhxh in enumerate([*treated, treated[0], "7999999999"]):
            (await gateway.send_mllp(adt(bhxh, f"ADT{n}"))).assert_accepted()
    finally:
        await gateway.stop()
    return config


def report(capsys, config: Path, *args: str) -> str:
    capsys.readouterr()
    assert main(["report", "coverage", "--config", str(config), *args]) == 0
    return capsys.readouterr().out


def test_each_district_counts_its_residents_and_those_with_a_clinical_record(province, capsys):
    found = json.loads(report(capsys, province, "--json"))

    assert [(d["district"], d["residents"], d["with_clinical_records"], d["percent"], d["meets_2020_target_80"],
             d["meets_2025_target_95"]) for d in found["districts"]] == [
        ("760", 10, 8, 80.0, True, False), ("761", 8, 2, 25.0, False, False), ("762", 6, 6, 100.0, True, True)]
    assert (found["total"]["residents"], found["total"]["with_clinical_records"]) == (24, 16)


def test_records_outside_the_period_do_not_count(province, capsys):
    yesterday = dt.date.today() - dt.timedelta(days=2)

    found = json.loads(report(capsys, province, "--to", str(yesterday), "--json"))

    assert [(d["residents"], d["with_clinical_records"]) for d in found["districts"]] == [(10, 0), (8, 0), (6, 0)]


def test_the_csv_parses_and_the_table_names_the_targets(province, capsys, tmp_path):
    written = tmp_path / "coverage.csv"
    report(capsys, province, "--csv", str(written))
    table = report(capsys, province)

    with open(written, encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["province"], r["district"], int(r["residents"]), int(r["with_clinical_records"]), float(r["percent"]),
             r["meets_2020_target_80"]) for r in rows] == [
        ("79", "760", 10, 8, 80.0, "true"), ("79", "761", 8, 2, 25.0, "false"), ("79", "762", 6, 6, 100.0, "true")]
    assert "80 % by 2020, 95 % by 2025" in table and "66.7%" in table


def test_the_png_is_a_bar_chart_of_sensible_size(province, capsys, tmp_path):
    chart = tmp_path / "coverage.png"

    report(capsys, province, "--png", str(chart))

    data = chart.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert 500 <= width <= 3000 and 300 <= height <= 2000 and 5_000 < len(data) < 500_000
