"""``hssk-gateway`` as operators run it: the installed console script, in a subprocess, against
the bundled config and a journal a real gateway wrote."""
import json
from datetime import datetime
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from gateway.config import load_config
from gateway.model.outcome import ContentError, Issue
from tests.support import run_cli, run_json, TestPlugin, connect_mllp, hl7, msa, send_and_receive, standard_records, start_gateway

DAY_1 = datetime(2025, 3, 15, 8, 0).timestamp()
DAY_2 = datetime(2025, 3, 16, 8, 0).timestamp()


def missing_cccd_for_cli_ae(message):
    if message.control_id == "CLI-AE":
        raise ContentError([Issue(101, "PID-3: CCCD is required", "PID^1^3")])
    return standard_records(message)


async def fill_journal(data_dir: Path) -> dict[str, bytes]:
    """Day 1: an AA, an AE and an AR (unclaimed sender TESTXHIS); day 2: an AA from LIS_THU_NGHIEM.
    The gateway's clock is a task.Clock set to those days, so received_at is known."""
    plugin = TestPlugin()
    plugin.behaviour = missing_cccd_for_cli_ae
    clock = Clock()
    sent = {
        "CLI-AA": hl7(control_id="CLI-AA"),
        "CLI-AE": hl7(control_id="CLI-AE"),
        "CLI-AR": hl7(control_id="CLI-AR", sending_app="TESTXHIS"),
        "CLI-LIS": hl7(control_id="CLI-LIS", sending_app="LIS_THU_NGHIEM", message_type="ORU^R01^ORU_R01"),
    }
    codes = {}
    gw = await start_gateway(data_dir, plugins=[plugin], clock=clock)
    try:
        for day, control_ids in ((DAY_1, ("CLI-AA", "CLI-AE", "CLI-AR")), (DAY_2, ("CLI-LIS",))):
            clock.advance(day - clock.seconds())
            client = await connect_mllp(gw)
            for control_id in control_ids:
                codes[control_id] = msa(await send_and_receive(client, sent[control_id]))[1]
            client.transport.loseConnection()
            await client.closed
    finally:
        await gw.stop()
    assert codes == {"CLI-AA": "AA", "CLI-AE": "AE", "CLI-AR": "AR", "CLI-LIS": "AA"}
    return sent


@pytest.fixture(scope="module")
def journal(tmp_path_factory):
    """(data dir, {control id: bytes sent}) of a journal written by a real gateway, then stopped."""
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    sent = pytest_twisted.blockon(ensureDeferred(fill_journal(data_dir)))
    return data_dir, sent


def ids_by_control_id(data_dir) -> dict[str, int]:
    return {row["control_id"]: row["id"] for row in run_json("messages", "list", "--data-dir", data_dir)}


def test_check_config_accepts_the_bundled_config():
    result = run_cli("check-config", "--config", "config/gateway.toml")

    assert result.returncode == 0, result.stderr
    assert b"configuration OK" in result.stdout and b"viettel_his" in result.stdout


def test_check_config_with_a_bad_value_exits_nonzero_naming_key_and_rule(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[mllp]\nmax_frame_bytes = -1\n")

    result = run_cli("check-config", "--config", path)

    assert result.returncode != 0
    assert b"mllp.max_frame_bytes: must be a positive integer, got -1" in result.stderr
    assert b"Traceback" not in result.stderr


def test_check_config_with_a_bad_endpoint_flag_names_the_listener():
    result = run_cli("check-config", "--config", "config/gateway.toml", "--mllp-listen", "nonsense:2575")

    assert result.returncode != 0
    assert b"mllp.listen: is not a Twisted endpoint string" in result.stderr


def test_check_config_with_a_bad_plugin_setting_names_the_key(tmp_path):
    path = tmp_path / "bad_plugin.toml"
    path.write_text('[plugins.viettel_his]\nsending_applications = "x"\n')

    result = run_cli("check-config", "--config", path)

    assert result.returncode != 0
    assert b"plugins.viettel_his.sending_applications: must be a list of non-empty strings" in result.stderr


def test_clients_new_token_prints_a_token_and_the_digest_a_client_table_keeps(tmp_path):
    from gateway.core.clients import ClientRegistry, token_digest

    result = run_cli("clients", "new-token")

    assert result.returncode == 0, result.stderr
    first, second = result.stdout.decode().splitlines()
    token = first.rsplit(" ", 1)[1]
    assert len(token) >= 40 and second == f'config line: token_sha256 = ["{token_digest(token)}"]'
    path = tmp_path / "clients.toml"
    path.write_text(f'[clients.bv_q1]\nfacilities = ["79001"]\n{second.split(": ", 1)[1]}\n')
    listed = run_json("clients", "list", "--config", path)
    assert listed == {"required": False, "clients": [
        {"name": "bv_q1", "facilities": ["79001"], "tokens": 1, "addresses": [], "certificates": []}]}
    config = load_config(path, environ={})
    assert ClientRegistry.from_config(config.clients, config.auth).by_token(token).name == "bv_q1"
    assert token.encode() not in path.read_bytes()


def test_check_config_with_a_misspelt_disabled_plugin_names_the_key(tmp_path):
    path = tmp_path / "disabled.toml"
    path.write_text('[plugins]\ndisabled = ["viettel"]\n')

    result = run_cli("check-config", "--config", path)

    assert result.returncode == 2
    assert (b"plugins.disabled: names no installed plugin: viettel (installed: bhxh, dhg_his, immunization, "
            b"viettel_his, vnpt_his") in result.stderr


def test_plugins_lists_viettel_his_with_its_version_and_claims():
    result = run_cli("plugins", "--config", "config/gateway.toml")

    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.decode().splitlines() if line.startswith("viettel_his ")]
    name, version, claims = line.split(None, 2)
    assert (name, version) == ("viettel_his", "0.1.0")
    assert "HIS_THU_NGHIEM" in claims and "VIETTEL_HIS" in claims


def test_plugins_lists_the_built_in_rules_after_the_installed_plugins_in_the_order_they_run():
    result = run_cli("plugins", "--config", "config/gateway.toml")
    infos = run_json("plugins")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    built_in = lines[lines.index("built in, in the order they run:") + 1:]
    assert [line.split()[0] for line in built_in] == ["core.identity", "core.claims", "core.totals", "core.render"]
    assert [i["name"] for i in infos if i["built_in"]] == ["core.identity", "core.claims", "core.totals",
                                                          "core.render"]
    assert not infos[0]["built_in"]


def test_plugins_json_lists_viettel_his():
    infos = run_json("plugins")

    [viettel] = [info for info in infos if info["name"] == "viettel_his"]
    assert viettel["version"] == "0.1.0"


def test_messages_list_shows_journaled_messages_newest_first(journal):
    data_dir, _ = journal

    result = run_cli("messages", "list", "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["ID", "RECEIVED", "TRANSPORT", "SENDER", "CONTROL", "ID", "TYPE", "PLUGIN", "ACK",
                                "STATUS"]
    rows = [line.split() for line in lines[1:]]
    assert [row[5] for row in rows] == ["CLI-LIS", "CLI-AR", "CLI-AE", "CLI-AA"]
    assert rows[0][1:3] == ["2025-03-16", "08:00:00"]
    assert rows[2][3:] == ["mllp", "TEST_HIS|79001", "CLI-AE", "ADT^A04", "test_his", "AE", "error"]


@pytest.mark.parametrize(("flags", "expected"), [
    (("--status", "error"), ["CLI-AE"]),
    (("--status", "rejected"), ["CLI-AR"]),
    (("--control-id", "CLI-AA"), ["CLI-AA"]),
    (("--sender", "LIS_THU_NGHIEM"), ["CLI-LIS"]),
    (("--sender", "TEST_HIS|79001"), ["CLI-AE", "CLI-AA"]),
    (("--since", "2025-03-16"), ["CLI-LIS"]),
    (("--until", "2025-03-16"), ["CLI-AR", "CLI-AE", "CLI-AA"]),
    (("--since", "2025-03-15T08:00", "--until", "2025-03-15T08:00:01"), ["CLI-AR", "CLI-AE", "CLI-AA"]),
    (("--status", "accepted", "--since", "2025-03-15", "--until", "2025-03-16"), ["CLI-AA"]),
    (("--limit", "1"), ["CLI-LIS"]),
])
def test_messages_list_filters(journal, flags, expected):
    data_dir, _ = journal

    rows = run_json("messages", "list", "--data-dir", data_dir, *flags)

    assert [row["control_id"] for row in rows] == expected


def test_messages_list_sender_filter_matches_the_application_exactly(journal):
    data_dir, _ = journal

    rows = run_json("messages", "list", "--data-dir", data_dir, "--sender", "TEST_HIS")

    assert [row["control_id"] for row in rows] == ["CLI-AE", "CLI-AA"]


def test_messages_list_rejects_a_date_that_is_not_iso(journal):
    data_dir, _ = journal

    result = run_cli("messages", "list", "--data-dir", data_dir, "--since", "15/03/2025")

    assert result.returncode != 0
    assert b"is not an ISO date" in result.stderr


def test_messages_show_prints_json_with_errors(journal):
    data_dir, sent = journal
    message_id = ids_by_control_id(data_dir)["CLI-AE"]

    result = run_cli("messages", "show", message_id, "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["id"], shown["control_id"], shown["status"], shown["ack_code"]) == (
        message_id, "CLI-AE", "error", "AE")
    assert shown["errors"] == [{"code": 101, "text": "PID-3: CCCD is required", "location": "PID^1^3",
                                "severity": "E"}]
    assert shown["records"] is None
    assert shown["raw_bytes"] == len(sent["CLI-AE"])
    assert shown["received_at"] == DAY_1


def test_messages_show_prints_the_normalized_records(journal):
    data_dir, _ = journal
    message_id = ids_by_control_id(data_dir)["CLI-AA"]

    shown = json.loads(run_cli("messages", "show", message_id, "--data-dir", data_dir).stdout)

    assert shown["errors"] == []
    assert shown["records"]["kind"] == "ADT^A04"
    assert shown["records"]["person"]["family"] == "Nguyễn"


def test_messages_show_raw_prints_the_exact_bytes_received(journal):
    data_dir, sent = journal
    message_id = ids_by_control_id(data_dir)["CLI-AE"]

    result = run_cli("messages", "show", message_id, "--raw", "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr
    assert result.stdout == sent["CLI-AE"]


def test_messages_show_unknown_id_exits_nonzero(journal):
    data_dir, _ = journal

    result = run_cli("messages", "show", 999999, "--data-dir", data_dir)

    assert result.returncode == 1
    assert b"no message with id 999999" in result.stderr


def test_messages_list_without_a_journal_is_a_clear_error_and_creates_nothing(tmp_path):
    missing = tmp_path / "no-such-dir"

    result = run_cli("messages", "list", "--data-dir", missing)

    assert result.returncode != 0
    assert f"no journal at {missing / 'gateway.db'}".encode() in result.stderr
    assert b"Traceback" not in result.stderr
    assert not missing.exists()


@pytest_twisted.ensureDeferred
async def test_messages_list_and_show_give_the_codes_the_sender_was_sent_in_enhanced_mode(tmp_path):
    plugin = TestPlugin()
    plugin.behaviour = missing_cccd_for_cli_ae
    data_dir = tmp_path / "data"
    gw = await start_gateway(data_dir, plugins=[plugin])
    try:
        client = await connect_mllp(gw)
        client.send(hl7(control_id="ENH-CA", accept_ack="AL", app_ack="NE"))
        client.send(hl7(control_id="CLI-AE", accept_ack="AL", app_ack="AL"))
        client.send(hl7(control_id="ENH-CR", sending_app="TESTXHIS", accept_ack="AL", app_ack="NE"))
        client.send(hl7(control_id="ENH-NONE", accept_ack="NE", app_ack="NE"))
        client.send(hl7(control_id="ORIGINAL"))
        frames = await client.wait_frames(5)
        assert [msa(f)[1] for f in frames] == ["CA", "CE", "AE", "CR", "AA"]
        client.transport.loseConnection()
    finally:
        await gw.stop()

    listed = {row["control_id"]: (row["ack_code"], row["acks_sent"])
              for row in run_json("messages", "list", "--data-dir", data_dir)}
    text = {line.split()[5]: line.split()[-2] for line in
            run_cli("messages", "list", "--data-dir", data_dir).stdout.decode().splitlines()[1:]}
    shown = json.loads(run_cli("messages", "show", ids_by_control_id(data_dir)["ENH-CA"], "--data-dir",
                               data_dir).stdout)

    assert listed == {"ENH-CA": ("AA", ["CA"]), "CLI-AE": ("AE", ["CE", "AE"]), "ENH-CR": ("AR", ["CR"]),
                      "ENH-NONE": ("AA", []), "ORIGINAL": ("AA", ["AA"])}
    assert text == {"ENH-CA": "CA", "CLI-AE": "CE,AE", "ENH-CR": "CR", "ENH-NONE": "none", "ORIGINAL": "AA"}
    assert (shown["ack_code"], shown["acks_sent"]) == ("AA", ["CA"])
