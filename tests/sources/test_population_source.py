"""A plugin adds an input kind: the population list source of ``tests/sources/population_csv.py``,
which imports only ``gateway.plugin``, is mounted at ``POST /population``, decided by the same
pipeline, journaled under its own name, queued, and replayed, with nothing under ``gateway/``
knowing it."""
import ast
import json
from pathlib import Path

import pytest_twisted

from gateway.core.sources import Source
from gateway.model.hooks import hookimpl
from tests.sources import population_csv
from tests.support import http_request, journal_rows, metric_value, outbox_rows, start_gateway

HEADER = b"MA_CSKCB,SO_CCCD,HO_TEN,NGAY_SINH,GIOI_TINH,MA_THE_BHYT\n"


def row(cccd: bytes = b"079085000123", name: str = "Nguyễn Văn An") -> bytes:
    return HEADER + b"79001," + cccd + b"," + name.encode() + b",19850412,1,\n"


async def start(tmp_path, *plugins):
    return await start_gateway(tmp_path / "data", plugins=[population_csv, *plugins], destinations={
        "files": {"kind": "file", "format": "json", "directory": str(tmp_path / "drop")}})


@pytest_twisted.async_yield_fixture
async def gw(tmp_path):
    gateway = await start(tmp_path)
    yield gateway
    await gateway.stop()


def test_the_population_plugin_imports_nothing_of_the_gateway_but_its_public_surface():
    tree = ast.parse(Path(population_csv.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}

    assert {name for name in imported if name.startswith("gateway")} == {"gateway.plugin"}


@pytest_twisted.ensureDeferred
async def test_a_plugin_source_is_mounted_on_its_route_and_journaled_under_its_own_name(gw):
    answer = await http_request(gw, "POST", "/population", row(), "text/csv")

    assert answer.code == 200, answer.body
    assert answer.json()["status"] == "accepted" and answer.json()["duplicate"] is False
    [journaled] = journal_rows(gw)
    assert (journaled["source"], journaled["transport"], journaled["sender"], journaled["message_type"],
            journaled["plugin"]) == ("population_csv", "http", "POP|79001", "POPULATION", "population_csv")
    assert json.loads(journaled["records"])["person"]["identifiers"][0]["value"] == "079085000123"
    assert [r["destination"] for r in outbox_rows(gw)] == ["files"]
    assert metric_value(gw, "hssk_messages_received_total", transport="http", plugin="population_csv",
                        message_type="POPULATION") == 1


@pytest_twisted.ensureDeferred
async def test_the_same_record_sent_again_is_a_repeat_and_queues_nothing(gw):
    first = (await http_request(gw, "POST", "/population", row(), "text/csv")).json()
    again = (await http_request(gw, "POST", "/population", row(), "text/csv")).json()

    assert (again["message_id"], again["duplicate"]) == (first["message_id"], True)
    assert len(journal_rows(gw)) == 1 and len(outbox_rows(gw)) == 1


@pytest_twisted.ensureDeferred
async def test_a_record_the_source_refuses_is_answered_422_naming_the_field_and_journaled(gw):
    answer = await http_request(gw, "POST", "/population", HEADER + b"79001,,Nguyen Van An,19850412,1,\n",
                                "text/csv")

    assert answer.code == 422
    assert [(e["code"], e["location"]) for e in answer.json()["errors"]] == [(101, "ROW^SO_CCCD")]
    [journaled] = journal_rows(gw)
    assert (journaled["source"], journaled["status"], journaled["sender"][:15]) == (
        "population_csv", "error", "population_csv|")
    assert outbox_rows(gw) == []


@pytest_twisted.ensureDeferred
async def test_a_body_of_another_media_type_is_refused_in_the_words_of_the_source(gw):
    answer = await http_request(gw, "POST", "/population", row(), "application/xml")

    assert answer.code == 415
    assert answer.json()["errors"][0]["text"] == ("content type 'application/xml' is not CSV; send a population "
                                                  "list row (a header line and one row) as text/csv")


class CrashingReader:
    """A plugin whose source's reader has a bug: it raises on every input."""

    __name__ = "crashing_reader"

    @hookimpl
    def hssk_sources(self):
        def read(envelope, request):
            raise ValueError("the reader chokes on 079085000123")

        return [Source("broken_list", read=read, identify=lambda *_: None, noun="row", location="ROW",
                       media_types=("text/csv",), route=b"broken")]


@pytest_twisted.ensureDeferred
async def test_a_plugin_sources_reader_that_raises_costs_that_input_counted_under_the_plugin(tmp_path):
    gw = await start(tmp_path, CrashingReader())
    try:
        answer = await http_request(gw, "POST", "/broken", row(), "text/csv")
        after = await http_request(gw, "POST", "/population", row(), "text/csv")

        assert answer.code == 422
        assert [(e["code"], e["text"]) for e in answer.json()["errors"]] == [(207, (
            "the gateway could not read the row (ValueError); it is journaled and can be replayed once the reader is "
            "fixed"))]
        assert metric_value(gw, "hssk_plugin_exceptions_total", plugin="crashing_reader", stage="parse") == 1
        assert after.code == 200
        assert [r["source"] for r in journal_rows(gw)] == ["broken_list", "population_csv"]
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_plugin_sources_record_is_replayed_with_that_source_and_queued_once(gw):
    first = (await http_request(gw, "POST", "/population", row(), "text/csv")).json()

    replayed = (await http_request(gw, "POST", f"/admin/messages/{first['message_id']}/replay")).json()

    [entry] = replayed["replayed"]
    assert (entry["ack_code"], entry["queued"]) == ("AA", 0)
    assert [r["source"] for r in journal_rows(gw)] == ["population_csv", "population_csv"]
    assert len(outbox_rows(gw)) == 1
