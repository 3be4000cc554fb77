"""``batch`` destinations: one file per period, delivered through a real folder or a real HTTP
store, on a gateway whose clock is a ``task.Clock`` so a week passes in milliseconds.

Records go in through MLLP like any other message (their ``received_at`` is the clock's time),
the runner's timers run on the clock, and the journal, thread pool, file writes and HTTP traffic
are real. Times are in Asia/Ho_Chi_Minh: week 47 of 2026 runs from Monday 16 to Monday 23
November 02:00.
"""
from __future__ import annotations

import base64
import json
import sqlite3
from collections import deque
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
from lxml import etree
from twisted.internet import reactor
from twisted.internet.task import Clock

from gateway.core.outbox import request_flush, set_paused
from gateway.core.batch import BatchNotDelivered
from tests.fake_store import StoreBehaviour, start_store, url_of
from tests.support import TestPlugin, connect_mllp, hl7, metric_value, msa, send_and_receive, start_gateway

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
DEST = "national_center"


def at(text: str) -> float:
    """``2026-11-16 02:00`` in Hanoi time as a Unix time."""
    return datetime.fromisoformat(text).replace(tzinfo=ZONE).timestamp()


class BatchGateway:
    """A running gateway with one batch destination, and the few moves a test makes with it."""

    def __init__(self, gateway, clock: Clock, outbound) -> None:
        self.gateway = gateway
        self.clock = clock
        self.outbound = outbound

    @property
    def runner(self):
        return self.gateway.delivery.batches[DEST]

    async def advance_to(self, when: str) -> None:
        """Move the clock (firing any batch due on the way) and wait until that batch settled."""
        self.clock.advance(at(when) - self.clock.seconds())
        await self.runner.when_idle()

    async def queue(self, when: str, *control_ids: str, facility: str = "79001", pid: str = "") -> None:
        """Messages received at ``when``, each answered AA (so its outbox row is committed); ``pid``
        replaces the default patient."""
        await self.advance_to(when)
        client = await connect_mllp(self.gateway)
        try:
            for control_id in control_ids:
                message = hl7(*[pid] if pid else [], control_id=control_id).replace(
                    b"|79001|", f"|{facility}|".encode(), 1)
                assert msa(await send_and_receive(client, message))[1] == "AA"
        finally:
            client.transport.loseConnection()
            await client.closed

    def rows(self) -> dict[str, dict]:
        """Outbox rows of the batch destination by control id of their message."""
        conn = sqlite3.connect(self.gateway.config.database_path)
        conn.row_factory = sqlite3.Row
        try:
            return {row["control_id"]: dict(row) for row in conn.execute(
                "SELECT m.control_id, o.id, o.state, o.attempts, o.last_error, o.last_result, o.payload "
                "FROM outbox o JOIN messages m ON m.id = o.message_id WHERE o.destination = ? ORDER BY o.id",
                (DEST,))}
        finally:
            conn.close()

    def states(self) -> dict[str, str]:
        return {control_id: row["state"] for control_id, row in self.rows().items()}

    def files(self, pattern: str = "*") -> list:
        return sorted(p for p in self.outbound.glob(pattern) if not p.name.startswith("."))


async def start_batch_gateway(tmp_path, when: str, schedule: str = "weekly MON 02:00", **keys) -> BatchGateway:
    clock = Clock()
    clock.advance(at(when))
    outbound = tmp_path / "outbound"
    values = {"kind": "batch", "schedule": schedule, "timezone": "Asia/Ho_Chi_Minh"}
    if "url" not in keys:
        values["directory"] = str(outbound)
    values.update(keys)
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], clock=clock,
                                  **{f"destinations.{DEST}.{key}": value for key, value in values.items()})
    batch = BatchGateway(gateway, clock, outbound)
    await batch.runner.when_idle()
    return batch


@pytest_twisted.async_yield_fixture
async def weekly(tmp_path):
    """Weekly MON 02:00 into a folder, started on Sunday evening of week 46."""
    batch = await start_batch_gateway(tmp_path, "2026-11-15 20:00")
    yield batch
    await batch.gateway.stop()


def control_ids_in_ndjson(path) -> list[str]:
    return [json.loads(line)["source"]["control_id"] for line in path.read_text("utf-8").splitlines()]


@pytest_twisted.ensureDeferred
async def test_weekly_batch_over_a_simulated_week_sends_one_file_with_exactly_that_weeks_records(weekly):
    await weekly.queue("2026-11-15 20:00", "W46-SUN")            # before Monday 16 02:00: week 46
    await weekly.queue("2026-11-16 09:00", "W47-MON")
    await weekly.queue("2026-11-18 14:30", "W47-WED-1", "W47-WED-2")
    await weekly.queue("2026-11-21 23:00", "W47-SAT")
    await weekly.queue("2026-11-23 01:59", "W47-LAST-MINUTE")    # still week 47: the cut is 02:00
    await weekly.advance_to("2026-11-23 06:00")
    await weekly.queue("2026-11-23 06:00", "W48-MON")
    await weekly.advance_to("2026-11-29 23:00")                  # week 48 has not ended yet

    week_47 = weekly.files(f"{DEST}-2026-W47-*.ndjson")
    assert len(week_47) == 1
    assert control_ids_in_ndjson(week_47[0]) == ["W47-MON", "W47-WED-1", "W47-WED-2", "W47-SAT", "W47-LAST-MINUTE"]
    assert [p.name.split("-")[2] for p in weekly.files()] == ["W46", "W47"]
    assert control_ids_in_ndjson(weekly.files(f"{DEST}-2026-W46-*.ndjson")[0]) == ["W46-SUN"]
    assert weekly.states() == {"W46-SUN": "delivered", "W47-MON": "delivered", "W47-WED-1": "delivered",
                               "W47-WED-2": "delivered", "W47-SAT": "delivered", "W47-LAST-MINUTE": "delivered",
                               "W48-MON": "pending"}
    assert metric_value(weekly.gateway, "hssk_batch_files_total", destination=DEST) == 2


@pytest_twisted.ensureDeferred
async def test_ndjson_lines_are_the_rendered_payloads_in_row_order(weekly):
    await weekly.queue("2026-11-17 10:00", "A", "B", "C")

    await weekly.advance_to("2026-11-23 02:00")

    [path] = weekly.files("*.ndjson")
    rows = weekly.rows()
    assert path.read_bytes() == b"".join(rows[c]["payload"] + b"\n" for c in ("A", "B", "C"))


@pytest_twisted.ensureDeferred
async def test_a_week_without_records_produces_no_file(weekly):
    await weekly.advance_to("2026-11-23 03:00")
    await weekly.queue("2026-11-23 04:00", "NEXT-WEEK")

    await weekly.advance_to("2026-11-29 23:59")

    assert weekly.files() == []
    assert weekly.states() == {"NEXT-WEEK": "pending"}
    assert metric_value(weekly.gateway, "hssk_batch_files_total", destination=DEST) == 0


@pytest_twisted.ensureDeferred
async def test_xml130_file_is_a_giamdinhhs_envelope_with_one_hoso_per_record(tmp_path):
    batch = await start_batch_gateway(tmp_path, "2026-11-16 08:00", batch_format="xml130")
    try:
        await batch.queue("2026-11-17 10:00", "X-1", "X-2")
        await batch.advance_to("2026-11-23 02:00")

        [path] = batch.files("*.xml")
        rows = batch.rows()
    finally:
        await batch.gateway.stop()
    assert path.name.startswith(f"{DEST}-2026-W47-")
    root = etree.fromstring(path.read_bytes())
    assert root.tag == "GIAMDINHHS"
    assert root.nsmap == {"xsi": "http://www.w3.org/2001/XMLSchema-instance",
                          "xsd": "http://www.w3.org/2001/XMLSchema"}
    assert [child.tag for child in root] == ["THONGTINDONVI", "THONGTINHOSO", "CHUKYDONVI"]
    assert root.findtext("THONGTINDONVI/MACSKCB") == "79001"
    assert root.findtext("THONGTINHOSO/NGAYLAP") == "20261123"
    assert root.findtext("THONGTINHOSO/SOLUONGHOSO") == "2"
    files = root.findall("THONGTINHOSO/DANHSACHHOSO/HOSO/FILEHOSO")
    assert [f.findtext("LOAIHOSO") for f in files] == ["application/json", "application/json"]
    assert [base64.b64decode(f.findtext("NOIDUNGFILE")) for f in files] == [rows["X-1"]["payload"],
                                                                           rows["X-2"]["payload"]]
    assert root.find("CHUKYDONVI").text is None and b"<CHUKYDONVI></CHUKYDONVI>" in path.read_bytes()


@pytest_twisted.ensureDeferred
async def test_xml130_leaves_macskcb_empty_when_records_come_from_several_facilities(tmp_path):
    batch = await start_batch_gateway(tmp_path, "2026-11-16 08:00", batch_format="xml130")
    try:
        await batch.queue("2026-11-17 10:00", "F-1", facility="79001")
        await batch.queue("2026-11-17 11:00", "F-2", facility="79002")
        await batch.advance_to("2026-11-23 02:00")
        [path] = batch.files("*.xml")
    finally:
        await batch.gateway.stop()
    root = etree.fromstring(path.read_bytes())
    assert root.findtext("THONGTINDONVI/MACSKCB") == ""
    assert root.findtext("THONGTINHOSO/SOLUONGHOSO") == "2"


@pytest_twisted.ensureDeferred
async def test_a_sink_that_fails_keeps_the_rows_pending_and_sends_the_same_file_after_backoff(weekly):
    weekly.outbound.write_text("not a folder yet")   # mkdir fails with FileExistsError: a retry
    await weekly.queue("2026-11-17 10:00", "R-1", "R-2")

    await weekly.advance_to("2026-11-23 02:00")

    rows = weekly.rows()
    assert {c: (r["state"], r["attempts"], r["last_result"]) for c, r in rows.items()} == {
        "R-1": ("pending", 1, "io_error"), "R-2": ("pending", 1, "io_error")}
    assert "outbound" in rows["R-1"]["last_error"]
    assert metric_value(weekly.gateway, "hssk_delivery_attempts_total", destination=DEST, outcome="pending",
                        result="io_error") == 1

    weekly.outbound.unlink()
    weekly.outbound.mkdir()
    await weekly.advance_to("2026-11-23 02:30")   # well past the backoff cap of 600 s

    [path] = weekly.files("*.ndjson")
    assert path.name.startswith(f"{DEST}-2026-W47-")
    assert control_ids_in_ndjson(path) == ["R-1", "R-2"]
    assert weekly.states() == {"R-1": "delivered", "R-2": "delivered"}
    assert metric_value(weekly.gateway, "hssk_batch_files_total", destination=DEST) == 1


@pytest_twisted.ensureDeferred
async def test_a_refused_file_keeps_its_rows_pending_for_the_next_period(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    batch = await start_batch_gateway(tmp_path, "2026-11-16 08:00", directory=str(blocker / "outbound"))
    try:
        await batch.queue("2026-11-17 10:00", "D-1")
        await batch.advance_to("2026-11-23 02:00")   # NotADirectoryError: dead at once, no retry

        row = batch.rows()["D-1"]
        assert (row["state"], row["attempts"], row["last_result"]) == ("pending", 1, "io_error")
        assert "cannot write" in row["last_error"]
        await batch.advance_to("2026-11-29 12:00")
        assert batch.rows()["D-1"]["attempts"] == 1

        blocker.unlink()
        await batch.queue("2026-11-29 13:00", "D-2")
        await batch.advance_to("2026-11-30 02:00")

        batch.outbound = blocker / "outbound"
        [path] = batch.files("*.ndjson")
        assert path.name.startswith(f"{DEST}-2026-W48-")
        assert control_ids_in_ndjson(path) == ["D-1", "D-2"]
        assert batch.states() == {"D-1": "delivered", "D-2": "delivered"}
    finally:
        await batch.gateway.stop()


@pytest_twisted.ensureDeferred
async def test_flush_sends_everything_pending_now_and_answers_with_the_row_count(weekly):
    await weekly.queue("2026-11-17 10:00", "F-1", "F-2")

    await weekly.advance_to("2026-11-18 09:00")
    included = await weekly.gateway.delivery.flush(DEST)

    assert included == 2
    [path] = weekly.files("*.ndjson")
    assert path.name.startswith(f"{DEST}-2026-W47-")
    assert control_ids_in_ndjson(path) == ["F-1", "F-2"]
    assert weekly.states() == {"F-1": "delivered", "F-2": "delivered"}
    assert await weekly.gateway.delivery.flush(DEST) == 0


@pytest_twisted.ensureDeferred
async def test_flush_of_an_unknown_destination_fails_naming_the_batch_destinations(weekly):
    with pytest.raises(BatchNotDelivered, match="national_center"):
        await weekly.gateway.delivery.flush("nowhere")


@pytest_twisted.ensureDeferred
async def test_a_flush_request_in_the_journal_runs_the_batch_at_the_next_refresh(weekly):
    await weekly.queue("2026-11-17 10:00", "Q-1")
    await weekly.gateway.delivery.refresh()
    assert weekly.files() == []

    await weekly.gateway.writer.run(lambda conn, now: request_flush(conn, now, DEST))
    await weekly.gateway.delivery.refresh()
    await weekly.runner.when_idle()

    [path] = weekly.files("*.ndjson")
    assert control_ids_in_ndjson(path) == ["Q-1"]
    assert weekly.states() == {"Q-1": "delivered"}

    await weekly.queue("2026-11-17 11:00", "Q-2")
    await weekly.gateway.delivery.refresh()   # the same request again: nothing new to do
    await weekly.runner.when_idle()
    assert len(weekly.files()) == 1 and weekly.states()["Q-2"] == "pending"


@pytest_twisted.ensureDeferred
async def test_a_restart_after_a_crash_before_marking_sends_the_same_file_again(tmp_path):
    batch = await start_batch_gateway(tmp_path, "2026-11-16 08:00")
    await batch.queue("2026-11-17 10:00", "C-1", "C-2")
    await batch.advance_to("2026-11-23 02:00")
    [first] = batch.files("*.ndjson")
    await batch.gateway.stop()
    # What a crash between the sink's acceptance and the journal's mark leaves behind.
    conn = sqlite3.connect(batch.gateway.config.database_path)
    with conn:
        conn.execute("UPDATE outbox SET state = 'pending', delivered_at = NULL")
    conn.close()
    first.unlink()

    again = await start_batch_gateway(tmp_path, "2026-11-23 09:00")
    try:
        [second] = again.files("*.ndjson")
        assert second.name == first.name
        assert again.states() == {"C-1": "delivered", "C-2": "delivered"}
    finally:
        await again.gateway.stop()


@pytest_twisted.ensureDeferred
async def test_a_period_missed_while_paused_is_sent_at_restart_with_only_the_records_received_before_its_end(
        tmp_path):
    batch = await start_batch_gateway(tmp_path, "2026-11-20 08:00")
    await batch.queue("2026-11-20 09:00", "BEFORE-END")
    await batch.gateway.writer.run(lambda conn, now: set_paused(conn, now, DEST, True))
    await batch.gateway.delivery.refresh()
    await batch.advance_to("2026-11-23 09:00")         # the week-47 fire passes while paused
    await batch.queue("2026-11-23 09:30", "AFTER-END")
    await batch.gateway.writer.run(lambda conn, now: set_paused(conn, now, DEST, False))
    assert batch.files() == []
    await batch.gateway.stop()

    again = await start_batch_gateway(tmp_path, "2026-11-23 10:00")
    try:
        [path] = again.files("*.ndjson")
        assert path.name.startswith(f"{DEST}-2026-W47-")
        assert control_ids_in_ndjson(path) == ["BEFORE-END"]
        assert again.states() == {"BEFORE-END": "delivered", "AFTER-END": "pending"}
    finally:
        await again.gateway.stop()


@pytest.fixture
def store():
    resource, listening = start_store(reactor, StoreBehaviour(queued=deque(["503"])))
    yield resource, listening
    resource.release_hanging()
    listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_http_sink_answering_503_keeps_rows_pending_then_the_same_file_is_accepted(tmp_path, store):
    resource, listening = store
    batch = await start_batch_gateway(tmp_path, "2026-11-16 08:00", url=url_of(listening))
    try:
        await batch.queue("2026-11-17 10:00", "H-1", "H-2")
        await batch.advance_to("2026-11-23 02:00")

        assert [r.answered for r in resource.received] == [503]
        assert batch.states() == {"H-1": "pending", "H-2": "pending"}
        assert "503" in batch.rows()["H-1"]["last_error"]

        await batch.advance_to("2026-11-23 02:30")

        first, second = resource.received
        assert second.answered == 200
        assert second.idempotency_key == first.idempotency_key
        assert second.idempotency_key.startswith(f"{DEST}-2026-W47-")
        assert second.body == first.body
        assert second.content_type == "application/x-ndjson"
        assert [json.loads(line)["source"]["control_id"] for line in second.body.splitlines()] == ["H-1", "H-2"]
        assert batch.states() == {"H-1": "delivered", "H-2": "delivered"}
    finally:
        await batch.gateway.stop()


@pytest_twisted.ensureDeferred
async def test_a_refusal_quoting_the_files_patients_is_logged_and_recorded_with_their_names_masked(
        tmp_path, store, log_events):
    from twisted.logger import formatEvent

    resource, listening = store
    resource.behaviour.queued = deque(["400"])
    resource.behaviour.reject_body = "HOSO 1: NGUYEN VAN THU; HOSO 2: Lê Thị Hoa, CCCD 079185004321"
    batch = await start_batch_gateway(tmp_path, "2026-11-16 08:00", url=url_of(listening))
    try:
        await batch.queue("2026-11-17 10:00", "N-1")  # Nguyễn Văn Thử
        await batch.queue("2026-11-17 10:05", "N-2", pid="PID|1||079185004321^^^BCA^NI||Lê^Thị Hoa||19850312|F")
        await batch.advance_to("2026-11-23 02:00")

        reason = "HTTP 400: HOSO 1: NGUYEN V. T.; HOSO 2: Lê T. H., CCCD 0791*****321"
        assert {row["last_error"] for row in batch.rows().values()} == {reason}
        [logged] = [formatEvent(e) for e in log_events if "refused" in e.get("log_format", "")]
        assert reason in logged
    finally:
        await batch.gateway.stop()
