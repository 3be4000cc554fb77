"""Input kinds as a registry: the gateway's own HL7 v2 and XML 130 readers are built-in plugins of
``hssk_sources``, registered as any plugin's source is; a name or a route is one source's only;
every input is journaled with the source that read it, and replayed with it."""
import sqlite3

import pytest
import pytest_twisted

import gateway.sources.hl7v2
import gateway.sources.xml130
from gateway.core.pipeline import Pipeline
from gateway.core.plugins import PluginLoadError, build_plugin_manager
from gateway.core.sources import Reading, Source, SourceError
from gateway.model.hooks import hookimpl
from tests.support import (
    TestPlugin,
    connect_mllp,
    gateway_config,
    hl7,
    http_request,
    journal_rows,
    msa,
    send_and_receive,
    start_gateway,
)
from tests.transports.test_xml_intake import TestDocumentPlugin, noi_tru


def source_named(name: str, route: bytes | None = None) -> Source:
    return Source(name, read=lambda envelope, request: Reading(None, None), identify=lambda *_: None, route=route,
                  media_types=("text/plain",) if route else ())


class SourcePlugin:
    """A plugin registering the sources it is given, registered under ``name``."""

    def __init__(self, name: str, *sources: Source) -> None:
        self.__name__ = name
        self.sources = sources

    @hookimpl
    def hssk_sources(self):
        return self.sources


def test_the_hl7v2_and_xml130_readers_are_built_in_plugins_of_hssk_sources(tmp_path):
    config = gateway_config(tmp_path)
    manager = build_plugin_manager(config, load_entry_points=False)

    pipeline = Pipeline(manager.hook, config)

    assert manager.get_plugin("core.hl7v2") is gateway.sources.hl7v2
    assert manager.get_plugin("core.xml130") is gateway.sources.xml130
    assert [s.name for s in pipeline.sources] == ["hl7v2", "xml130"]
    assert pipeline.sources.owners == {"hl7v2": "core", "xml130": "core"}
    assert [(s.route, s.hl7) for s in pipeline.sources] == [(b"hl7", True), (b"xml130", False)]


def test_a_second_source_with_a_name_already_registered_stops_start_up_naming_both_plugins(tmp_path):
    first, second = SourcePlugin("first", source_named("lists")), SourcePlugin("second", source_named("lists"))
    config = gateway_config(tmp_path)

    with pytest.raises(PluginLoadError, match="source 'lists' is registered by plugin 'second' and by plugin 'first'"):
        build_plugin_manager(config, extra=[first, second], load_entry_points=False)
    with pytest.raises(PluginLoadError, match="source 'hl7v2' is registered by plugin 'mine' and by plugin 'core'"):
        build_plugin_manager(config, extra=[SourcePlugin("mine", source_named("hl7v2"))], load_entry_points=False)


def test_a_source_on_a_route_the_listener_or_another_source_has_stops_start_up(tmp_path):
    config = gateway_config(tmp_path)

    with pytest.raises(SourceError, match="route b'admin'"):
        source_named("lists", route=b"admin")
    with pytest.raises(PluginLoadError, match=r"takes HTTP route /xml130, which source 'xml130' has"):
        build_plugin_manager(config, extra=[SourcePlugin("mine", source_named("lists", route=b"xml130"))],
                             load_entry_points=False)


def test_a_source_name_is_a_journal_value_and_a_label_so_its_shape_is_checked():
    with pytest.raises(SourceError, match="lower-case letters"):
        source_named("Population List")


@pytest_twisted.ensureDeferred
async def test_every_input_is_journaled_with_the_source_that_read_it(tmp_path):
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), TestDocumentPlugin()])
    try:
        client = await connect_mllp(gw)
        assert msa(await send_and_receive(client, hl7(control_id="SRC-HL7")))[1] == "AA"
        client.transport.loseConnection()
        assert (await http_request(gw, "POST", "/xml130", noi_tru(), "application/xml")).code == 200

        assert [(r["transport"], r["source"]) for r in journal_rows(gw)] == [("mllp", "hl7v2"), ("http", "xml130")]
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_rows_journaled_before_sources_were_recorded_replay_with_the_source_their_sender_names(tmp_path):
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), TestDocumentPlugin()])
    try:
        client = await connect_mllp(gw)
        await send_and_receive(client, hl7(control_id="OLD-HL7"))
        client.transport.loseConnection()
        await http_request(gw, "POST", "/xml130", noi_tru(), "application/xml")
        conn = sqlite3.connect(gw.config.database_path)
        with conn:
            conn.execute("UPDATE messages SET source = NULL")
        conn.close()

        replayed = (await http_request(gw, "POST", "/admin/messages/replay?status=accepted&since=2000-01-01")).json()

        assert [(r["sender"][:4], r["ack_code"], r["queued"]) for r in replayed["replayed"]] == [
            ("TEST", "AA", 0), ("XML|", "AA", 0)]
        assert [r["source"] for r in journal_rows(gw)][2:] == ["hl7v2", "xml130"]
    finally:
        await gw.stop()
