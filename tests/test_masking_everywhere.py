"""Names and identifiers never reach an operator view or a log in clear text (DESIGN.md §7).

One gateway on real listeners takes errors that carry a patient's name, CCCD (12 digits and an
11-digit variant), BHYT card and BHXH number through every path: HL7 over MLLP (a good message a
real record store then refuses quoting the patient, an AE for an 11-digit CCCD), HL7 over HTTP
(an AE for a CCCD of no province, a plugin that raises quoting the patient), XML 130 over HTTP
(a file the store refuses quoting the patient in capitals, a file with a broken CCCD), and
identifiers in a request's URI and User-Agent, which the HTTP access log quotes. Then every
log event, every answer the senders got, every CLI view (human and --json) and every admin API
answer is searched for the clear-text values. ``messages show --raw`` and ``outbox show
--payload`` are the forensic views, asked for explicitly, and are not searched.
"""
from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent

from tests.fake_store import start_store, url_of
from tests.support import (
    TestPlugin, connect_mllp, hl7, http_request, journal_rows, msa, outbox_rows, run_cli, send_and_receive,
    standard_records, start_gateway, wait_until,
)
from tests.transports.test_xml_intake import TestDocumentPlugin, rewrite_tables, sample

CCCD = "079085000123"
CCCD_11 = "07908500012"
CCCD_NO_PROVINCE = "099085000123"
CARD = "GD4797912345678"
BHXH = "7912345678"  # the card's last ten digits, sent on its own as well
PATIENT = (f"PID|1||{CCCD}^^^BCA^NI~{CARD}^^^BHXH^HC~{BHXH}^^^BHXH^SS||Phạm^Quốc Khánh||19850412|M"
           f"|||12 Lê Lợi^^^79^^^^26740^760||0903123456")
#: The XML 130 sample's patient (plugins/vnpt_his/samples/xml4750_noi_tru.xml).
FILE_CCCD, FILE_CARD, FILE_BROKEN_CCCD = "079185004321", "DN4797912345678", "999185004321"

#: What must not be found anywhere an operator looks: the given and middle names (the family name
#: is kept on purpose), as written and as a remote system writes them back, and every identifier.
CLEAR_TEXT = ("Quốc Khánh", "Khánh", "Khanh", "KHANH", "QUOC", "Hồng Nhung", "Nhung", "NHUNG", "HONG",
              CCCD, CCCD_11, CCCD_NO_PROVINCE, CARD, CARD.lower(), BHXH, FILE_CCCD, FILE_CARD, FILE_BROKEN_CCCD)


def found_in(text: str) -> list[str]:
    return [value for value in CLEAR_TEXT if value in text]


def refuse_quoting_patient(message):
    raise ValueError(f"cannot map Phạm Quốc Khánh (CCCD {CCCD}, old id {CCCD_11}, card {CARD}, BHXH {BHXH})")


def rejection(name: str, card: str, cccd: str) -> str:
    """A provincial store's 400, quoting the record it refused as such stores do."""
    return (f'{{"error": "ho so bi tu choi", "benh_nhan": "{name}", "so_cccd": "{cccd}", '
            f'"cccd_cu": "{CCCD_11}", "ma_the": "{card}", "ma_bhxh": "{BHXH}"}}')


@pytest.fixture
def store():
    resource, listening = start_store(reactor)
    yield resource, listening
    listening.stopListening()


@pytest_twisted.async_yield_fixture
async def gateway(tmp_path, store):
    _, listening = store
    plugin = TestPlugin()
    gw = await start_gateway(tmp_path / "data", plugins=[plugin, TestDocumentPlugin()], destinations={
        "province": {"kind": "http", "url": url_of(listening), "format": "json"}})
    gw.test_plugin = plugin
    yield gw
    await gw.stop()


def dead_rows(gateway) -> int:
    return len(outbox_rows(gateway, state="dead"))


async def send_everything(gateway, store) -> list[bytes]:
    """Every path, in turn; returns what the senders were answered."""
    resource, _ = store
    answers = []
    resource.behaviour.default = "400"
    resource.behaviour.reject_body = rejection("Phạm Quốc Khánh", CARD, CCCD)
    client = await connect_mllp(gateway)
    ack = await send_and_receive(client, hl7(PATIENT, control_id="MLLP-OK"))
    assert msa(ack)[1] == "AA"
    await wait_until(lambda: dead_rows(gateway) == 1, what="the store's refusal of the HL7 record")
    eleven = await send_and_receive(client, hl7(PATIENT.replace(CCCD, CCCD_11), control_id="MLLP-11"))
    assert msa(eleven)[1] == "AE"
    answers += [ack, eleven]
    client.transport.loseConnection()

    no_province = await http_request(  # the access log quotes the URI and the User-Agent as sent
        gateway, "POST", f"/hl7?so_cccd={CCCD_NO_PROVINCE}", hl7(PATIENT.replace(CCCD, CCCD_NO_PROVINCE),
                                                                control_id="HTTP-BAD"),
        "application/hl7-v2", headers={"User-Agent": f"HIS/1.0 (CCCD {CCCD_11})"})
    assert msa(no_province.body)[1] == "AE"
    gateway.test_plugin.behaviour = lambda m: refuse_quoting_patient(m) if m.control_id == "HTTP-BOOM" \
        else standard_records(m)
    boom = await http_request(gateway, "POST", "/hl7", hl7(PATIENT, control_id="HTTP-BOOM"), "application/hl7-v2")
    assert msa(boom.body)[1] == "AE"
    answers += [no_province.body, boom.body]

    resource.behaviour.reject_body = rejection("NGUYEN THI HONG NHUNG", FILE_CARD, FILE_CCCD)
    accepted = await http_request(gateway, "POST", "/xml130", sample("xml4750_noi_tru.xml"), "application/xml")
    assert accepted.code == 200, accepted.body
    await wait_until(lambda: dead_rows(gateway) == 2, what="the store's refusal of the XML 130 record")
    broken = await http_request(gateway, "POST", "/xml130", rewrite_tables(
        sample("xml4750_noi_tru.xml"), lambda kind, table: table.replace(FILE_CCCD.encode(), FILE_BROKEN_CCCD.encode())),
        "application/xml")
    assert broken.code == 422, broken.body
    answers += [accepted.body, broken.body]
    return answers


async def admin_views(gateway) -> dict[str, bytes]:
    paths = ["/admin/outbox", "/admin/outbox/rows", "/admin/outbox/rows?state=dead"]
    paths += [f"/admin/outbox/rows/{row['id']}" for row in outbox_rows(gateway)]
    views = {}
    for path in paths:
        response = await http_request(gateway, "GET", path)
        assert response.code == 200, (path, response.body)
        views[path] = response.body
    return views


def cli_views(gateway) -> dict[str, bytes]:
    data_dir = ["--data-dir", gateway.config.data_dir]
    commands = [("messages", "list"), ("messages", "list", "--json"), ("outbox", "list"), ("outbox", "list", "--json"),
                ("outbox", "list", "--state", "dead"), ("outbox", "status"), ("outbox", "status", "--json")]
    commands += [("messages", "show", str(row["id"])) for row in journal_rows(gateway)]
    commands += [("outbox", "show", str(row["id"])) for row in outbox_rows(gateway)]
    views = {}
    for command in commands:
        result = run_cli(*command, *data_dir)
        assert result.returncode == 0, (command, result.stderr)
        views[" ".join(command)] = result.stdout + result.stderr
    return views


def logged(event: dict) -> str:
    """An event as the text log writes it, and every field the JSON log writes besides."""
    fields = [str(value) for key, value in event.items() if key != "log_failure"]
    failure = event.get("log_failure")
    if failure is not None:
        fields.append(failure.getTraceback())
    return "\n".join([formatEvent(event)] + fields)


@pytest_twisted.ensureDeferred
async def test_no_name_or_identifier_reaches_a_log_a_cli_view_or_the_admin_api_in_clear(gateway, store, log_events):
    answers = await send_everything(gateway, store)
    admin = await admin_views(gateway)
    cli = await deferToThread(cli_views, gateway)

    leaks = {f"log: {formatEvent(e)[:120]}": found_in(logged(e)) for e in log_events}
    leaks |= {f"answer {n}": found_in(a.decode("utf-8")) for n, a in enumerate(answers)}
    leaks |= {f"admin {path}": found_in(body.decode("utf-8")) for path, body in admin.items()}
    leaks |= {f"cli {command}": found_in(out.decode("utf-8")) for command, out in cli.items()}
    found = {where: values for where, values in leaks.items() if values}
    assert not found, "\n".join(f"{where}: {values}" for where, values in found.items())

    dead = [r for r in json.loads(cli["outbox list --json"]) if r["state"] == "dead"]
    assert [r["last_error"] for r in dead] == [
        "HTTP 400: " + rejection("Phạm Q. K.", "GD47********678", "0790*****123").replace(CCCD_11, "0790****012")
        .replace(BHXH, "7912***678"),
        "HTTP 400: " + rejection("NGUYEN T. H. N.", "DN47********678", "0791*****321").replace(CCCD_11, "0790****012")
        .replace(BHXH, "7912***678")]
    shown = json.loads(cli[f"messages show {journal_rows(gateway, control_id='MLLP-OK')[0]['id']}"])
    person = shown["records"]["person"]
    assert (person["family"], person["middle"], person["given"]) == ("Phạm", "Q.", "K.")
    assert [i["value"] for i in person["identifiers"]] == ["0790*****123", "GD47********678", "7912***678"]
