"""The Grafana dashboard and the alert rules query only metrics that /metrics exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

OBSERVABILITY = Path(__file__).resolve().parents[2] / "docs" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "clm-overview.json"
PROMETHEUS = OBSERVABILITY / "prometheus"
METRIC = re.compile(r"\bclm_[a-zA-Z0-9_:]*")
# The names PromQL sees for each family type (text format 0.0.4).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}


def _queries(node: object) -> Iterator[str]:
    """Every PromQL string of the dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, child in node.items():
            if key in ("expr", "query", "definition") and isinstance(child, str):
                yield child
            else:
                yield from _queries(child)
    elif isinstance(node, list):
        for child in node:
            yield from _queries(child)


def exported_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


@pytest.fixture
def exported(staff_client, make_version) -> set[str]:
    make_version(status="production")
    response = staff_client.get("/metrics")
    assert response.status_code == 200
    return exported_names(response.content.decode())


@pytest.mark.django_db
def test_every_metric_the_dashboard_queries_is_exported(exported):
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [q for q in _queries(dashboard) if q != "prometheus"]  # the datasource variable
    assert len(queries) > 20
    assert all(METRIC.search(query) for query in queries), "a query reads no CLM metric"
    queried = {name for query in queries for name in METRIC.findall(query)}
    missing = queried - exported
    assert not missing, f"the dashboard queries metrics /metrics does not export: {missing}"


@pytest.mark.django_db
def test_every_metric_the_alerts_query_is_exported(exported):
    yaml = pytest.importorskip("yaml")
    rules = yaml.safe_load((PROMETHEUS / "clm-alerts.yml").read_text())["groups"][0]["rules"]
    assert rules and all(rule["alert"].startswith("Clm") for rule in rules)
    queried = {name for rule in rules for name in METRIC.findall(rule["expr"])}
    missing = queried - exported
    assert not missing, f"the alerts query metrics /metrics does not export: {missing}"
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    clm = next(job for job in config["scrape_configs"] if job["job_name"] == "clm")
    assert clm["metrics_path"] == "/metrics" and clm["authorization"]["type"] == "Bearer"


def test_dashboard_is_importable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "clm-overview" and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and panel["description"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "model_type"} <= variables
