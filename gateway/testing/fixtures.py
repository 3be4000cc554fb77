"""The ``gateway.testing`` pytest fixtures, for the tests of a plugin (installed with the gateway).

Every fixture name starts with ``hssk_`` so it cannot shadow a project's own ``gateway`` or
``plugin`` fixtures. A test module says what to load by overriding the first three; the others
start, connect and tear down::

    import pytest
    import pytest_twisted

    from gateway.testing import read_sample

    @pytest.fixture
    def hssk_plugins():
        return ["my_his"]                       # entry-point names and/or plugin objects

    @pytest.fixture
    def hssk_settings():
        return {"plugins.my_his.sending_applications": ["MY_HIS"]}

    @pytest_twisted.ensureDeferred
    async def test_admission_is_accepted_and_delivered(hssk_gateway, hssk_mllp, hssk_recording_store):
        ack = await hssk_mllp.send(read_sample("samples/adt_a04.hl7"))

        ack.assert_accepted()
        [row] = hssk_gateway.journal(control_id=ack.control_id)
        keys = hssk_gateway.outbox_keys([row["id"]])
        await hssk_recording_store.wait_for_keys(keys)

| fixture | what it is |
|---|---|
| ``hssk_plugins`` | override: the plugins to load (default: every installed plugin, as ``serve``) |
| ``hssk_settings`` | override: config keys, dotted (default: none) |
| ``hssk_formats`` | override: one recording destination per format (default ``("json",)``) |
| ``hssk_recording_store`` | :class:`RecordingDestination`: the HTTP server the destinations post to |
| ``hssk_gateway`` | :class:`GatewayUnderTest`, started; stopped after the test |
| ``hssk_mllp`` | :class:`MllpConnection` to it: ``await hssk_mllp.send(raw)`` is the :class:`Ack` |
| ``hssk_http`` | :class:`HttpClient` to it: ``post_hl7``, ``post_xml130``, ``request`` |
| ``hssk_log`` | :class:`LogCapture` of what the gateway logs during the test |
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import pytest_twisted

from gateway.testing.gateway import GatewayUnderTest, HttpClient
from gateway.testing.logs import LogCapture
from gateway.testing.recording import RecordingDestination, recording_settings


@pytest.fixture
def hssk_plugins() -> Sequence[str | object]:
    return ()


@pytest.fixture
def hssk_settings() -> Mapping[str, Any]:
    return {}


@pytest.fixture
def hssk_formats() -> Sequence[str]:
    return ("json",)


@pytest_twisted.async_yield_fixture
async def hssk_recording_store():
    store = RecordingDestination().start()
    yield store
    await store.stop()


@pytest_twisted.async_yield_fixture
async def hssk_gateway(tmp_path, hssk_plugins, hssk_settings, hssk_formats, hssk_recording_store):
    gateway = GatewayUnderTest(tmp_path / "hssk-data", hssk_plugins,
                               {**recording_settings(hssk_recording_store, hssk_formats), **hssk_settings})
    await gateway.start()
    yield gateway
    await gateway.stop()


@pytest_twisted.async_yield_fixture
async def hssk_mllp(hssk_gateway):
    connection = await hssk_gateway.connect_mllp()
    yield connection
    connection.close()


@pytest.fixture
def hssk_http(hssk_gateway) -> HttpClient:
    return hssk_gateway.http


@pytest.fixture
def hssk_log():
    capture = LogCapture().start()
    yield capture
    capture.stop()

