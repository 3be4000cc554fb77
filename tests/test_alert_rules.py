"""The Prometheus alerting rules (config/prometheus/hssk-gateway-rules.yml) ask only for what a
running gateway exports, every annotation names only labels its alert's series carry, and
``promtool check rules`` accepts the file where promtool is installed."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
import yaml

from tests.promql import SCRAPE_LABELS, declared_labels, exported_families, grouped_labels, metrics_in, unknown_labels

RULES = Path(__file__).resolve().parents[1] / "config" / "prometheus" / "hssk-gateway-rules.yml"
_DURATION = re.compile(r"\d+[smhd]")
_TEMPLATE_LABEL = re.compile(r"\$labels\.([a-z_]+)")


def alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_has_an_expression_a_severity_and_words_for_the_operator():
    rules = alerts()

    assert len({r["alert"] for r in rules}) == len(rules) >= 10
    for rule in rules:
        assert rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert "for" not in rule or _DURATION.fullmatch(rule["for"]), rule["alert"]


@pytest_twisted.ensureDeferred
async def test_every_metric_and_label_the_rules_use_is_exported(tmp_path):
    exported = await exported_families(tmp_path)
    labels = declared_labels()

    for rule in alerts():
        query = rule["expr"]
        assert metrics_in(query) <= exported, f"{rule['alert']}: not exported {sorted(metrics_in(query) - exported)}"
        assert not unknown_labels(query, labels), f"{rule['alert']}: unknown labels {unknown_labels(query, labels)}"


def test_annotations_name_only_labels_the_alerts_series_carry():
    labels = declared_labels()
    for rule in alerts():
        query = rule["expr"]
        grouped = grouped_labels(query)
        # An aggregated expression keeps only its "by" labels; a plain selector keeps its metrics' own.
        carried = grouped if grouped else SCRAPE_LABELS.union(*(labels[m] for m in metrics_in(query)))
        named = {label for text in rule["annotations"].values() for label in _TEMPLATE_LABEL.findall(text)}
        assert named <= carried, f"{rule['alert']}: annotations name {sorted(named - carried)}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
