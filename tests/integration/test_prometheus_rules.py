"""The chart's PrometheusRule, rendered by the real helm, passes ``promtool check rules`` and
the ``promtool test rules`` cases in tests/assets/promtool; the dashboard renders as a ConfigMap.

Needs ``GATEKEEPER_HELM`` and ``GATEKEEPER_PROMTOOL`` (built by ``scripts/install-tools``,
exported by ``scripts/test-servers``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_chart import one, render

PROMTOOL = os.environ.get("GATEKEEPER_PROMTOOL")
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "promtool"
CHART = Path(__file__).resolve().parents[2] / "charts" / "gatekeeper"
pytestmark = pytest.mark.skipif(
    not os.environ.get("GATEKEEPER_HELM"), reason="GATEKEEPER_HELM is not set")
needs_promtool = pytest.mark.skipif(
    not PROMTOOL, reason="GATEKEEPER_PROMTOOL (path of promtool) is not set")


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@needs_promtool
def test_rendered_rules_pass_promtool_check_and_tests(tmp_path: Path) -> None:
    docs = render("metrics.prometheusRule.enabled=true")
    rule = one(docs, "PrometheusRule")
    assert [r["alert"] for r in rule["spec"]["groups"][0]["rules"]] == [
        "ForgeGatekeeperGateFailing", "ForgeGatekeeperAuditSpoolNotDraining",
        "ForgeGatekeeperCheckpointTooOld", "ForgeGatekeeperWebhookLatencyNearBudget",
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(ASSETS / "forge-gatekeeper.test.yaml", tmp_path / "rules.test.yaml")
    checked = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout
    tested = _promtool("test", "rules", "rules.test.yaml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@needs_promtool
def test_a_broken_threshold_fails_the_promtool_cases(tmp_path: Path) -> None:
    """The cases can fail: with a 2-hour checkpoint threshold the 'old' case no longer fires."""
    docs = render("metrics.prometheusRule.enabled=true",
                  "metrics.prometheusRule.checkpointMaxAgeSeconds=7200")
    rule = one(docs, "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(ASSETS / "forge-gatekeeper.test.yaml", tmp_path / "rules.test.yaml")
    tested = _promtool("test", "rules", "rules.test.yaml", cwd=tmp_path)
    assert tested.returncode == 1
    assert "ForgeGatekeeperCheckpointTooOld" in tested.stdout + tested.stderr


def test_dashboard_and_rules_are_optional(tmp_path: Path) -> None:
    kinds = {doc["kind"] for doc in render()}
    assert "PrometheusRule" not in kinds
    docs = render("metrics.grafanaDashboard.enabled=true")
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"
                     and d["metadata"]["name"].endswith("-dashboard")]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["forge-gatekeeper.json"])
    assert dashboard == json.loads((CHART / "files/grafana-dashboard.json").read_text())


def test_sidecar_decision_logs_are_optional() -> None:
    def opa_config(*sets: str) -> dict[str, Any]:
        (config_map,) = [d for d in render(*sets) if d["kind"] == "ConfigMap"
                         and "config.yaml" in d.get("data", {})]
        config: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
        return config

    assert "decision_logs" not in opa_config()
    assert opa_config("opa.decisionLogs.console=true")["decision_logs"] == {"console": True}
