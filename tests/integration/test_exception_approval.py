"""Exceptions waive what actually runs, and only once a second person approved them.

The whole application (``create_app``): the loopback registry resolves tags, the embedded OPA
runs the shipped ``policies/`` (staging requires signatures; no signature collector is wired, so
every image is denied by ``signatures``), the policy store on SQLite, HS256 tokens. Each scenario
is seen through the REST API (``POST /v1/evaluations``) and an AdmissionReview
(``POST /admission/validate``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from tests.helpers.app import admitted, evaluated
from tests.helpers.tokens import bearer_headers
from tests.helpers.types import MakeSettings
from tests.integration.cosign_fixtures import push_image, registry_host, unique_repository
from tests.integration.test_admission_signatures import deployment_review

pytestmark = pytest.mark.integration

SECRET = "exception-approval-test-secret-0123456789"
VIOLATION = "no signature evidence was collected; staging requires signatures"


def token(subject: str, *roles: str) -> dict[str, str]:
    return bearer_headers(SECRET, *roles, subject=subject, ttl=3600)


ALICE = token("alice", "policy-admin")
CAROL = token("carol", "exception-approver")
PIPELINE = token("ci", "pipeline")


@dataclass
class Gate:
    client: TestClient
    host: str
    repository: str
    approved_digest: str
    other_digest: str

    def evaluate(self, image: str) -> dict[str, Any]:
        return evaluated(
            self.client,
            {"images": [image], "environment": "staging", "namespace": "shop"},
            headers=PIPELINE,
        )

    def admit(self, image: str, uid: str) -> dict[str, Any]:
        return admitted(self.client, deployment_review(uid, [image]))

    def create(self, **overrides: object) -> dict[str, Any]:
        body: dict[str, object] = {
            "images": [f"{self.host}/{self.repository}:approved"],
            "policies": ["signatures"],
            "environment": "staging",
            "reason": "signing key rotation",
            "ticket_id": "SEC-9",
            "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        }
        body.update(overrides)
        response = self.client.post("/v1/exceptions", json=body, headers=ALICE)
        assert response.status_code == 201, response.text
        decoded: dict[str, Any] = response.json()
        return decoded


def start_gate(
    tmp_path: Path, make_settings: MakeSettings, **overrides: object
) -> Iterator[TestClient]:
    host = registry_host()
    values: dict[str, object] = {
        "insecure_disable_auth": False,
        "auth_hs256_secret": SECRET,
        "resolve_digests": True,
        "registry": {"hosts": [{"host": host, "plain_http": True}]},
        "default_environment": "staging",
        "policy_state_dir": tmp_path / "policy-state",
    }
    settings = make_settings(**(values | overrides))
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def gate(tmp_path: Path, make_settings: MakeSettings) -> Iterator[Gate]:
    host = registry_host()
    repository = unique_repository()
    approved = push_image(host, f"{repository}:approved", "the reviewed build", tmp_path)
    other = push_image(host, f"{repository}:other", "some other build", tmp_path)
    for client in start_gate(tmp_path, make_settings):
        yield Gate(client, host, repository, str(approved), str(other))


def test_a_tag_exception_waives_the_digest_it_had_at_approval_and_no_other(gate: Gate) -> None:
    exception = gate.create()
    approved = gate.client.post(f"/v1/exceptions/{exception['id']}/approve", headers=CAROL)
    assert approved.status_code == 200, approved.text
    tag = f"{gate.host}/{gate.repository}:approved"
    assert approved.json()["digests"] == {tag: gate.approved_digest}
    assert (approved.json()["status"], approved.json()["approved_by"]) == ("active", "carol")

    # what the tag named at approval: waived, through both doors
    rest = gate.evaluate(tag)
    assert rest["verdict"] == "warn", rest
    assert rest["exceptions"] == [
        {"id": exception["id"], "ticket_id": "SEC-9", "expires_at": exception["expires_at"],
         "policy": "signatures", "image": tag, "status": "applied", "any_digest": False}
    ]
    assert gate.admit(tag, "uid-tag")["allowed"] is True

    # the same tag pinned to another image's digest: the runtime would pull that digest
    swapped = f"{tag}@{gate.other_digest}"
    rest = gate.evaluate(swapped)
    assert rest["verdict"] == "deny"
    assert rest["violations"] == [{"policy": "signatures", "image": swapped, "message": VIOLATION}]
    assert rest["exceptions"] == []
    answer = gate.admit(swapped, "uid-swapped")
    assert answer["allowed"] is False
    assert VIOLATION in answer["status"]["message"]


def test_a_repository_glob_needs_any_digest_and_every_decision_says_so(gate: Gate) -> None:
    glob = f"{gate.host}/{gate.repository}"
    refused = gate.client.post(
        "/v1/exceptions",
        json={"images": [glob], "policies": ["signatures"], "environment": "staging",
              "reason": "r", "ticket_id": "SEC-1", "expires_at": "2099-01-01T00:00:00Z"},
        headers=ALICE,
    )
    assert refused.status_code == 422
    assert refused.json()["message"] == (
        f"images[0]: image pattern {glob!r} would waive any digest of the repository: name a "
        "digest, a tag (resolved to its digest when the exception is approved), or set "
        "any_digest: true to say that any digest is meant"
    )
    exception = gate.create(images=[glob], any_digest=True)
    assert gate.client.post(
        f"/v1/exceptions/{exception['id']}/approve", headers=CAROL
    ).status_code == 200
    swapped = f"{glob}:approved@{gate.other_digest}"
    rest = gate.evaluate(swapped)
    assert rest["verdict"] == "warn"
    assert rest["warnings"] == [{
        "policy": "signatures", "image": swapped,
        "message": f"waived by exception {exception['id']} (ticket SEC-9, expires "
                   f"{exception['expires_at']}, any digest): {VIOLATION}",
    }]
    assert rest["exceptions"][0]["any_digest"] is True
    answer = gate.admit(swapped, "uid-glob")
    assert answer["allowed"] is True
    assert any("any digest" in warning for warning in answer["warnings"])


def test_pending_until_a_second_authenticated_person_approves(gate: Gate) -> None:
    tag = f"{gate.host}/{gate.repository}:approved"
    free_text = gate.client.post(
        "/v1/exceptions",
        json={"images": [tag], "policies": ["signatures"], "environment": "staging",
              "reason": "r", "ticket_id": "SEC-1", "expires_at": "2099-01-01T00:00:00Z",
              "approver": "anonymous\u200b (auth disabled)"},
        headers=ALICE,
    )
    assert (free_text.status_code, free_text.json()["message"]) == (
        422, "approver: the approver is not named at creation: a second principal approves "
        "the pending exception with POST /v1/exceptions/{id}/approve",
    )
    exception = gate.create()
    assert (exception["status"], exception["approved_by"]) == ("pending", None)

    # pending: waives nothing, through both doors, and says why
    rest = gate.evaluate(tag)
    assert rest["verdict"] == "deny"
    assert {"policy": "signatures", "image": tag,
            "message": f"exception {exception['id']} (ticket SEC-9) awaits approval by a second "
                       f"person; not waived: {VIOLATION}"} in rest["warnings"]
    assert gate.admit(tag, "uid-pending")["allowed"] is False

    # the creator again, under look-alike spellings of the same subject: refused
    approve = f"/v1/exceptions/{exception['id']}/approve"
    for lookalike in ("alice", "ALICE", "al\u200bice", "\uff41lice", "alice\u2060", " Alice "):
        answer = gate.client.post(approve, headers=token(lookalike, "policy-admin"))
        assert answer.status_code == 409, (lookalike, answer.text)
        assert answer.json()["message"].startswith(
            f"exception {exception['id']} was created by 'alice': a second person must approve it"
        )
    # a role that may not approve; a body naming someone else
    assert gate.client.post(approve, headers=PIPELINE).status_code == 403
    assert gate.client.post(approve, headers=token("dave", "auditor")).status_code == 403
    named = gate.client.post(approve, json={"approver": "carol"}, headers=ALICE)
    assert named.status_code == 422
    assert gate.evaluate(tag)["verdict"] == "deny"

    # a second person with exception-approver: approved once
    assert gate.client.post(approve, headers=CAROL).status_code == 200
    again = gate.client.post(approve, headers=token("erin", "policy-admin"))
    assert (again.status_code, again.json()["message"]) == (
        409, f"exception {exception['id']} was already approved by carol"
    )
    assert gate.evaluate(tag)["verdict"] == "warn"
    assert gate.admit(tag, "uid-approved")["allowed"] is True
    export = gate.client.get("/v1/exceptions/export", headers=ALICE).json()
    assert [(e["action"], e["actor"]) for e in export["events"]] == [
        ("exception.create", "alice"), ("exception.approve", "carol")
    ]


def test_with_authentication_disabled_nothing_can_be_approved(
    tmp_path: Path, make_settings: MakeSettings
) -> None:
    host = registry_host()
    repository = unique_repository()
    push_image(host, f"{repository}:approved", "build", tmp_path)
    for client in start_gate(tmp_path, make_settings, insecure_disable_auth=True,
                             auth_hs256_secret=None):
        created = client.post(
            "/v1/exceptions",
            json={"images": [f"{host}/{repository}:approved"], "policies": ["signatures"],
                  "environment": "staging", "reason": "r", "ticket_id": "SEC-1",
                  "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
        )
        assert created.status_code == 201, created.text
        answer = client.post(f"/v1/exceptions/{created.json()['id']}/approve")
        assert answer.status_code == 403
        assert answer.json()["message"] == (
            "authentication is disabled on this server: nobody can approve an exception "
            "(four eyes need two authenticated principals)"
        )
        listed = client.get("/v1/exceptions").json()["items"]
        assert [e["status"] for e in listed] == ["pending"]
        body = json.dumps(listed)
        assert "approved_at\": null" in body
