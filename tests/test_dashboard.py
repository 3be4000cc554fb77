"""The Grafana dashboard (config/grafana/hssk-gateway.json) asks only for what a running gateway
exports: every metric it names is in ``GET /metrics``, and every label it groups or filters by is
a label of that metric (or one Prometheus adds when it scrapes)."""
import json
from pathlib import Path

import pytest_twisted

from tests.promql import declared_labels, exported_families, metrics_in, unknown_labels

DASHBOARD = Path(__file__).resolve().parents[1] / "config" / "grafana" / "hssk-gateway.json"


def expressions(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in expressions(value)]
    if isinstance(node, list):
        return [e for value in node for e in expressions(value)]
    return []


def test_every_panel_has_a_query_and_the_dashboard_is_provisionable():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]

    assert dashboard["uid"] == "hssk-gateway"
    assert graphs and all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in graphs)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance", "destination"}


@pytest_twisted.ensureDeferred
async def test_every_metric_and_label_the_dashboard_uses_is_exported(tmp_path):
    queries = expressions(json.loads(DASHBOARD.read_text(encoding="utf-8")))
    exported = await exported_families(tmp_path)
    labels = declared_labels()

    used = set().union(*(metrics_in(query) for query in queries))
    assert used and used <= exported, f"not exported: {sorted(used - exported)}"
    for query in queries:
        assert not unknown_labels(query, labels), f"{query}: unknown labels {sorted(unknown_labels(query, labels))}"
