"""The Viettel-HIS plugin loaded the way the gateway loads it: through the ``hssk_gateway.plugins``
entry point, configured by config/gateway.toml."""
from pathlib import Path

import pytest
import pytest_twisted

from gateway.plugin import Envelope, Hl7Message
from tests.support import (config_from, connect_mllp, described_plugins, hl7, installed_plugins, journal_rows, msa,
                           replace_msh_field, sample, segments_of, start_installed_gateway)

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "config" / "gateway.toml"


def load(**overrides):
    return config_from(CONFIG, **overrides)


@pytest.fixture(scope="module")
def hook():
    return installed_plugins(load()).hook


def identify(hook, raw: bytes):
    message = Hl7Message.from_bytes(raw)
    return hook.hssk_identify(message=message, envelope=Envelope(raw, "mllp", "127.0.0.1:1", 0.0)), message


@pytest.mark.parametrize("name", ["adt_a04.hl7", "oru_r01.hl7"])
def test_sample_messages_from_the_test_senders_are_claimed(hook, name):
    adapter, _ = identify(hook, sample(name))

    assert adapter is not None and adapter.name == "viettel_his"


@pytest.mark.parametrize("sending_app", ["VIETTEL_HIS", "VTHIS", "vthis"])
def test_viettel_sending_applications_are_claimed(hook, sending_app):
    adapter, _ = identify(hook, hl7(sending_app=sending_app))

    assert adapter is not None and adapter.name == "viettel_his"


@pytest.mark.parametrize("make", [lambda: hl7(sending_app="OTHER_HIS"), lambda: sample("vxu_v04.hl7")],
                         ids=["OTHER_HIS", "NIIS_THU_NGHIEM"])
def test_unknown_sending_application_is_not_claimed(hook, make):
    adapter, _ = identify(hook, make())

    assert adapter is None or adapter.name != "viettel_his"  # the NIIS VXU is the immunization plugin's


def test_test_senders_are_not_claimed_without_the_bundled_config():
    hook = installed_plugins(config_from()).hook

    adapter, _ = identify(hook, sample("adt_a04.hl7"))

    assert adapter is None


def test_disabled_plugin_claims_nothing():
    hook = installed_plugins(load(**{"plugins.disabled": ["viettel_his"]})).hook

    adapter, _ = identify(hook, hl7(sending_app="VIETTEL_HIS"))

    assert adapter is None


def test_plugin_is_described_with_version_and_configured_senders():
    [info] = [i for i in described_plugins(load()) if i.name == "viettel_his"]

    assert (info.name, info.version) == ("viettel_his", "0.1.0")
    assert "HIS_THU_NGHIEM" in info.claims and "LIS_THU_NGHIEM" in info.claims


def test_sample_adt_normalizes_to_person_and_encounter(hook):
    adapter, message = identify(hook, sample("adt_a04.hl7"))

    records = adapter.normalize(message)

    assert records.kind == "ADT^A04"
    assert records.person.identifier("CCCD") == "079085000123"
    assert records.person.identifier("BHYT") == "GD4790000012345"
    assert (records.person.family, records.person.middle, records.person.given) == ("Nguyễn", "Văn", "Thử")
    assert records.encounter.ma_lk == "KCB2503150001"


def test_sample_oru_normalizes_its_observations(hook):
    adapter, message = identify(hook, sample("oru_r01.hl7"))

    records = adapter.normalize(message)

    assert records.kind == "ORU^R01"
    assert len(records.observations) == 10
    assert (records.observations[0].code, records.observations[0].value, records.observations[0].unit) == (
        "6690-2", "11.8", "10*3/uL")


@pytest_twisted.ensureDeferred
async def test_sample_adt_through_a_real_gateway_gets_ca_and_is_journaled(tmp_path):
    config = load(**{"data_dir": str(tmp_path / "data"), "mllp.listen": "tcp:0:interface=127.0.0.1",
                     "http.listen": "tcp:0:interface=127.0.0.1", "store.min_free_disk_bytes": 0})
    gateway = await start_installed_gateway(config)
    try:
        client = await connect_mllp(gateway)
        client.send(sample("adt_a04.hl7"))
        [ack] = await client.wait_frames(1)
        client.transport.loseConnection()
        rows = journal_rows(gateway)
    finally:
        await gateway.stop()

    assert msa(ack)[1:3] == ["CA", "ADT20250315000001"]  # MSH-15 AL, MSH-16 NE: the accept ACK only
    assert segments_of(ack)["MSH"][0][2] == "HSSK_GW"
    [row] = rows
    assert (row["plugin"], row["status"], row["sender"]) == ("viettel_his", "accepted", "HIS_THU_NGHIEM|79001")


def test_sample_adt_with_msh_3_changed_is_not_claimed(hook):
    adapter, _ = identify(hook, replace_msh_field(sample("adt_a04.hl7"), 3, "UNKNOWN_APP"))

    assert adapter is None
