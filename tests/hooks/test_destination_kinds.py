"""``hssk_destination_kinds``: a plugin adds a destination kind with its own validated table, and
the gateway delivers through it like through its own kinds (which register the same way).

The plugin is ``tests/hooks/put_store.py``; nothing under ``gateway/`` knows it."""
from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from gateway.config import ConfigError, load_config
from gateway.core.plugins import PluginLoadError, build_plugin_manager
from gateway.plugin import DestinationKind
from tests.hooks import put_store
from tests.hooks.support import installed, run_gateway_cli
from tests.support import TestPlugin, connect_mllp, hl7, msa, outbox_rows, send_and_receive, start_gateway, wait_until


class PutResource(Resource):
    """A record store that takes each record by id: ``PUT /records/<id>``."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.stored: dict[str, tuple[str, bytes]] = {}

    def render_PUT(self, request) -> bytes:
        key = request.path.decode("ascii").rsplit("/", 1)[-1]
        self.stored[key] = (request.getHeader("content-type") or "", request.content.read())
        return b"stored"


@pytest.fixture
def put_server():
    resource = PutResource()
    listening = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    yield resource, f"http://127.0.0.1:{listening.getHost().port}/records/"
    listening.stopListening()


def config_with(table: dict, **extra):
    return load_config(environ={}, overrides={"destinations": {"fhir": {"kind": "put_store", **table}}, **extra})


@pytest_twisted.ensureDeferred
async def test_a_kind_a_plugin_registers_delivers_the_records_routed_to_it(tmp_path, put_server):
    resource, base_url = put_server
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), put_store],
                                  destinations={"fhir": {"kind": "put_store", "base_url": base_url}})
    try:
        client = await connect_mllp(gateway)
        ack = await send_and_receive(client, hl7(control_id="PUT1"))
        client.transport.loseConnection()
        await wait_until(lambda: outbox_rows(gateway) and outbox_rows(gateway)[0]["state"] == "delivered",
                         what="the put_store row delivered")
    finally:
        await gateway.stop()

    assert msa(ack)[1] == "AA"
    [row] = outbox_rows(gateway)
    content_type, body = resource.stored[row["idempotency_key"]]
    assert (row["destination"], row["last_result"], content_type) == ("fhir", "2xx", "application/json")
    assert json.loads(body)["id"] == row["idempotency_key"]


@pytest.mark.parametrize("table,key,says", [
    ({}, "destinations.fhir.base_url", "is required"),
    ({"base_url": "ftp://store/"}, "destinations.fhir.base_url", "must be an http(s) URL ending in '/'"),
    ({"base_url": "http://store/", "timeout_seconds": "soon"}, "destinations.fhir.timeout_seconds",
     "must be a number, got 'soon'"),
    ({"base_url": "http://store/", "timeout_seconds": 0}, "destinations.fhir.timeout_seconds",
     "must be a positive number, got 0.0"),
    ({"base_url": "http://store/", "url": "http://store/"}, "destinations.fhir.url",
     "unknown key (known keys: alert_pending_age_seconds, backoff_base_seconds"),
], ids=["required", "its_own_rule", "type", "rule", "another_kinds_key"])
def test_the_kinds_own_table_is_checked_when_the_plugins_load(table, key, says):
    config = config_with(table)

    with pytest.raises(ConfigError) as raised:
        build_plugin_manager(config, extra=[put_store], load_entry_points=False)

    assert raised.value.key == key
    assert says in raised.value.rule


def test_the_unknown_key_error_lists_the_kinds_keys_with_the_common_ones():
    with pytest.raises(ConfigError) as raised:
        build_plugin_manager(config_with({"base_url": "http://store/", "directory": "x"}), extra=[put_store],
                             load_entry_points=False)

    assert "base_url" in raised.value.rule and "timeout_seconds" in raised.value.rule
    assert "max_in_flight" in raised.value.rule and "directory" not in raised.value.rule.split("(")[1]


def test_a_kind_no_plugin_registers_names_the_kinds_there_are():
    with pytest.raises(ConfigError) as raised:
        build_plugin_manager(config_with({"base_url": "http://store/"}), load_entry_points=False)

    assert raised.value.key == "destinations.fhir.kind"
    assert raised.value.rule.startswith("must be one of batch, file, http, mllp (")


def test_a_built_in_kind_refuses_another_kinds_key():
    config = load_config(environ={}, overrides={"destinations.drop.kind": "file", "destinations.drop.directory": "d",
                                                "destinations.drop.url": "http://store/"})

    with pytest.raises(ConfigError) as raised:
        build_plugin_manager(config, load_entry_points=False)

    assert raised.value.key == "destinations.drop.url"
    assert "directory" in raised.value.rule


class ShadowsHttp:
    """A plugin that would take the ``http`` kind for itself."""

    def hssk_destination_kinds(self):
        return [DestinationKind("http", put_store.PutStoreSettings, put_store.PutStoreDestination)]


def test_two_plugins_registering_one_kind_stop_start_up_naming_both():
    with pytest.raises(PluginLoadError) as raised:
        build_plugin_manager(load_config(environ={}), extra=[ShadowsHttp()], load_entry_points=False)

    assert "registers destination kind 'http', which plugin 'core.destinations' registers already" in str(raised.value)


def test_check_config_exits_2_naming_the_key_of_an_installed_plugins_kind(tmp_path):
    env = installed(tmp_path, {"put_store": "tests.hooks.put_store"})
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text('[destinations.fhir]\nkind = "put_store"\nbase_url = "http://127.0.0.1:9/records/"\n')
    bad.write_text('[destinations.fhir]\nkind = "put_store"\nbase_url = "http://127.0.0.1:9/records"\n')

    accepted = run_gateway_cli(env, "check-config", "--config", good)
    refused = run_gateway_cli(env, "check-config", "--config", bad)

    assert accepted.returncode == 0, accepted.stderr
    assert refused.returncode == 2
    assert refused.stderr.startswith("hssk-gateway: configuration error: destinations.fhir.base_url: must be an "
                                     "http(s) URL ending in '/'")
