"""``/openapi.json`` describes the real API: every operation declares its answer and its body,
and real answers of the running application (real opa, SQLite) match the declared models.

The response models forbid unknown fields, so a field added to an answer but not to its model
(or a required field that went missing) fails here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from gatekeeper.api.models import DecisionDocument, DecisionList, ErrorBody
from gatekeeper.api.models_policy import (
    ActivationDocument,
    ExceptionDocument,
    ExceptionExport,
    ExceptionList,
    PoliciesOverview,
    PolicyEventList,
    PolicyRefusedBody,
    ReplayDocument,
    RevisionDocument,
)
from gatekeeper.api.models_records import (
    AuditVerification,
    ComplianceDocument,
    HealthDocument,
    ReadinessDocument,
    SbomMetadata,
    SbomUploadDocument,
    VexUploadDocument,
)
from gatekeeper.config import Settings
from gatekeeper.webhook.models import AdmissionReviewAnswer
from tests.integration.test_admission_signatures import deployment_review
from tests.integration.test_policy_lifecycle_api import (
    ADMIN,
    APPROVER,
    AUDITOR,
    DIGEST,
    HUB_IMAGE,
    PIPELINE,
    T0,
    LifecycleApp,
    as_json_body,
    exception_body,
    lifecycle_app,
    shipped,
    token,
    with_teams_policy,
    without_ghcr_in_staging,
)

#: POST operations that read only their path and query (no body to declare).
NO_BODY = {
    ("post", "/v1/policies/revisions/{revision_id}/replay"),
    ("post", "/v1/exceptions/{exception_id}/approve"),  # the approver is the caller
}
#: Operations whose body is a raw document: the media types they must declare.
RAW_DOCUMENTS = {
    ("post", "/v1/sboms"): {"application/vnd.cyclonedx+json", "application/spdx+json"},
    ("post", "/v1/vex"): {"application/vnd.openvex+json", "application/vnd.cyclonedx+json"},
    ("post", "/v1/policies/revisions"): {"application/gzip"},
}
EVERYONE = token("root", "admin")


@pytest.fixture
def gate(
    tmp_path: Path, make_settings: Callable[..., Settings], opa_binary: str
) -> Iterator[LifecycleApp]:
    with lifecycle_app(tmp_path, make_settings, opa_binary) as app:
        yield app


def declared(spec: dict[str, Any], method: str, path: str, status: int) -> str:
    """The component name of the JSON schema ``/openapi.json`` declares for that answer."""
    response = spec["paths"][path][method]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    return str(schema["$ref"].rsplit("/", 1)[1])


def check(
    spec: dict[str, Any], method: str, path: str, answer: httpx.Response, model: type[BaseModel]
) -> dict[str, Any]:
    """``answer`` is what the spec declares for its status, and validates against ``model``."""
    assert declared(spec, method, path, answer.status_code) == model.__name__, (method, path)
    model.model_validate(answer.json())
    body: dict[str, Any] = answer.json()
    return body


def test_every_operation_declares_its_answer_and_its_body(gate: LifecycleApp) -> None:
    spec = gate.client.get("/openapi.json").json()
    operations = [
        (method, path, operation)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]
    assert len(operations) >= 30
    for method, path, operation in operations:
        answers = {
            status: response for status, response in operation["responses"].items()
            if status.startswith("2")
        }
        schemas = [
            media.get("schema") for response in answers.values()
            for media in response.get("content", {}).values()
        ]
        assert schemas and all(schemas), f"{method.upper()} {path}: no 2xx schema"
        if method == "post" and (method, path) not in NO_BODY:
            body = operation.get("requestBody")
            assert body and body["content"], f"{method.upper()} {path}: no request schema"
            assert all(media.get("schema") for media in body["content"].values()), path
        raw = RAW_DOCUMENTS.get((method, path))
        if raw:
            assert raw <= set(operation["requestBody"]["content"]), path
    # Every $ref points into components (request models' nested definitions are hoisted).
    text = json.dumps(spec)
    for name in {ref.split('"')[0] for ref in text.split('"#/components/schemas/')[1:]}:
        assert name in spec["components"]["schemas"], name
    assert "$defs" not in text


def test_real_answers_match_the_declared_models(gate: LifecycleApp) -> None:
    client = gate.client
    spec = client.get("/openapi.json").json()

    check(spec, "get", "/healthz", client.get("/healthz"), HealthDocument)
    check(spec, "get", "/readyz", client.get("/readyz"), ReadinessDocument)
    compliance = check(spec, "get", "/v1/compliance",
                       client.get("/v1/compliance", headers=AUDITOR), ComplianceDocument)
    assert compliance["status"] == "disabled"
    check(spec, "get", "/v1/policies", client.get("/v1/policies", headers=AUDITOR),
          PoliciesOverview)

    refused = client.post("/v1/policies/revisions",
                          json=as_json_body(with_teams_policy(shipped())), headers=ADMIN)
    assert refused.status_code == 422
    check(spec, "post", "/v1/policies/revisions", refused, PolicyRefusedBody)
    created = client.post("/v1/policies/revisions", json=as_json_body(
        without_ghcr_in_staging(shipped()), "no ghcr"), headers=ADMIN)
    assert created.status_code == 201, created.text
    revision = check(spec, "post", "/v1/policies/revisions", created, RevisionDocument)
    revision_id = revision["revision_id"]
    check(spec, "get", "/v1/policies/revisions/{revision_id}",
          client.get(f"/v1/policies/revisions/{revision_id}", headers=AUDITOR), RevisionDocument)

    decision = gate.evaluate([HUB_IMAGE], "production", ticket_id="CHG-1")
    DecisionDocument.model_validate(decision)
    check(spec, "get", "/v1/decisions", client.get("/v1/decisions", headers=EVERYONE),
          DecisionList)
    check(spec, "get", "/v1/decisions/{decision_id}",
          client.get(f"/v1/decisions/{decision['decision_id']}", headers=EVERYONE),
          DecisionDocument)
    check(spec, "get", "/v1/tickets/{ticket_id}/decisions",
          client.get("/v1/tickets/CHG-1/decisions", headers=EVERYONE), DecisionList)

    replay = client.post(f"/v1/policies/revisions/{revision_id}/replay", headers=ADMIN)
    assert replay.status_code == 200, replay.text
    check(spec, "post", "/v1/policies/revisions/{revision_id}/replay", replay, ReplayDocument)
    activated = client.post(f"/v1/policies/revisions/{revision_id}/activate",
                            json={"reason": "tighten"}, headers=ADMIN)
    check(spec, "post", "/v1/policies/revisions/{revision_id}/activate", activated,
          ActivationDocument)
    again = client.post(f"/v1/policies/revisions/{revision_id}/activate", headers=ADMIN)
    assert again.status_code == 409
    check(spec, "post", "/v1/policies/revisions/{revision_id}/activate", again, ErrorBody)
    check(spec, "post", "/v1/policies/rollback",
          client.post("/v1/policies/rollback", headers=ADMIN), ActivationDocument)
    check(spec, "get", "/v1/policies/events",
          client.get("/v1/policies/events", headers=AUDITOR), PolicyEventList)

    exception = client.post("/v1/exceptions", json=exception_body(), headers=ADMIN)
    assert exception.status_code == 201, exception.text
    exception_id = check(spec, "post", "/v1/exceptions", exception, ExceptionDocument)["id"]
    check(spec, "get", "/v1/exceptions", client.get("/v1/exceptions", headers=AUDITOR),
          ExceptionList)
    check(spec, "get", "/v1/exceptions/{exception_id}",
          client.get(f"/v1/exceptions/{exception_id}", headers=AUDITOR), ExceptionDocument)
    approved = check(spec, "post", "/v1/exceptions/{exception_id}/approve",
                     client.post(f"/v1/exceptions/{exception_id}/approve", headers=APPROVER),
                     ExceptionDocument)
    assert approved["approved_by"] == "carol"
    check(spec, "post", "/v1/exceptions/{exception_id}/approve",
          client.post(f"/v1/exceptions/{exception_id}/approve", headers=APPROVER), ErrorBody)
    gate.clock.instant = T0 + timedelta(minutes=5)
    check(spec, "post", "/v1/exceptions/{exception_id}/revoke",
          client.post(f"/v1/exceptions/{exception_id}/revoke", json={"reason": "done"},
                      headers=ADMIN), ExceptionDocument)
    check(spec, "delete", "/v1/exceptions/{exception_id}",
          client.delete(f"/v1/exceptions/{exception_id}", headers=ADMIN), ErrorBody)
    check(spec, "get", "/v1/exceptions/export",
          client.get("/v1/exceptions/export", headers=AUDITOR), ExceptionExport)

    check(spec, "get", "/v1/audit/verify", client.get("/v1/audit/verify", headers=EVERYONE),
          AuditVerification)

    sbom = {"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
            "components": [{"type": "library", "name": "openssl", "version": "3.0.13"}]}
    uploaded = client.post(
        "/v1/sboms", params={"image_digest": DIGEST}, content=json.dumps(sbom),
        headers={**PIPELINE, "Content-Type": "application/vnd.cyclonedx+json"},
    )
    assert uploaded.status_code == 201, uploaded.text
    sbom_id = check(spec, "post", "/v1/sboms", uploaded, SbomUploadDocument)["id"]
    check(spec, "get", "/v1/sboms/{sbom_id}",
          client.get(f"/v1/sboms/{sbom_id}", headers=PIPELINE), SbomMetadata)
    refused_type = client.post("/v1/sboms", params={"image_digest": DIGEST}, content=b"x",
                               headers={**PIPELINE, "Content-Type": "text/plain"})
    assert refused_type.status_code == 415
    check(spec, "post", "/v1/sboms", refused_type, ErrorBody)

    vex = {"@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.com/vex/1",
           "author": "security@example.com", "timestamp": "2026-11-20T00:00:00Z", "version": 1,
           "statements": [{"vulnerability": {"name": "CVE-2024-3094"},
                           "products": [{"@id": f"pkg:oci/app@{DIGEST}"}],
                           "status": "not_affected",
                           "justification": "vulnerable_code_not_in_execute_path"}]}
    posted = client.post("/v1/vex", content=json.dumps(vex),
                         headers={**ADMIN, "Content-Type": "application/json"})
    assert posted.status_code == 201, posted.text
    check(spec, "post", "/v1/vex", posted, VexUploadDocument)

    review = deployment_review("uid-openapi-1", [HUB_IMAGE])
    answer = client.post("/admission/validate", json=review)
    assert answer.status_code == 200, answer.text
    check(spec, "post", "/admission/validate", answer, AdmissionReviewAnswer)
