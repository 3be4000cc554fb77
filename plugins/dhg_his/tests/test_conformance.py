"""dhg_his passes the plugin conformance suite (gateway.testing.conformance), with the facility
of its XML 130 sample configured, and leaves the other vendors' samples to them."""
from pathlib import Path

from gateway.testing.conformance import PluginConformance

PLUGINS = Path(__file__).resolve().parents[2]


class TestConformance(PluginConformance):
    plugin = "dhg_his"
    samples = PLUGINS / "dhg_his" / "samples"
    settings = {"plugins.dhg_his.xml_facilities": ["92001"]}
    foreign_samples = [PLUGINS / "viettel_his" / "samples", PLUGINS / "vnpt_his" / "samples"]
