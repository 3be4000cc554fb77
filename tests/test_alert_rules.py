"""The Prometheus alerting rules (config/prometheus/hssk-gateway-rules.yml) ask only for what a
running gateway exports, every annotation names only labels its alert's series carry, every alert
fires for the first event of a series (``promtool test rules`` runs hssk-gateway-rules.test.yml),
and ``promtool check rules`` accepts the file. Without promtool those two skip, except under
``CI=true``, where they fail (``make test`` installs it when it can)."""
import re
import subprocess
from pathlib import Path

import pytest_twisted
import yaml

from gateway.testing import require_program
from tests.promql import (
    SCRAPE_LABELS,
    declared_labels,
    exported_families,
    family,
    grouped_labels,
    metrics_in,
    unknown_labels,
)

RULES = Path(__file__).resolve().parents[1] / "config" / "prometheus" / "hssk-gateway-rules.yml"
RULE_TESTS = RULES.with_name("hssk-gateway-rules.test.yml")
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


def test_every_increase_of_a_labelled_counter_also_counts_its_series_first_value():
    """A labelled counter's series appears when it is first incremented, already above 0, and
    increase() sees only what changes after that; an unlabelled one is exported at 0 from start-up.
    So every increase() of a labelled counter is joined by the series that did not exist a window
    ago (``X unless X offset W``), which the rule unit tests exercise."""
    labels = declared_labels()
    for rule in alerts():
        query = rule["expr"]
        for name, window in re.findall(r"increase\((hssk_[a-z_]+)(?:\{[^}]*\})?\[(\w+)\]\)", query):
            if labels[family(name)]:
                assert re.search(rf"unless {name}\s+offset {window}\b", query), f"{rule['alert']}: {name}"


def promtool() -> str:
    return require_program("promtool", "prometheus")


def test_promtool_accepts_the_rules():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_show_every_alert_firing_for_its_first_event():
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
              for case in test["alert_rule_test"] if case["exp_alerts"]}

    result = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                            capture_output=True, timeout=120)

    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert tested == {rule["alert"] for rule in alerts()}
