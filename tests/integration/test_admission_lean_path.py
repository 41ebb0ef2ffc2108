"""The API server's ``POST /admission/...`` through the production app (``create_app``) takes
the lean ASGI path (gatekeeper/webhook/asgi.py), not FastAPI's routing and middlewares, and
answers what the framework path answered: the same statuses, documents, limits and metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from tests.helpers.app import container_of
from tests.helpers.types import MakeSettings
from tests.integration.test_admission_signatures import deployment_review

DIGEST = "sha256:" + "9a" * 32
IMAGE = f"registry.example.com/pay/api@{DIGEST}"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def small(make_settings: MakeSettings) -> Iterator[TestClient]:
    """The app with a 4 KiB AdmissionReview limit."""
    with TestClient(create_app(make_settings(admission_max_review_bytes=4096))) as client:
        yield client


def _sample(client: TestClient, name: str, labels: dict[str, str]) -> float:
    value = container_of(client).metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_admissions_do_not_go_through_the_framework_stack(client: TestClient) -> None:
    """With FastAPI's stack (middlewares, router) replaced by one that refuses everything, the
    API server's requests are still answered; the rest of the app is not."""
    refused: list[str] = []

    async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
        refused.append(scope["path"])
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    client.app.middleware_stack = refuse  # type: ignore[attr-defined]
    for path in ("/admission/validate", "/admission/mutate", "/admission/validate/warn",
                 "/admission/mutate/enforce"):
        answer = client.post(path, json=deployment_review(f"uid-lean-{path}", [IMAGE]))
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["kind"] == "AdmissionReview"
        assert answer.json()["response"]["uid"] == f"uid-lean-{path}"
        assert "decision-id" in answer.json()["response"]["auditAnnotations"]
    # what the lean path does not serve goes to the application
    assert client.get("/healthz").status_code == 599
    assert client.get("/admission/validate").status_code == 599
    assert client.post("/admission/validate/off", json={}).status_code == 599
    assert refused == ["/healthz", "/admission/validate", "/admission/validate/off"]


def test_the_framework_still_answers_what_the_lean_path_leaves(client: TestClient) -> None:
    assert client.get("/admission/validate").status_code == 405
    unknown = client.post("/admission/mutate/off", json={}, headers=JSON)
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {
        "kind": "invalid_input", "field": "path",
        "message": "unknown enforcement mode 'off' in path (expected enforce, warn or audit)"}}


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"uid: 1", "application/yaml",
         "expected Content-Type application/json, got 'application/yaml'"),
        (b"{not json", "application/json", "AdmissionReview is not valid JSON: body: "),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}',
         "application/json; charset=utf-8", "AdmissionReview has no request"),
    ],
    ids=["content-type", "not-json", "no-request"],
)
def test_bad_reviews_are_400_and_counted(
    client: TestClient, body: bytes, content_type: str, message: str
) -> None:
    labels = {"webhook": "validate", "status": "400"}
    before = _sample(client, "forge_gatekeeper_admission_rejected_requests_total", labels)
    answer = client.post("/admission/validate", content=body,
                         headers={"Content-Type": content_type})
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"]["kind"] == "invalid_input"
    assert answer.json()["error"]["message"].startswith(message)
    assert _sample(client, "forge_gatekeeper_admission_rejected_requests_total",
                   labels) == before + 1


def test_a_review_over_the_limit_is_413_declared_or_streamed(small: TestClient) -> None:
    big = json.dumps(deployment_review("uid-big", [IMAGE] * 200)).encode()
    assert len(big) > 4096
    counted = "forge_gatekeeper_admission_rejected_requests_total"
    declared = small.post("/admission/validate", content=big, headers=JSON)
    assert declared.status_code == 413
    assert declared.json() == {
        "error": "payload_too_large", "message": "request body is larger than 4096 bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: only the bytes read tell
        for start in range(0, len(big), 1000):
            yield big[start:start + 1000]

    streamed = small.post("/admission/mutate", content=chunks(), headers=JSON)
    assert streamed.status_code == 413
    assert streamed.json()["message"] == "request body is larger than 4096 bytes"
    for webhook in ("validate", "mutate"):
        assert _sample(small, counted, {"webhook": webhook, "status": "413"}) == 1


def test_a_control_character_in_the_query_is_400(client: TestClient) -> None:
    answer = client.post("/admission/validate?timeout=10s%00",
                         json=deployment_review("uid-nul", [IMAGE]))
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_input", "field": "query",
        "message": "the request query contains the control character U+0000"}


def test_request_latency_is_observed_per_route_template(client: TestClient) -> None:
    name = "forge_gatekeeper_http_request_duration_seconds_count"
    ok = {"method": "POST", "route": "/admission/validate/{mode}", "status": "200"}
    bad = {"method": "POST", "route": "/admission/mutate", "status": "400"}
    assert client.post("/admission/validate/audit",
                       json=deployment_review("uid-metric", [IMAGE])).status_code == 200
    assert client.post("/admission/mutate", content=b"{", headers=JSON).status_code == 400
    assert _sample(client, name, ok) == 1
    assert _sample(client, name, bad) == 1
