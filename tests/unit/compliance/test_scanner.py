"""The background scanner over fakes of its ports (the API server side is tested for real in
tests/integration/test_kube_background.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gatekeeper.compliance import ComplianceLoop, ComplianceScanner
from gatekeeper.domain import Source, Verdict, Violation
from gatekeeper.domain.ports.compliance import ReportSink, WorkloadResult, WorkloadSource
from gatekeeper.kube.reports import build_policy_report
from gatekeeper.kube.workloads import Workload
from gatekeeper.service import EvaluationService
from gatekeeper.webhook.scope import AdmissionSettings
from tests.fakes import FakeAuditLog, FakePolicyEngine

DIGEST = "sha256:" + "a" * 64
IMAGE = f"registry.example.com/shop/app@{DIGEST}"


def deployment(name: str, namespace: str = "shop", image: str = IMAGE) -> Workload:
    obj = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                        "resourceVersion": "7"},
           "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
    return Workload("Deployment", namespace, name, f"uid-{name}", obj)


class Workloads(WorkloadSource):
    def __init__(self, *items: Workload) -> None:
        self.items = list(items)

    def list_workloads(self) -> list[Workload]:
        return list(self.items)


class Reports(ReportSink):
    def __init__(self) -> None:
        self.written: list[tuple[str, dict[str, Any]]] = []

    def write(self, namespace: str, results: Sequence[WorkloadResult], revision: str | None,
              now: datetime) -> str:
        self.written.append((namespace, build_policy_report(namespace, results, revision)))
        return "updated"


def scanner_for(engine: FakePolicyEngine, audit: FakeAuditLog, workloads: Workloads,
                reports: Reports | None = None) -> ComplianceScanner:
    service = EvaluationService(policy_engine=engine, audit_log=audit)
    return ComplianceScanner(service, AdmissionSettings(environment="production"), workloads,
                             reports)


def test_unchanged_results_are_recorded_once_and_a_change_again() -> None:
    engine, audit, reports = FakePolicyEngine(), FakeAuditLog(), Reports()
    scanner = scanner_for(engine, audit, Workloads(deployment("web")), reports)
    for _ in range(3):
        scanner.scan("schedule")
    assert [(d.source, d.verdict) for d in audit.records] == [(Source.BACKGROUND, Verdict.ALLOW)]
    assert audit.records[0].caller == "system:gatekeeper:background"
    assert audit.records[0].context["background"] == {
        "kind": "Deployment", "namespace": "shop", "name": "web", "uid": "uid-web",
        "resource_version": "7"}
    namespace, report = reports.written[-1]
    assert namespace == "shop"
    assert report["summary"] == {"pass": 1, "fail": 0, "warn": 0, "error": 0, "skip": 0}

    engine.violations = (Violation("vulnerabilities", "CVE-1 is not allowed", IMAGE),)
    scanner.scan("schedule")
    scanner.scan("schedule")
    assert [d.verdict for d in audit.records] == [Verdict.ALLOW, Verdict.DENY]
    _, report = reports.written[-1]
    assert [(r["result"], r["policy"], r["rule"], r["message"]) for r in report["results"]] == [
        ("fail", "vulnerabilities", IMAGE, "CVE-1 is not allowed")]
    assert report["results"][0]["resources"] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop", "name": "web",
         "uid": "uid-web"}]
    snapshot = scanner.snapshot
    assert snapshot is not None
    assert snapshot.as_dict()["summary"] == {"workloads": 1, "denied": 1, "warned": 0,
                                             "allowed": 0, "decisions_recorded": 0}


def test_excluded_namespaces_are_not_evaluated_and_an_emptied_namespace_gets_an_empty_report(
) -> None:
    engine, audit, reports = FakePolicyEngine(), FakeAuditLog(), Reports()
    workloads = Workloads(deployment("web"), deployment("dns", namespace="kube-system"))
    scanner = scanner_for(engine, audit, workloads, reports)
    scanner.scan("start")
    assert [r.workload.name for r in scanner.snapshot.results] == ["web"]  # type: ignore[union-attr]
    workloads.items = []
    scanner.scan("schedule")
    namespace, report = reports.written[-1]
    assert namespace == "shop" and report["results"] == []
    assert report["summary"]["pass"] == 0


def test_an_unreadable_image_is_a_failing_result_not_a_crash() -> None:
    engine, audit, reports = FakePolicyEngine(), FakeAuditLog(), Reports()
    scanner = scanner_for(engine, audit, Workloads(deployment("bad", image="UPPER/Case:x y")),
                          reports)
    snapshot = scanner.scan("start")
    [result] = snapshot.results
    assert result.verdict is Verdict.DENY
    [violation] = result.violations
    assert violation.policy == "gatekeeper.input"
    assert violation.message.startswith(
        "spec.template.spec.containers[0].image (UPPER/Case:x y): ")
    assert [d.verdict for d in audit.records] == [Verdict.DENY]
    assert reports.written[-1][1]["summary"]["fail"] == 1


class CountingScanner:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.scanned = threading.Event()

    def scan(self, trigger: str) -> None:
        self.reasons.append(trigger)
        self.scanned.set()


def test_the_loop_scans_at_start_and_when_the_revision_changes() -> None:
    scanner = CountingScanner()
    revision = ["sha256:one"]
    loop = ComplianceLoop(scanner, interval=3600, tick=0.02,  # type: ignore[arg-type]
                          revision=lambda: revision[0])
    loop.start()
    try:
        assert scanner.scanned.wait(5)
        time.sleep(0.1)
        assert scanner.reasons == ["start"]
        revision[0] = "sha256:two"
        deadline = time.monotonic() + 5
        while len(scanner.reasons) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert scanner.reasons == ["start", "policy revision activated"]
    finally:
        loop.stop()


class Unreachable(WorkloadSource):
    def list_workloads(self) -> list[Workload]:
        from gatekeeper.errors import UpstreamUnavailableError

        raise UpstreamUnavailableError("API server https://127.0.0.1:6443 unreachable")


def test_a_failed_listing_is_reported_and_keeps_the_last_snapshot() -> None:
    import pytest
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from gatekeeper.api.auth import Authenticator, install_auth
    from gatekeeper.compliance.routes import build_compliance_router
    from gatekeeper.errors import UpstreamUnavailableError

    engine, audit = FakePolicyEngine(), FakeAuditLog()
    workloads = Workloads(deployment("web"))
    scanner = scanner_for(engine, audit, workloads)
    scanner.scan("start")
    scanner._workloads = Unreachable()  # noqa: SLF001 - the API server goes away
    with pytest.raises(UpstreamUnavailableError):
        scanner.scan("schedule")
    app = FastAPI()
    install_auth(app, Authenticator.from_settings(insecure_disable_auth=True))
    app.state.compliance = scanner
    app.include_router(build_compliance_router())
    body = TestClient(app).get("/v1/compliance").json()
    assert body["status"] == "ready" and body["trigger"] == "start"
    assert body["last_failure"].endswith(": API server https://127.0.0.1:6443 unreachable")
    app.state.compliance = None
    assert TestClient(app).get("/v1/compliance").json() == {
        "status": "disabled",
        "message": "background compliance is off (setting background_enabled)"}
