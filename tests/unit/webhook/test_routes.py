"""The HTTP contract of /admission/validate and /admission/mutate (in-process ASGI)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gatekeeper.webhook.handler import AdmissionHandler
from gatekeeper.webhook.routes import build_admission_router
from gatekeeper.webhook.scope import AdmissionSettings
from tests.unit.webhook.fakes import MemoryAuditLog, build_service, digest_of

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "admission"
API = "ghcr.io/acme/api:1.4"


class AuditedClient(TestClient):
    """The routes' client, with the audit log the handler records to."""

    audit: MemoryAuditLog


@pytest.fixture
def client() -> Iterator[AuditedClient]:
    service, audit = build_service(deny={API: "unsigned"})
    handler = AdmissionHandler(service, AdmissionSettings(max_review_bytes=64 * 1024))
    app = FastAPI()
    app.include_router(build_admission_router(handler))
    with AuditedClient(app) as test_client:
        test_client.audit = audit
        yield test_client
    handler.close()


def post(
    client: TestClient, path: str, body: bytes, content_type: str = "application/json"
) -> httpx.Response:
    response: httpx.Response = client.post(path, content=body, headers={"Content-Type": content_type})
    return response


def asset(name: str) -> bytes:
    return (ASSETS / f"{name}.json").read_bytes()


def test_validate_answers_a_review(client: TestClient) -> None:
    response = post(client, "/admission/validate", asset("job-create"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == "00000000-0000-4000-8000-000000000006"
    assert body["response"]["allowed"] is False
    assert body["response"]["status"]["code"] == 403
    assert body["response"]["status"]["message"].startswith(
        f"spec.template.spec.containers[0].image ({API}): unsigned (decision ")


def test_mutate_returns_a_base64_json_patch(client: TestClient) -> None:
    body = post(client, "/admission/mutate", asset("daemonset-create")).json()["response"]
    assert body["allowed"] is True and body["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(body["patch"])) == [{
        "op": "replace", "path": "/spec/template/spec/containers/0/image",
        "value": "ghcr.io/acme/web:2.0@" + digest_of("ghcr.io/acme/web:2.0"),
    }]


def test_mode_from_path_is_applied(client: TestClient) -> None:
    body = post(client, "/admission/validate/warn", asset("job-create")).json()["response"]
    assert body["allowed"] is True
    assert body["warnings"] == [
        f"not enforced (warn mode): spec.template.spec.containers[0].image ({API}): unsigned"]
    assert body["auditAnnotations"]["mode"] == "warn"


def test_unknown_mode_in_path_is_404(client: TestClient) -> None:
    response = post(client, "/admission/mutate/off", asset("job-create"))
    assert response.status_code == 404
    assert response.json() == {"error": {
        "kind": "invalid_input", "field": "path",
        "message": "unknown enforcement mode 'off' in path (expected enforce, warn or audit)"}}


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"uid: 1", "application/yaml",
         "expected Content-Type application/json, got 'application/yaml'"),
        (b"{not json", "application/json", "AdmissionReview is not valid JSON: body: "),
        (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}',
         "application/json", "expected apiVersion admission.k8s.io/v1 kind AdmissionReview"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}',
         "application/json; charset=utf-8", "AdmissionReview has no request"),
    ],
    ids=["not-json-content-type", "not-json", "v1beta1", "no-request"],
)
def test_bad_reviews_are_400_with_a_clear_message(
    client: AuditedClient, body: bytes, content_type: str, message: str
) -> None:
    response = post(client, "/admission/validate", body, content_type)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)
    assert client.audit.records == []


def test_oversized_review_is_413(client: TestClient) -> None:
    response = post(client, "/admission/validate", b"{" + b" " * (70 * 1024) + b"}")
    assert response.status_code == 413
    assert response.json()["error"]["message"] == (
        f"AdmissionReview is {70 * 1024 + 2} bytes, more than the limit of 65536")


def test_get_is_not_allowed(client: TestClient) -> None:
    assert client.get("/admission/validate").status_code == 405
