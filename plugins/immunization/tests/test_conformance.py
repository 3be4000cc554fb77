"""The immunization plugin passes the plugin conformance suite (gateway.testing.conformance):
narrowed to its samples' sender, as a site that lists its senders would be (by default it claims
every VXU^V04 no other plugin claims, which the suite would take for claiming others' traffic),
and with the privacy check's diagnoses added to its VXU, which has no DG1 of its own."""
from pathlib import Path

from gateway.testing.conformance import PluginConformance

PLUGINS = Path(__file__).resolve().parents[2]


class TestConformance(PluginConformance):
    plugin = "immunization"
    samples = PLUGINS / "immunization" / "samples"
    settings = {"plugins.immunization.sending_applications": ["NIIS_THU_NGHIEM"]}
    foreign_samples = [PLUGINS / "viettel_his" / "samples", PLUGINS / "vnpt_his" / "samples",
                       PLUGINS / "dhg_his" / "samples"]
    diagnoses_added_to = frozenset({"VXU"})
