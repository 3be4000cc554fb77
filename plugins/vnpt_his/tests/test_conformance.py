"""VNPT-HIS passes the plugin conformance suite (gateway.testing.conformance)."""
from pathlib import Path

from gateway.testing.conformance import PluginConformance

PLUGINS = Path(__file__).resolve().parents[2]


class TestConformance(PluginConformance):
    plugin = "vnpt_his"
    samples = PLUGINS / "vnpt_his" / "samples"
    settings = {"plugins.vnpt_his.xml_facilities": ["79025", "48202", "01001"]}
    foreign_samples = [PLUGINS / "viettel_his" / "samples"]
