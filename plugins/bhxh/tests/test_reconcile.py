"""The cross-check over a simulated week: two facilities send a claim file a day; real HTTP servers
play the record store (``ehr``) and the BHXH portal (``bhxh_portal``), each refusing or putting off
chosen episodes. The command line counts every side exactly, lists the gaps, writes CSV, and the
running gateway's gauges say the same. The week is made by dating the journaled files back
(the gateway accepts them today; only ``received_at`` is moved), as a week of traffic would."""
from __future__ import annotations

import csv
import io
import os
import sqlite3
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor, task
from twisted.web.resource import Resource
from twisted.web.server import Site

from gateway.plugin import VIETNAM_TIME
from gateway.testing import GatewayUnderTest
from gateway.testing.samples import edit_xml130
from plugins.bhxh.plugin import BhxhPlugin
from plugins.bhxh.reconcile import Roles, reconcile
from tests.support import wait_until

SAMPLE = Path(__file__).resolve().parents[2] / "vnpt_his" / "samples" / "xml4750_noi_tru.xml"
SAMPLE_MA_LK = b"79025.2024070100123"
CLI = Path(sys.executable).parent / "hssk-gateway"
MONDAY = date(2026, 11, 30)


class ByEpisode(Resource):
    """Answers 400 (refused: dead at once) for a body naming an episode in ``refuse``, 503
    (retried later) for one in ``busy``, 200 otherwise."""

    isLeaf = True

    def __init__(self, refuse=(), busy=()) -> None:
        super().__init__()
        self.refuse, self.busy = set(refuse), set(busy)

    def render_POST(self, request):
        body = request.content.read().decode("utf-8")
        if any(ma_lk in body for ma_lk in self.refuse):
            request.setResponseCode(400)
            return b'{"maKetQua": "123", "thongDiep": "T_TONGCHI sai"}'
        if any(ma_lk in body for ma_lk in self.busy):
            request.setResponseCode(503)
        return b"{}"


def claim(facility: str, ma_lk: str, patient: int) -> bytes:
    """The sample's episode as ``ma_lk`` of ``facility``, for a patient of its own (CCCD, BHXH
    number and so the card): one patient's records are delivered in order, so one patient's
    episode put off at BHXH would hold back the next ones."""
    return edit_xml130(SAMPLE.read_bytes(), lambda xml: xml.replace(SAMPLE_MA_LK, ma_lk.encode()).replace(
        b"79025", facility.encode()).replace(b"079185004321", b"0791850%05d" % patient).replace(
        b"7912345678", b"79123%05d" % patient))


def ma_lk(facility: str, day: int, n: int = 1) -> str:
    return f"{facility}.261{day}{n:03d}"


#: The week: (facility, day, episode), one file each; the gaps are chosen below.
EPISODES = [("79025", day, 1) for day in range(7)] + [("48202", day, 1) for day in range(0, 7, 2)] + [("48202", 4, 2)]
BHXH_BUSY = {ma_lk("79025", 1)}                          # submitted, the portal says "later": pending
BHXH_REFUSED = {ma_lk("79025", 3), ma_lk("48202", 2)}     # the portal refuses them
STORE_REFUSED = {ma_lk("79025", 5), ma_lk("48202", 4, 2)}  # the record store refuses them: at BHXH only


def served(resource: Resource):
    return reactor.listenTCP(0, Site(resource), interface="127.0.0.1")


def write_config(path: Path, data_dir: Path, store_port: int, bhxh_port: int) -> Path:
    path.write_text(f'''data_dir = "{data_dir}"

[plugins]
gauges_seconds = 3600

[plugins.vnpt_his]
xml_facilities = ["79025", "48202"]

[plugins.bhxh.reconcile]
record_stores = ["ehr"]
bhxh = ["bhxh_portal"]
window_days = 7
settle_hours = 24
gap_alert_threshold = 1

[destinations.ehr]
kind = "http"
url = "http://127.0.0.1:{store_port}/records"

[destinations.bhxh_portal]
kind = "http"
url = "http://127.0.0.1:{bhxh_port}/api/qd130/guiHoSoXmlQD4750"
backoff_base_seconds = 600
''', encoding="utf-8")
    return path


def date_back(database: Path, days: dict[int, int]) -> None:
    """Move each journaled file (id → day of the week) to 08:00 Vietnam time that day."""
    conn = sqlite3.connect(database)
    with conn:
        for message_id, day in days.items():
            at = datetime.combine(MONDAY + timedelta(days=day), datetime.min.time(), VIETNAM_TIME) + timedelta(hours=8)
            conn.execute("UPDATE messages SET received_at = ? WHERE id = ?", (at.timestamp(), message_id))
    conn.close()


def reconcile_cli(config: Path, *args: str) -> list[list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    done = subprocess.run([str(CLI), "bhxh", "reconcile", "--from", "2026-11-30", "--to", "2026-12-06", "--config",
                           str(config), "--csv", *args], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return list(csv.reader(io.StringIO(done.stdout)))


@pytest_twisted.ensureDeferred
async def test_a_week_of_two_facilities_is_counted_per_side_and_every_gap_listed(tmp_path):
    store = served(ByEpisode(refuse=STORE_REFUSED))
    bhxh = served(ByEpisode(refuse=BHXH_REFUSED, busy=BHXH_BUSY))
    config = write_config(tmp_path / "gateway.toml", tmp_path / "data", store.getHost().port, bhxh.getHost().port)
    clock = task.Clock()
    clock.advance(datetime(2026, 12, 6, 12, tzinfo=VIETNAM_TIME).timestamp())
    gateway = GatewayUnderTest(tmp_path / "data", plugins=["vnpt_his", BhxhPlugin(clock)], config_file=config)
    await gateway.start()
    try:
        days = {}
        for patient, (facility, day, n) in enumerate(EPISODES):
            answer = await gateway.http.post_xml130(claim(facility, ma_lk(facility, day, n), patient))
            assert answer.status == 200, answer.body
            days[answer.json()["message_id"]] = day
        assert (await gateway.http.post_xml130(claim("79025", ma_lk("79025", 0), 0))).json()["duplicate"]
        await wait_until(lambda: len(gateway.outbox()) == 2 * len(EPISODES)
                         and all(r["attempts"] > 0 for r in gateway.outbox()), what="every row tried once")
        await gateway.stop()
        date_back(gateway.config.database_path, days)
        await gateway.start()  # the gauges are refreshed at start, then every plugins.gauges_seconds
        await wait_until(lambda: b"hssk_bhxh_reconcile_gap_episodes{" in metrics_text(gateway), what="gauges")
        exposition = metrics_text(gateway).decode()
    finally:
        await gateway.stop()
        await store.stopListening()
        await bhxh.stopListening()

    counts = reconcile_cli(config)
    missing = reconcile_cli(config, "--missing", "--facility", "48202", "--facility", "79025")
    report = read_report(gateway.config.database_path, ["48202"])

    assert counts[0] == ["facility", "day", "received", "store", "bhxh_submitted", "bhxh_accepted", "bhxh_refused",
                         "missing_at_bhxh", "missing_at_store"]
    assert counts[1:] == [
        ["48202", "2026-11-30", "1", "1", "1", "1", "0", "0", "0"],
        ["48202", "2026-12-02", "1", "1", "1", "0", "1", "1", "0"],
        ["48202", "2026-12-04", "2", "1", "2", "2", "0", "0", "1"],
        ["48202", "2026-12-06", "1", "1", "1", "1", "0", "0", "0"],
        ["79025", "2026-11-30", "1", "1", "1", "1", "0", "0", "0"],
        ["79025", "2026-12-01", "1", "1", "1", "0", "0", "1", "0"],
        ["79025", "2026-12-02", "1", "1", "1", "1", "0", "0", "0"],
        ["79025", "2026-12-03", "1", "1", "1", "0", "1", "1", "0"],
        ["79025", "2026-12-04", "1", "1", "1", "1", "0", "0", "0"],
        ["79025", "2026-12-05", "1", "0", "1", "1", "0", "0", "1"],
        ["79025", "2026-12-06", "1", "1", "1", "1", "0", "0", "0"],
        ["total", "", "12", "10", "12", "9", "2", "3", "2"],
    ]
    assert [row[:5] for row in missing] == [
        ["facility", "day", "ma_lk", "missing", "bhxh_state"],
        ["48202", "2026-12-02", ma_lk("48202", 2), "bhxh", "refused"],
        ["48202", "2026-12-04", ma_lk("48202", 4, 2), "store", "accepted"],
        ["79025", "2026-12-01", ma_lk("79025", 1), "bhxh", "pending"],
        ["79025", "2026-12-03", ma_lk("79025", 3), "bhxh", "refused"],
        ["79025", "2026-12-05", ma_lk("79025", 5), "store", "accepted"],
    ]
    assert "400" in missing[1][5]
    assert {e.facility for e in report.episodes} == {"48202"} and len(report.episodes) == 5
    for line in ('hssk_bhxh_reconcile_episodes{facility="79025",side="received"} 7.0',
                 'hssk_bhxh_reconcile_episodes{facility="48202",side="bhxh_refused"} 1.0',
                 'hssk_bhxh_reconcile_gap_episodes{facility="79025",side="missing_at_bhxh"} 2.0',
                 'hssk_bhxh_reconcile_gap_episodes{facility="79025",side="missing_at_store"} 1.0',
                 'hssk_bhxh_reconcile_gap_episodes{facility="48202",side="missing_at_store"} 1.0',
                 "hssk_bhxh_reconcile_gap_threshold_episodes 1.0"):
        assert line in exposition, line


def read_report(database: Path, facilities: list[str]):
    conn = sqlite3.connect(database)
    try:
        return reconcile(conn, Roles(("ehr",), ("bhxh_portal",)), MONDAY, MONDAY + timedelta(days=6), facilities)
    finally:
        conn.close()


def metrics_text(gateway: GatewayUnderTest) -> bytes:
    return gateway.gateway.metrics.exposition()
