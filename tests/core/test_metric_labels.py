"""Label values a sender writes are bounded by the configuration (issue 15, item 12).

A facility label takes only the facility codes of ``[clients.NAME].facilities`` and of what the
plugins claim; a message type label only the types the plugins claim (and the XML 130 kinds).
Everything else is ``other``, so strangers cannot add series to ``hssk_acks_total`` or
``hssk_messages_received_total`` however many of them there are.
"""
from __future__ import annotations

import pytest_twisted

from gateway.core.metrics import Metrics
from gateway.model.hooks import PluginDescription, hookimpl
from tests.support import (TestPlugin, connect_mllp, connect_mllp_from, hl7, metric_value, msa, send_and_receive,
                           start_gateway)

#: A client on 127.0.0.2; strangers connect from 127.0.0.1.
CLIENT = {"clients": {"bv_q1": {"facilities": ["79001"], "addresses": ["127.0.0.2/32"]}}}


class DescribedPlugin(TestPlugin):
    """The test plugin, saying what it claims as data, as the vendor plugins do."""

    @hookimpl
    def hssk_describe(self):
        return PluginDescription("test_his", "MSH-3 TEST_HIS", message_types=frozenset({"ADT^A04"}),
                                 facilities=frozenset({"79002"}))


def series(metrics: Metrics, name: str) -> set[tuple]:
    return {tuple(sorted(sample.labels.items())) for family in metrics.registry.collect()
            for sample in family.samples if sample.name == name}


def stranger(n: int) -> bytes:
    """A message from a sender nobody configured: its own application, facility and message type."""
    raw = hl7(control_id=f"STRANGER{n}", sending_app=f"STRANGER_{n}", message_type=f"Z{n:02d}^Z{n:02d}")
    return raw.replace(b"|79001|", f"|9{n:04d}|".encode("ascii"), 1)


@pytest_twisted.async_yield_fixture
async def gateway_with_a_client(tmp_path):
    gw = await start_gateway(tmp_path / "data", plugins=[DescribedPlugin()], **CLIENT)
    yield gw
    await gw.stop()


@pytest_twisted.ensureDeferred
async def test_fifty_strangers_add_at_most_one_other_series_per_metric(gateway_with_a_client):
    gw = gateway_with_a_client
    client = await connect_mllp_from(gw, "127.0.0.2")
    assert msa(await send_and_receive(client, hl7(control_id="KNOWN1")))[1] == "AA"
    client.transport.loseConnection()
    acks, received = series(gw.metrics, "hssk_acks_total"), series(gw.metrics, "hssk_messages_received_total")
    client = await connect_mllp(gw)

    for n in range(50):
        assert msa(await send_and_receive(client, stranger(n)))[1] == "AR"

    assert len(series(gw.metrics, "hssk_acks_total") - acks) <= 1
    assert len(series(gw.metrics, "hssk_messages_received_total") - received) <= 1
    assert metric_value(gw, "hssk_acks_total", transport="mllp", code="AR", facility="other") == 50
    assert metric_value(gw, "hssk_messages_received_total", transport="mllp", plugin="none",
                        message_type="other") == 50
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_configured_facilities_and_claimed_message_types_keep_their_values(gateway_with_a_client):
    gw = gateway_with_a_client
    client = await connect_mllp_from(gw, "127.0.0.2")

    await send_and_receive(client, hl7(control_id="KNOWN1"))
    await send_and_receive(client, hl7(control_id="PLUGINFAC").replace(b"|79001|", b"|79002|", 1))

    assert metric_value(gw, "hssk_acks_total", transport="mllp", code="AA", facility="79001") == 1
    assert metric_value(gw, "hssk_acks_total", transport="mllp", code="AR", facility="79002") == 1
    assert metric_value(gw, "hssk_messages_received_total", transport="mllp", plugin="test_his",
                        message_type="ADT^A04") == 1
    client.transport.loseConnection()
