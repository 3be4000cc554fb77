"""Viettel-HIS passes the plugin conformance suite (gateway.testing.conformance)."""
from pathlib import Path

from gateway.testing.conformance import PluginConformance

PLUGINS = Path(__file__).resolve().parents[2]


class TestConformance(PluginConformance):
    plugin = "viettel_his"
    samples = PLUGINS / "viettel_his" / "samples"
    foreign_samples = [PLUGINS / "vnpt_his" / "samples"]
