"""The REST API end to end: real embedded OPA child, real SQLite audit store."""

import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from tests.helpers.app import container_of
from tests.helpers.types import MakeSettings

DIGEST = "sha256:" + "cd" * 32
TICKET = {"intent_id": "INT-1", "plan_id": "PLAN-1", "ticket_id": "CHG-1", "deploy_id": "DEP-1"}


def evaluate(client: TestClient, **body: object) -> httpx.Response:
    response: httpx.Response = client.post("/v1/evaluations", json=body)
    return response


def test_allow_is_answered_and_recorded(client: TestClient) -> None:
    response = evaluate(
        client,
        images=[f"registry.example.com/payments/api:1.4@{DIGEST}"],
        environment="development",
        namespace="payments",
        ticket=TICKET,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["verdict"] == "allow" and body["allowed"] is True
    assert body["violations"] == [] and body["warnings"] == []
    [image] = body["images"]
    assert image["reference"] == f"registry.example.com/payments/api:1.4@{DIGEST}"
    assert image["digest"] == DIGEST
    assert image["evidence"]["sbom"]["state"] == "missing"
    assert image["evidence"]["scan"]["state"] == "not_applicable"
    assert body["policy_revision"].startswith("sha256:")
    assert body["source"] == "pipeline"
    assert body["ticket"] == TICKET
    stored = client.get(f"/v1/decisions/{body['decision_id']}")
    assert stored.status_code == 200
    assert stored.json() == body


def test_deny_names_policy_image_and_reason(client: TestClient) -> None:
    # Both images are denied by network-free rules (registry allow-list; digest required and
    # tags not resolved here): their SBOM and scan evidence is not gathered ("skipped"), so no
    # SBOM finding is listed, and the decisive reasons lead each image's violations.
    response = evaluate(
        client, images=["registry.example.com.evil.io/payments/api:1.4", "nginx"], environment="production"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["verdict"] == "deny" and body["allowed"] is False
    assert body["violations"] == [
        {"policy": "digests", "image": "nginx", "message": 'image has no verified digest; environment "production" requires one'},
        {"policy": "registries", "image": "nginx", "message": 'registry "docker.io" is not allowed in environment "production"'},
        {"policy": "signatures", "image": "nginx", "message": "no signature evidence was collected; production requires signatures"},
        {"policy": "digests", "image": "registry.example.com.evil.io/payments/api:1.4", "message": 'image has no verified digest; environment "production" requires one'},
        {"policy": "registries", "image": "registry.example.com.evil.io/payments/api:1.4", "message": 'registry "registry.example.com.evil.io" is not allowed in environment "production"'},
        {"policy": "signatures", "image": "registry.example.com.evil.io/payments/api:1.4", "message": "no signature evidence was collected; production requires signatures"},
    ]
    assert body["warnings"] == [
        {"policy": "digests", "image": "nginx", "message": 'tag "latest" is mutable; deploy a version tag or a digest'}
    ]


def test_default_environment_is_production(client: TestClient) -> None:
    body = evaluate(client, images=["nginx:1.27"]).json()
    assert body["environment"] == "production"
    assert body["verdict"] == "deny"


def test_unknown_environment_denied(client: TestClient) -> None:
    body = evaluate(client, images=["nginx:1.27"], environment="prod").json()
    assert body["verdict"] == "deny"
    # The request-wide violation comes first; the other packages treat an unknown
    # environment with production's defaults, the strictest.
    assert body["violations"][0] == {
        "policy": "environments", "image": None,
        "message": 'unknown environment "prod" (known: development, production, staging)',
    }
    assert {v["policy"] for v in body["violations"][1:]} == {"sbom", "signatures"}


def test_warn_only_is_allowed(client: TestClient) -> None:
    body = evaluate(client, images=["nginx"], environment="development").json()
    assert body["verdict"] == "warn" and body["allowed"] is True


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"images": ["nginx", "NGINX"]}, "images[1]", "images[1]: invalid image reference 'NGINX': repository name must be lowercase"),
        ({"images": []}, "images", "images: List should have at least 1 item after validation, not 0"),
        ({"images": ["nginx", 5]}, "images[1]", "images[1]: Input should be a valid string"),
        ({}, "images", "images: required (at least one image, or send manifests)"),
        ({"images": ["nginx"], "colour": "red"}, "colour", "colour: Extra inputs are not permitted"),
        ({"images": ["nginx"], "ticket": {"ticket_id": 7}}, "ticket.ticket_id", "ticket.ticket_id: Input should be a valid string"),
    ],
)
def test_malformed_body_is_422_naming_the_field(
    client: TestClient, body: dict[str, object], field: str, message: str
) -> None:
    response = client.post("/v1/evaluations", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert response.json()["message"] == message


def test_not_json_is_422(client: TestClient) -> None:
    response = client.post("/v1/evaluations", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"


def test_body_over_one_mebibyte_is_413(client: TestClient) -> None:
    big = json.dumps({"images": ["nginx"], "namespace": "x" * (1 << 20)})
    response = client.post("/v1/evaluations", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"error": "payload_too_large", "message": "request body is larger than 1048576 bytes"}


def test_streamed_body_over_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"images": ["nginx"], "namespace": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    response = client.post("/v1/evaluations", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_unknown_decision_is_404(client: TestClient) -> None:
    response = client.get("/v1/decisions/does-not-exist")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": "decision does-not-exist not found"}


def test_query_by_ticket_digest_and_verdict_with_cursor(client: TestClient) -> None:
    ids = []
    for index in range(5):
        ticket = dict(TICKET, deploy_id=f"DEP-{index}")
        ids.append(evaluate(client, images=[f"registry.example.com/a@{DIGEST}"], environment="development", ticket=ticket).json()["decision_id"])
    evaluate(client, images=["nginx"], environment="production", ticket={"ticket_id": "OTHER"})

    first = client.get("/v1/decisions", params={"ticket_id": "CHG-1", "limit": 2}).json()
    assert [d["decision_id"] for d in first["items"]] == ids[::-1][:2]
    second = client.get("/v1/decisions", params={"ticket_id": "CHG-1", "limit": 2, "cursor": first["next_cursor"]}).json()
    third = client.get("/v1/decisions", params={"ticket_id": "CHG-1", "limit": 2, "cursor": second["next_cursor"]}).json()
    assert [d["decision_id"] for d in second["items"] + third["items"]] == ids[::-1][2:]
    assert third["next_cursor"] is None

    by_digest = client.get("/v1/decisions", params={"image_digest": DIGEST}).json()
    assert len(by_digest["items"]) == 5
    denied = client.get("/v1/decisions", params={"verdict": "deny"}).json()
    assert [d["ticket"]["ticket_id"] for d in denied["items"]] == ["OTHER"]
    by_deploy = client.get("/v1/decisions", params={"deploy_id": "DEP-3"}).json()
    assert [d["decision_id"] for d in by_deploy["items"]] == [ids[3]]


def test_query_rejects_bad_cursor_and_digest(client: TestClient) -> None:
    bad_cursor = client.get("/v1/decisions", params={"cursor": "!!"})
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["field"] == "cursor"
    bad_digest = client.get("/v1/decisions", params={"image_digest": "sha256:xyz"})
    assert bad_digest.status_code == 422
    assert bad_digest.json()["message"] == "image_digest: invalid digest 'sha256:xyz': sha256 needs 64 lowercase hex characters"


def test_health_ready_docs_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert "/v1/evaluations" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    evaluate(client, images=["nginx"], environment="development")
    from prometheus_client import generate_latest

    text = generate_latest(container_of(client).metrics.registry).decode()
    assert 'gatekeeper_decisions_total{source="pipeline",verdict="warn"} 1.0' in text
    assert 'gatekeeper_opa_evaluations_total{outcome="ok"} 1.0' in text
    assert 'route="/v1/evaluations"' in text
    assert 'gatekeeper_audit_writes_total{outcome="ok"} 1.0' in text


def test_readyz_names_the_broken_component(make_settings: MakeSettings) -> None:
    app = create_app(make_settings(opa_url="http://127.0.0.1:9"))
    with TestClient(app) as client:
        response = client.get("/readyz")
        decision = client.post("/v1/evaluations", json={"images": ["nginx"]}).json()
    assert response.status_code == 503
    assert response.json()["message"] == "not ready: policy_engine"
    assert response.json()["failures"]["policy_engine"].startswith("OPA at http://127.0.0.1:9 unreachable")
    # OPA unreachable is a recorded deny with the reason, never an allow.
    assert decision["verdict"] == "deny"
    assert decision["error"].startswith("policy engine unavailable: OPA at http://127.0.0.1:9")
    assert decision["violations"][0]["policy"] == "gatekeeper.engine"


def cyclonedx(components: list[dict[str, str]]) -> dict[str, object]:
    return {
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "components": components,
    }


def test_inline_sbom_is_stored_bound_and_handed_to_policy(client: TestClient) -> None:
    image = f"registry.example.com/payments/api:1.4@{DIGEST}"
    component = {"type": "library", "name": "left-pad", "version": "1.3.0", "purl": "pkg:npm/left-pad@1.3.0"}
    body = evaluate(
        client, images=[image], environment="development", ticket=TICKET,
        sboms=[{"image": 0, "document": cyclonedx([component])}],
    ).json()
    sbom = body["images"][0]["evidence"]["sbom"]
    assert sbom["state"] == "bound"
    [document] = sbom["documents"]
    assert (document["state"], document["bound"], document["component_count"]) == ("bound", True, 1)
    assert document["components"][0]["purl"] == "pkg:npm/left-pad@1.3.0"
    assert document["sha256"] and document["binding"]["method"] == "upload"
    # kept as the caller's inline document (insecure local mode: the anonymous admin)
    assert (document["source"], document["supplied_by"]) == ("inline", "anonymous (auth disabled)")


def test_inline_sbom_for_a_tag_is_422(client: TestClient) -> None:
    response = evaluate(client, images=["nginx:1.27"], sboms=[{"image": 0, "document": cyclonedx([])}])
    assert response.status_code == 422
    assert response.json()["field"] == "sboms[0].image"
    assert response.json()["message"].startswith("sboms[0].image: an inline SBOM needs a digest-pinned image")


def test_invalid_inline_sbom_names_the_json_path(client: TestClient) -> None:
    image = f"registry.example.com/payments/api:1.4@{DIGEST}"
    bad = cyclonedx([{"type": "spaceship", "name": "x"}])
    response = evaluate(client, images=[image], sboms=[{"image": 0, "document": bad}])
    assert response.status_code == 422
    assert response.json()["field"] == "sboms[0].document.components[0].type"
