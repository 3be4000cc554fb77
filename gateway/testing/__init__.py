"""The plugin kit: test a plugin against a real gateway, with pytest.

Installed with the gateway (``pip install 'hssk-gateway[testing]'`` brings pytest-twisted too),
it gives a plugin's tests three things:

- **fixtures** (:mod:`gateway.testing.fixtures`, loaded by pytest on its own through the
  ``pytest11`` entry point): ``hssk_gateway`` starts a real gateway on 127.0.0.1 with the plugins
  under test, ``hssk_recording_store`` records what it delivers, ``hssk_mllp`` / ``hssk_http``
  send messages and return the answers, ``hssk_log`` captures what it logs;
- **helpers** for the same without fixtures (below), and for editing samples;
- **the conformance suite** (:mod:`gateway.testing.conformance`), the checks every plugin passes,
  in one line of the plugin's tests::

      from gateway.testing.conformance import PluginConformance

      class TestConformance(PluginConformance):
          plugin = "my_his"
          samples = Path(__file__).parent.parent / "samples"

A test over MLLP::

    @pytest_twisted.ensureDeferred
    async def test_broken_cccd_is_answered_ae_at_pid_3(hssk_mllp):
        raw = read_sample(SAMPLES / "adt_a04.hl7").replace(b"079185004321", b"07918500432")

        ack = await hssk_mllp.send(raw)

        ack.assert_error(location="PID^1^3", code=102, text="CCCD")

The kit is part of the gateway and uses its internals; a plugin's own code still imports only
from :mod:`gateway.plugin`.
"""
from gateway.testing.gateway import (
    Ack,
    ErrorSegment,
    GatewayUnderTest,
    HttpAnswer,
    HttpClient,
    MllpConnection,
    installed_plugin_names,
)
from gateway.testing.logs import LogCapture
from gateway.testing.programs import require_program
from gateway.testing.recording import Delivery, RecordingDestination, recording_settings
from gateway.testing.samples import (
    edit_xml130,
    read_sample,
    with_msh_field,
    with_segment_after,
    without_segments,
    xml130_tables,
)

__all__ = [
    "Ack", "Delivery", "ErrorSegment", "GatewayUnderTest", "HttpAnswer", "HttpClient", "LogCapture", "MllpConnection",
    "RecordingDestination", "edit_xml130", "installed_plugin_names", "read_sample", "recording_settings", "require_program",
    "with_msh_field", "with_segment_after", "without_segments", "xml130_tables",
]
