"""The chart's background compliance switch (issue 13.5/13.6): off by default, least privilege
when on, secrets only with pullSecrets. The rules themselves are exercised against the real
API server by test_kube_background.py and test_kube_pull_secrets.py (same files)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.integration.test_chart import CHART, by_kind, containers, env_of, one, render

pytestmark = pytest.mark.integration

BACKGROUND_RULES = yaml.safe_load((CHART / "files" / "background-rules.yaml").read_text())
SECRET_RULES = yaml.safe_load((CHART / "files" / "pull-secret-rules.yaml").read_text())


def background(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The background loop's cluster-wide objects (the certificate and webhook-registration
    hooks have cluster roles of their own, limited to the release's webhook configurations)."""
    return [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith("-background")]


def test_off_by_default_no_cluster_permission_no_token() -> None:
    docs = render()
    assert background(docs, "ClusterRole") == [] and background(docs, "ClusterRoleBinding") == []
    assert one(docs, "Deployment")["spec"]["template"]["spec"][
        "automountServiceAccountToken"] is False
    gatekeeper, _ = containers(docs)
    assert not [name for name in env_of(gatekeeper) if name.startswith("GATEKEEPER_BACKGROUND")]


def test_enabled_lists_workloads_and_writes_reports_nothing_else() -> None:
    docs = render("background.enabled=true", "background.intervalSeconds=60")
    [role] = background(docs, "ClusterRole")
    assert role["rules"] == BACKGROUND_RULES
    verbs = {(group, resource): tuple(rule["verbs"]) for rule in role["rules"]
             for group in rule["apiGroups"] for resource in rule["resources"]}
    assert verbs[("wgpolicyk8s.io", "policyreports")] == ("get", "create", "update")
    assert all(v == ("list", "watch") for k, v in verbs.items() if k[0] != "wgpolicyk8s.io")
    assert ("", "secrets") not in verbs
    [binding] = background(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gk-gatekeeper",
                                    "namespace": "gatekeeper-system"}]
    assert one(docs, "Deployment")["spec"]["template"]["spec"][
        "automountServiceAccountToken"] is True
    gatekeeper, _ = containers(docs)
    env = env_of(gatekeeper)
    assert (env["GATEKEEPER_BACKGROUND_ENABLED"], env["GATEKEEPER_BACKGROUND_INTERVAL_SECONDS"],
            env["GATEKEEPER_BACKGROUND_PULL_SECRETS"]) == ("true", "60", "false")


def test_pull_secrets_add_get_of_secrets_and_service_accounts_only() -> None:
    docs = render("background.enabled=true", "background.pullSecrets.enabled=true")
    [role] = background(docs, "ClusterRole")
    assert role["rules"] == [*BACKGROUND_RULES, *SECRET_RULES]
    assert SECRET_RULES == [{"apiGroups": [""], "resources": ["secrets", "serviceaccounts"],
                             "verbs": ["get"]}]
    gatekeeper, _ = containers(docs)
    assert env_of(gatekeeper)["GATEKEEPER_BACKGROUND_PULL_SECRETS"] == "true"
