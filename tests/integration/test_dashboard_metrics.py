"""Every metric the chart's alerts and dashboard query is one the gatekeeper really exposes,
and every decision, from either door, is counted under the new prefix (and the old one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.app import container_of
from tests.integration.test_admission_signatures import deployment_review

CHART = Path(__file__).resolve().parents[2] / "charts" / "gatekeeper"
NAME = re.compile(r"\bforge_gatekeeper_[a-z0-9_]+")
DIGEST = "sha256:" + "56" * 32


def _exposed(text: str) -> set[str]:
    """The names a query may use for the families in one /metrics exposition."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        if family.type == "info":
            names.add(family.name + "_info")
    return names


def _queried() -> dict[str, set[str]]:
    dashboard = json.loads((CHART / "files/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = (CHART / "templates/prometheusrule.yaml").read_text()
    return {
        "dashboard": {n for e in exprs for n in NAME.findall(e)},
        "rules": set(NAME.findall(rules)),
    }


def test_every_queried_metric_is_exposed(client: TestClient) -> None:
    assert client.post("/v1/evaluations", json={
        "images": [f"registry.example.com/a@{DIGEST}"], "environment": "development"}
    ).status_code == 200
    text = generate_latest(container_of(client).metrics.registry).decode()
    exposed = _exposed(text)
    queried = _queried()
    assert len(queried["rules"]) >= 6 and len(queried["dashboard"]) >= 15
    for where, names in queried.items():
        assert names - exposed == set(), f"{where} queries metrics the app does not expose"


def test_decisions_of_both_doors_are_counted_with_old_names_kept(client: TestClient) -> None:
    assert client.post("/v1/evaluations", json={
        "images": [f"registry.example.com/a@{DIGEST}"], "environment": "development"}
    ).status_code == 200
    answered = client.post("/admission/validate", json=deployment_review(
        "uid-metrics-1", [f"registry.example.com/a@{DIGEST}"]))
    assert answered.status_code == 200
    registry = container_of(client).metrics.registry
    for prefix in ("forge_gatekeeper_", "gatekeeper_"):
        assert registry.get_sample_value(
            f"{prefix}decisions_total", {"source": "pipeline", "verdict": "allow"}) == 1
        admission = sum(
            sample.value
            for family in registry.collect() if family.name == f"{prefix}decisions"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels["source"] == "admission"
        )
        assert admission == 1, f"{prefix}decisions_total does not count the admission review"
    build = registry.get_sample_value("forge_gatekeeper_build_info", {
        "version": __import__("gatekeeper").__version__,
        "python": __import__("platform").python_version()})
    assert build == 1
