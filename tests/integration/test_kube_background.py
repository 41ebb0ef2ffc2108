"""Continuous compliance against the real API server (issue 13.5).

The control plane of ``scripts/test-cluster`` (no kubelet: "running" means the workload objects
the API server stores, created here with kubectl), the PolicyReport CRD of the chart, the real
embedded OPA over a copy of ``policies/``, and ECR findings from moto. The loop reads the
cluster as a ServiceAccount holding only the chart's least-privilege rules (a bearer token from
``kubectl create token``), so a missing permission fails here.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from gatekeeper.api.auth import Authenticator, install_auth
from gatekeeper.compliance import BackgroundMetrics, ComplianceLoop, ComplianceScanner
from gatekeeper.compliance.routes import build_compliance_router
from gatekeeper.domain import Source
from gatekeeper.kube.client import KubeClient
from gatekeeper.kube.reports import KubePolicyReports, KubeWorkloads
from gatekeeper.policy import EmbeddedOpa
from gatekeeper.policy.bundle import PolicyFiles
from gatekeeper.policy.replay import replay_decisions
from gatekeeper.scans import EcrScanSource, ScanEvidenceCollector
from gatekeeper.service import EvaluationService
from gatekeeper.webhook.scope import AdmissionSettings
from tests.fakes import FakeAuditLog
from tests.helpers.types import MakeSettings
from tests.integration.kube_cluster import (  # noqa: F401
    AUDIT_ONLY,
    REPO,
    ControlPlane,
    control_plane,
    service_account,
)
from tests.integration.test_ecr_scans import (  # noqa: F401
    PushImage,
    aws_credentials,
    complete_scan,
    ecr,
    enhanced_finding,
    inject,
    push_image,
)

pytestmark = [pytest.mark.integration, pytest.mark.kube]

CRD = REPO / "charts" / "gatekeeper" / "crds" / "wgpolicyk8s.io_policyreports.yaml"
#: The rules of the chart's background ClusterRole (charts/gatekeeper/templates/background.yaml).
BACKGROUND_RULES = yaml.safe_load(
    (REPO / "charts" / "gatekeeper" / "files" / "background-rules.yaml").read_text())
CONFIG = {
    "signatures": {"environments": {"production": {"require_signature": False,
                                                   "require_provenance": False}}},
    "sbom": {"environments": {"production": {"require_sbom": False, "require_bound": False}}},
    # moto answers the first scan result of a digest for ever: the image starts unscanned
    # (allowed here), then its scan completes with a CRITICAL finding.
    "vulnerabilities": {"environments": {"production": {"require_complete_scan": False}}},
}
PERIOD = 2.0
Background = tuple[ComplianceScanner, ComplianceLoop, FakeAuditLog, Path, KubeClient,
                   CollectorRegistry]


def _service_account_client(cluster: ControlPlane, tmp_path: Path) -> KubeClient:
    server, token_file, ca_file = _service_account(cluster, tmp_path)
    return KubeClient(server, token_file=token_file, ca_file=ca_file)


def _service_account(cluster: ControlPlane, tmp_path: Path) -> tuple[str, Path, Path]:
    """The API server URL, a token file and the CA of a ServiceAccount with the chart's rules."""
    cluster.apply(yaml.safe_load(CRD.read_text()))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                    "crd/policyreports.wgpolicyk8s.io")
    return service_account(cluster, "gk-bg-system", BACKGROUND_RULES, tmp_path)


@pytest.fixture()
def background(control_plane: ControlPlane, tmp_path: Path,  # noqa: F811
               moto_url: str) -> Iterator[Background]:  # noqa: F811
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    config_root = tmp_path / "opa-data"
    for key, value in CONFIG.items():
        folder = config_root / "gatekeeper" / "config" / key
        folder.mkdir(parents=True)
        (folder / "data.json").write_text(json.dumps(value))
    opa = EmbeddedOpa(opa_binary=str(REPO / ".tools/bin/opa"), policy_dir=policies,
                      data_paths=[config_root])
    opa.start()
    audit = FakeAuditLog()
    scans = ScanEvidenceCollector(
        source=EcrScanSource(endpoint_url=moto_url, retry_mode="standard", max_attempts=2),
        ttl_seconds=1.0, pending_ttl_seconds=1.0)
    service = EvaluationService(policy_engine=opa.engine, audit_log=audit, collectors=[scans])
    client = _service_account_client(control_plane, tmp_path)
    registry = CollectorRegistry()
    settings = AdmissionSettings(environment="production",
                                 excluded_namespaces=frozenset({"kube-system"}))
    scanner = ComplianceScanner(service, settings,
                                KubeWorkloads(client, settings.all_excluded_namespaces),
                                KubePolicyReports(client),
                                metrics=BackgroundMetrics(registry))
    loop = ComplianceLoop(scanner, interval=PERIOD, tick=0.25, revision=opa.engine.revision)
    try:
        yield scanner, loop, audit, policies, client, registry
    finally:
        loop.stop()
        client.close()
        opa.stop()


def _deployment(name: str, namespace: str, image: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{
                                      "name": "app", "image": image,
                                      # compliant with production's workload rules
                                      "resources": {
                                          "requests": {"cpu": "100m", "memory": "64Mi"},
                                          "limits": {"cpu": "500m", "memory": "256Mi"}},
                                      "securityContext": {"readOnlyRootFilesystem": True,
                                                          "runAsNonRoot": True}}]}}}}


def _report(cluster: ControlPlane, namespace: str) -> dict[str, Any] | None:
    found = cluster.kubectl("get", "policyreports.wgpolicyk8s.io", "forge-gatekeeper", "-n",
                            namespace, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def _results_of(report: dict[str, Any] | None, name: str) -> list[tuple[str, str, str]]:
    if report is None:
        return []
    return [(r["result"], r["policy"], r["message"]) for r in report.get("results", [])
            if r["resources"][0]["name"] == name]


def test_critical_finding_and_stricter_revision_reach_the_policy_report(
    background: Background,
    control_plane: ControlPlane, moto_url: str, push_image: PushImage,  # noqa: F811
    ecr: Any, tmp_path: Path,  # noqa: F811
) -> None:
    scanner, loop, audit, policies, _, registry = background
    namespace = control_plane.namespace("gk-bg", labels=AUDIT_ONLY)
    reference, digest = push_image(scan=False)
    control_plane.apply(_deployment("shop", namespace, str(reference)))
    loop.start()

    def report_where(predicate: Any, timeout: float) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            report = _report(control_plane, namespace)
            return report if report is not None and predicate(report) else None
        value: dict[str, Any] = control_plane.wait_for(
            f"PolicyReport of {namespace}", check, timeout=timeout)
        return value

    # Not scanned yet: the Deployment passes (its ReplicaSet and Pods are evaluated through it).
    first = report_where(lambda r: _results_of(r, "shop"), timeout=30)
    assert _results_of(first, "shop") == [
        ("pass", "gatekeeper", "admission would allow this workload")]
    assert first["summary"] == {"pass": 1, "fail": 0, "warn": 0, "error": 0, "skip": 0}
    [entry] = first["results"]
    assert entry["resources"][0] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "namespace": namespace, "name": "shop",
                                     "uid": entry["resources"][0]["uid"]}
    assert entry["source"] == "forge-gatekeeper"
    mine = [d for d in audit.records if d.namespace == namespace]
    assert len(mine) == 1 and mine[0].source is Source.BACKGROUND
    assert mine[0].context["background"]["kind"] == "Deployment"

    # A CRITICAL finding is published for the running digest: failing within one loop period
    # (plus the scan cache's 1 s TTL and the time to evaluate).
    ecr.start_image_scan(repositoryName=reference.repository,
                         imageId={"imageDigest": str(digest)})
    inject(moto_url, reference, digest, **complete_scan(
        [enhanced_finding("CVE-2024-3094", "xz-utils", "5.6.0", "5.6.1")], age=timedelta(hours=1)))
    injected = time.monotonic()
    failing = report_where(lambda r: r["summary"]["fail"] > 0, timeout=PERIOD + 1.0 + 3.0)
    latency = time.monotonic() - injected
    print(f"finding injected -> PolicyReport fail: {latency:.2f}s (loop period {PERIOD}s)")
    assert latency <= PERIOD + 1.0 + 3.0  # a period, the scan cache TTL, scan + polling
    assert _results_of(failing, "shop") == [
        ("fail", "vulnerabilities",
         "CVE-2024-3094 in xz-utils 5.6.0 (CRITICAL, fixed in 5.6.1) is not allowed in "
         "production")]
    # GET /v1/compliance and the metric say the same.
    app = FastAPI()
    install_auth(app, Authenticator.from_settings(insecure_disable_auth=True))
    app.state.compliance = scanner
    app.include_router(build_compliance_router())
    body = TestClient(app).get("/v1/compliance").json()
    assert body["status"] == "ready"
    [denied] = [d for d in body["denied"] if d["namespace"] == namespace]
    assert (denied["kind"], denied["name"], denied["verdict"]) == ("Deployment", "shop", "deny")
    assert [v["message"] for v in denied["violations"]] == [
        "CVE-2024-3094 in xz-utils 5.6.0 (CRITICAL, fixed in 5.6.1) is not allowed in "
        "production"]
    assert registry.get_sample_value(
        "forge_gatekeeper_background_violations",
        {"policy": "vulnerabilities", "namespace": namespace}) == 1.0

    # Unchanged results are not re-recorded, however many loops ran.
    time.sleep(PERIOD * 2)
    mine = [d for d in audit.records if d.namespace == namespace]
    assert [d.verdict.value for d in mine] == ["allow", "deny"]

    # A stricter candidate (ECR no longer an allowed registry in production): the replay's
    # "running now" section names the running workload it would deny, before activation.
    data = json.loads((policies / "data.json").read_text())
    data["gatekeeper"]["config"]["environments"]["production"]["allowed_registries"] = [
        "registry.example.com"]
    candidate = tmp_path / "candidate"
    shutil.copytree(policies, candidate)
    (candidate / "data.json").write_text(json.dumps(data))
    report = replay_decisions(PolicyFiles.from_directory(candidate), [],
                              opa_binary=str(REPO / ".tools/bin/opa"),
                              running=scanner.running_decisions()).as_dict()
    [running] = [w for w in report["running_now"]["denied"] if w["namespace"] == namespace]
    assert (running["kind"], running["name"], running["current_verdict"],
            running["new_verdict"]) == ("Deployment", "shop", "deny", "deny")
    replayed_registry = [v["message"] for v in running["violations"]
                         if v["policy"] == "registries"]
    assert len(replayed_registry) == 1

    # The stricter revision is activated: the loop notices it and the report says so.
    (policies / "data.json").write_text(json.dumps(data))
    stricter = report_where(
        lambda r: any(p == "registries" for _, p, _ in _results_of(r, "shop")), timeout=20)
    policies_failing = {policy for result, policy, _ in _results_of(stricter, "shop")
                        if result == "fail"}
    assert policies_failing == {"registries", "vulnerabilities"}, _results_of(stricter, "shop")
    assert [m for _, p, m in _results_of(stricter, "shop") if p == "registries"] == \
        replayed_registry
    assert stricter["metadata"]["annotations"]["gatekeeper.forge.dev/policy-revision"] != \
        failing["metadata"]["annotations"]["gatekeeper.forge.dev/policy-revision"]
    # Writing into the watched directory (not through the lifecycle, which waits for OPA to
    # load a revision) can show the new revision hash one scan before OPA serves it: that
    # scan's result is recorded too, so 1 or 2 records carry the new revision.
    mine = [d for d in audit.records if d.namespace == namespace]
    newest = mine[-1]
    assert {v.policy for v in newest.violations} == {"registries", "vulnerabilities"}
    assert newest.source is Source.BACKGROUND and newest.verdict.value == "deny"
    assert [d.verdict.value for d in mine[:2]] == ["allow", "deny"]
    assert 3 <= len(mine) <= 4
    assert all(d.policy_revision == newest.policy_revision for d in mine[2:])
    assert newest.policy_revision != mine[1].policy_revision


def test_least_privilege_account_cannot_read_secrets(
    background: Background,
) -> None:
    from gatekeeper.kube.client import KubeApiError

    _, _, _, _, client, _ = background
    with pytest.raises(KubeApiError) as refused:
        client.get("/api/v1/namespaces/kube-system/secrets")
    assert refused.value.status == 403


def test_serve_with_background_enabled_answers_v1_compliance(
    control_plane: ControlPlane, make_settings: MakeSettings, tmp_path: Path,  # noqa: F811
) -> None:
    """The composition root: settings -> loop started with the app -> GET /v1/compliance."""
    from gatekeeper.app import create_app

    server, token_file, ca_file = _service_account(control_plane, tmp_path)
    namespace = control_plane.namespace("gk-bg", labels=AUDIT_ONLY)
    image = "127.0.0.1:9/shop/api@sha256:" + "b" * 64  # nothing listens on port 9
    control_plane.apply(_deployment("api", namespace, image))
    settings = make_settings(
        background_enabled=True, background_kube_server=server,
        background_kube_token_file=token_file, background_kube_ca_file=ca_file,
        background_interval_seconds=1, admission_environment="development",
        ecr_scan_enabled=False)
    with TestClient(create_app(settings)) as client:
        def listed() -> list[dict[str, Any]]:
            body = client.get("/v1/compliance").json()
            return [w for w in body.get("workloads", []) if w["namespace"] == namespace]
        [found] = control_plane.wait_for("the Deployment in /v1/compliance", listed)
        assert (found["kind"], found["name"]) == ("Deployment", "api")
        body = client.get("/v1/compliance").json()
        assert body["status"] == "ready" and body["last_failure"] is None
        expected = "pass" if found["verdict"] == "allow" else "fail"
        report = control_plane.wait_for("its PolicyReport", lambda: _report(
            control_plane, namespace))
        assert [r["result"] for r in report["results"]][:1] == [expected], (found, report)
