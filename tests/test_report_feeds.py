"""``hssk-gateway report feeds`` on a small province a real gateway journaled on a driven clock:
hospital 79001 sends every day (one message refused AE), clinic 79002 sent three days ago and
then nothing, health station 79003 is configured and never sent. Counts are exact, the silent
ones are flagged, the CSV parses, the PNG is a PNG; the running gateway's gauge says when each
facility last sent."""
import csv
import io
import json
import struct
from datetime import date, datetime, time as day_time, timedelta

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from gateway.cli import main
from gateway.core.store import Store
from gateway.model.outcome import ContentError, Issue
from tests.support import (
    TestPlugin, connect_mllp, hl7, metric_value, msa, replace_msh_field, send_and_receive, standard_records,
    start_gateway,
)

TODAY = date.today()
THREE_DAYS_AGO = datetime.combine(TODAY - timedelta(days=3), day_time(10, 0)).timestamp()
#: Within the last hours, wherever "now" falls in the day; the report's own clock is real time.
RECENTLY = datetime.now().timestamp() - 600
SETTINGS = {"feeds.silent_after_hours_by_facility": {"79001": 72.0, "79003": 12.0},
            "clients.hospital.facilities": ["79001", "79002"], "clients.hospital.addresses": ["127.0.0.1/32"]}


def from_facility(control_id: str, facility: str, message_type: str = "ADT^A04^ADT_A01") -> bytes:
    return replace_msh_field(hl7(control_id=control_id, message_type=message_type), 4, facility)


def refuse_f1_ae(message):
    if message.control_id == "F1-AE":
        raise ContentError([Issue(101, "PID-3: CCCD is required", "PID^1^3")])
    return standard_records(message)


async def fill(data_dir):
    plugin = TestPlugin()
    plugin.behaviour = refuse_f1_ae
    clock = Clock()
    days = (
        (THREE_DAYS_AGO, [from_facility("F1-1", "79001"), from_facility("F1-AE", "79001"),
                          from_facility("F2-1", "79002")]),
        (RECENTLY, [from_facility("F1-2", "79001"), from_facility("F1-3", "79001", "ORU^R01^ORU_R01")]),
    )
    gw = await start_gateway(data_dir, plugins=[plugin], clock=clock, **SETTINGS)
    codes = []
    try:
        for when, messages in days:
            clock.advance(when - clock.seconds())
            client = await connect_mllp(gw)
            for raw in messages:
                codes.append(msa(await send_and_receive(client, raw))[1])
            client.transport.loseConnection()
            await client.closed
        await gw.facility_clock.refresh()
        gauges = {code: metric_value(gw, "hssk_facility_last_message_timestamp_seconds", facility=code)
                  for code in ("79001", "79002")}
        threshold = metric_value(gw, "hssk_facility_silence_threshold_seconds", facility="79001")
    finally:
        await gw.stop()
    return codes, gauges, threshold


@pytest.fixture(scope="module")
def province(tmp_path_factory):
    root = tmp_path_factory.mktemp("province")
    codes, gauges, threshold = pytest_twisted.blockon(ensureDeferred(fill(root / "data")))
    config = root / "gateway.toml"
    config.write_text('[feeds.silent_after_hours_by_facility]\n"79001" = 72\n"79003" = 12\n'
                      '[clients.hospital]\nfacilities = ["79001", "79002"]\naddresses = ["127.0.0.1/32"]\n')
    return root, codes, gauges, threshold


def report(province, capsys, *args) -> str:
    root = province[0]
    assert main(["report", "feeds", "--config", str(root / "gateway.toml"), "--data-dir", str(root / "data"),
                 "--from", (TODAY - timedelta(days=6)).isoformat(), *map(str, args)]) == 0
    return capsys.readouterr().out


def test_the_gateway_journaled_the_province_as_sent(province):
    assert province[1] == ["AA", "AE", "AA", "AA", "AA"]


def test_counts_per_day_and_kind_refusals_and_silent_facilities_are_exact(province, capsys):
    found = {f["facility"]: f for f in json.loads(report(province, capsys, "--json"))["facilities"]}
    day, today = (TODAY - timedelta(days=3)).isoformat(), date.fromtimestamp(RECENTLY).isoformat()

    hospital, clinic, station = found["79001"], found["79002"], found["79003"]
    assert set(found) == {"79001", "79002", "79003"}
    assert [(d["day"], d["kind"], d["received"], d["accepted"], d["error"]) for d in hospital["daily"]] == [
        (day, "ADT^A04", 2, 1, 1), (today, "ADT^A04", 1, 1, 0), (today, "ORU^R01", 1, 1, 0)]
    assert [(r["ack_code"], r["code"], r["text"], r["count"]) for r in hospital["refusals"]] == [
        ("AE", 101, "PID-3: CCCD is required", 1)]
    assert (hospital["silent"], hospital["last_message_at"]) == (False, pytest.approx(RECENTLY))
    assert (clinic["silent"], clinic["last_message_at"], clinic["silent_after_seconds"]) == (
        True, pytest.approx(THREE_DAYS_AGO), 86400.0)
    assert (station["silent"], station["last_message_at"], station["silent_after_seconds"]) == (True, None, 43200.0)


def test_csv_has_a_row_per_facility_day_and_kind_and_one_for_a_facility_that_never_sent(province, capsys):
    rows = list(csv.DictReader(io.StringIO(report(province, capsys, "--csv", "-"))))

    assert [(r["facility"], r["kind"], r["received"], r["error"], r["silent"]) for r in rows] == [
        ("79001", "ADT^A04", "2", "1", "no"), ("79001", "ADT^A04", "1", "0", "no"), ("79001", "ORU^R01", "1", "0", "no"),
        ("79002", "ADT^A04", "1", "0", "yes"), ("79003", "", "0", "0", "yes")]


def test_png_is_a_chart_of_the_period(province, capsys, tmp_path):
    path = tmp_path / "feeds.png"
    report(province, capsys, "--png", path)

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1000, 500)


def test_the_text_report_flags_the_silent_ones(province, capsys):
    text = report(province, capsys)

    assert "facility 79002" in text and text.count("SILENT") == 2 and "79003: last message never" in text


def test_the_gauges_say_when_each_facility_last_sent_and_its_threshold(province):
    gauges, threshold = province[2], province[3]
    assert gauges == {"79001": pytest.approx(RECENTLY), "79002": pytest.approx(THREE_DAYS_AGO)}
    assert threshold == 72 * 3600


def test_a_journal_without_messages_reports_only_configured_facilities(tmp_path, capsys):
    Store(tmp_path / "data" / "gateway.db").migrate()
    assert main(["report", "feeds", "--data-dir", str(tmp_path / "data"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["facilities"] == []
