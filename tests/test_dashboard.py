"""The Grafana dashboard (config/grafana/hssk-gateway.json) asks only for what a running gateway
exports: every metric it names is in ``GET /metrics``, and every label it groups or filters by is
a label of that metric (or one Prometheus adds when it scrapes)."""
import json
import re
from pathlib import Path

import pytest_twisted
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.metrics import Metrics
from tests.support import TestPlugin, http_request, start_gateway

DASHBOARD = Path(__file__).resolve().parents[1] / "config" / "grafana" / "hssk-gateway.json"
#: Labels Prometheus attaches at scrape time, and the histogram bucket label.
SCRAPE_LABELS = {"instance", "job", "le"}
_METRIC = re.compile(r"\bhssk_[a-z_]+")
_GROUPING = re.compile(r"\bby \(([^)]*)\)")
_MATCHER = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"")


def expressions(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in expressions(value)]
    if isinstance(node, list):
        return [e for value in node for e in expressions(value)]
    return []


def family(sample_name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_total"):
        if sample_name.endswith(suffix):
            return sample_name[: -len(suffix)]
    return sample_name


def declared_labels() -> dict[str, set[str]]:
    """Family name → label names, from the one module that defines every metric."""
    metrics = Metrics()
    return {m._name: set(m._labelnames) for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}


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
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin()])
    try:
        response = await http_request(gateway, "GET", "/metrics")
    finally:
        await gateway.stop()
    exported = {family(f.name) for f in text_string_to_metric_families(response.body.decode())}
    labels = declared_labels()

    used = {family(name) for query in queries for name in _METRIC.findall(query)}
    assert used and used <= exported, f"not exported: {sorted(used - exported)}"
    for query in queries:
        allowed = SCRAPE_LABELS.union(*(labels[family(name)] for name in _METRIC.findall(query)))
        grouped = {label.strip() for group in _GROUPING.findall(query) for label in group.split(",")}
        matched = set(_MATCHER.findall(query))
        assert grouped | matched <= allowed, f"{query}: unknown labels {sorted((grouped | matched) - allowed)}"
