"""What the dashboard and alert-rule tests ask of a PromQL expression: which of our metrics it
names and which labels it groups or filters by, checked against the metrics a gateway exports."""
from __future__ import annotations

import re

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.metrics import Metrics
from tests.support import TestPlugin, http_request, start_gateway

#: Labels Prometheus attaches at scrape time, and the histogram bucket label.
SCRAPE_LABELS = {"instance", "job", "le"}
_METRIC = re.compile(r"\bhssk_[a-z_]+")
_GROUPING = re.compile(r"\bby \(([^)]*)\)")
_MATCHER = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"")


def family(sample_name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_total"):
        if sample_name.endswith(suffix):
            return sample_name[: -len(suffix)]
    return sample_name


def metrics_in(query: str) -> set[str]:
    """The families of every ``hssk_`` metric the query names."""
    return {family(name) for name in _METRIC.findall(query)}


def grouped_labels(query: str) -> set[str]:
    return {label.strip() for group in _GROUPING.findall(query) for label in group.split(",")}


def declared_labels() -> dict[str, set[str]]:
    """Family name → label names, from the one module that defines every metric."""
    metrics = Metrics()
    return {m._name: set(m._labelnames) for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}


def unknown_labels(query: str, labels: dict[str, set[str]]) -> set[str]:
    """Labels the query groups or filters by that none of its metrics has."""
    allowed = SCRAPE_LABELS.union(*(labels[name] for name in metrics_in(query)))
    return (grouped_labels(query) | set(_MATCHER.findall(query))) - allowed


async def exported_families(tmp_path) -> set[str]:
    """The metric families a freshly started gateway's ``GET /metrics`` lists."""
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin()])
    try:
        response = await http_request(gateway, "GET", "/metrics")
    finally:
        await gateway.stop()
    return {family(f.name) for f in text_string_to_metric_families(response.body.decode())}
