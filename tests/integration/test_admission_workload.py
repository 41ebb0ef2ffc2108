"""The workload in the admission input (issue 13.1, 13.2): the real OPA with the shipped
policies, the real admission handler, AdmissionReviews as the API server sends them."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from gatekeeper.domain.workload import MAX_REVIEW_OBJECT_BYTES
from gatekeeper.policy import EmbeddedOpa
from gatekeeper.service import EvaluationService
from gatekeeper.webhook.handler import AdmissionHandler
from gatekeeper.webhook.review import AdmissionResponse, parse_admission_review
from gatekeeper.webhook.scope import AdmissionSettings
from tests.unit.webhook.fakes import MemoryAuditLog

pytestmark = pytest.mark.integration
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "admission"
IMAGE = "registry.example.com/acme/api@sha256:" + "ab" * 32
LIMITS = {"requests": {"cpu": "100m", "memory": "64Mi"},
          "limits": {"cpu": "500m", "memory": "128Mi"}}
SECURE = {"readOnlyRootFilesystem": True, "runAsNonRoot": True}


@pytest.fixture
def production(opa_binary: str, policy_dir: Path) -> Iterator[tuple[AdmissionHandler, Any]]:
    opa = EmbeddedOpa(opa_binary=opa_binary, policy_dir=policy_dir)
    opa.start()
    audit = MemoryAuditLog()
    service = EvaluationService(policy_engine=opa.engine, audit_log=audit)
    try:
        yield AdmissionHandler(service, AdmissionSettings(environment="production")), audit
    finally:
        opa.stop()


def answer(handler: AdmissionHandler, document: dict[str, Any],
           webhook: Literal["validate", "mutate"] = "validate") -> AdmissionResponse:
    review = parse_admission_review(json.dumps(document).encode())
    return asyncio.run(handler.handle(review, webhook=webhook))


def deployment(operation: str = "CREATE", *, resources: dict[str, Any] | None = None,
               replicas: int = 2, old: dict[str, Any] | None = None) -> dict[str, Any]:
    containers = [{"name": "api", "image": IMAGE, "resources": resources or {},
                   "securityContext": SECURE}]
    obj = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "api", "namespace": "shop"},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "api"}},
                    "template": {"metadata": {"labels": {"app": "api"}},
                                 "spec": {"containers": containers}}}}
    request = {"uid": f"uid-{operation}-{replicas}", "operation": operation,
               "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
               "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
               "name": "api", "namespace": "shop", "object": obj, "dryRun": False,
               "userInfo": {"username": "alice", "uid": "u-1", "groups": ["dev"]}}
    if old is not None:
        request["oldObject"] = old["request"]["object"]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def test_real_deployment_without_limits_is_denied_in_production_naming_the_fields(production: tuple[AdmissionHandler, Any]) -> None:
    handler, audit = production
    document = json.loads((ASSETS / "deployment-create.json").read_text())
    response = answer(handler, document)
    assert (response.allowed, response.code) == (False, 403)
    lines = response.message.rsplit(" (decision ", 1)[0].split("; ")
    assert ('spec.template.spec.containers[1].resources.limits.memory: container "api" sets '
            'no memory limit (required in environment "production")') in lines
    assert ('spec.template.spec.initContainers[0].resources.requests.cpu: container "migrate" '
            'sets no cpu request (required in environment "production")') in lines
    [decision] = audit.records
    review = decision.policy_input["review"]
    request = document["request"]
    assert review == {
        "kind": request["kind"], "operation": "CREATE", "namespace": request["namespace"],
        "name": request["name"], "dryRun": False, "object": request["object"],
        "oldObject": None, "userInfo": {"username": request["userInfo"]["username"],
                                        "uid": "", "groups": request["userInfo"]["groups"]},
    }
    assert decision.policy_input["schema_version"] == "4"


def test_compliant_deployment_has_no_workload_finding(production: tuple[AdmissionHandler, Any]) -> None:
    handler, audit = production
    response = answer(handler, deployment(resources=LIMITS))
    # production also wants signatures (no collector here): only image findings remain
    assert {v.policy for v in audit.records[-1].violations} <= {"sbom", "signatures"}
    assert not response.allowed
    assert all(v.image == IMAGE for v in audit.records[-1].violations), response.message


def test_update_that_drops_a_limit_is_evaluated_though_no_image_changed(production: tuple[AdmissionHandler, Any]) -> None:
    handler, audit = production
    before = deployment(resources=LIMITS)
    scaled = deployment("UPDATE", resources=LIMITS, replicas=5, old=before)
    assert answer(handler, scaled).allowed  # scaling: the pod spec is unchanged
    assert audit.records[-1].policy_input is None  # recorded without evaluation

    dropped = copy.deepcopy(LIMITS)
    del dropped["limits"]["memory"]
    response = answer(handler, deployment("UPDATE", resources=dropped, replicas=3, old=before))
    assert (response.allowed, response.code) == (False, 403)
    assert response.message.startswith(
        'spec.template.spec.containers[0].resources.limits.memory: container "api" sets no '
        'memory limit (required in environment "production") (decision ')
    assert audit.records[-1].policy_input["images"] == []  # type: ignore[index]  # None fails the test


def test_oversized_object_is_refused_naming_the_field(production: tuple[AdmissionHandler, Any]) -> None:
    handler, audit = production
    document = deployment(resources=LIMITS)
    document["request"]["object"]["metadata"]["annotations"] = {
        "big": "x" * MAX_REVIEW_OBJECT_BYTES}
    response = answer(handler, document)
    assert (response.allowed, response.code) == (False, 400)
    size = len(json.dumps(document["request"]["object"], separators=(",", ":")))
    assert response.message == (
        f"invalid object: request.object is {size} bytes, more than the policy input limit "
        f"of {MAX_REVIEW_OBJECT_BYTES} bytes")
    assert audit.records == []
