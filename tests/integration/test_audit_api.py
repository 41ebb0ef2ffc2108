"""The audit routes and the role matrix on the real app (embedded OPA, SQLite), wired the
way the integration proposal of issue 6 wires them."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gatekeeper.api.audit_routes import audit_readiness
from gatekeeper.app import create_app
from gatekeeper.cli.audit import audit_app
from tests.helpers.app import evaluated
from tests.helpers.tokens import bearer_headers
from tests.helpers.types import MakeSettings

SECRET = "an HS256 secret of at least 32 bytes!"
DIGEST = "sha256:" + "cd" * 32


def bearer(*roles: str, sub: str = "tester") -> dict[str, str]:
    return bearer_headers(SECRET, *roles, subject=sub)


@pytest.fixture
def signing_key(tmp_path: Path) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "audit-signing.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    public = tmp_path / "audit-signing.pub.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return path, public


@pytest.fixture
def app(make_settings: MakeSettings, signing_key: tuple[Path, Path], tmp_path: Path) -> FastAPI:
    """The production app: chained audit log with signed checkpoints, bearer auth on."""
    settings = make_settings(
        audit_signing_key_file=signing_key[0], audit_spool_dir=tmp_path / "spool",
        audit_checkpoint_every=3, auth_hs256_secret=SECRET, insecure_disable_auth=False,
    )
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def evaluate(
    client: TestClient,
    ticket_id: str = "CHG-1",
    images: Sequence[str] = (f"registry.example.com/payments/api:1.4@{DIGEST}",),
) -> dict[str, Any]:
    return evaluated(
        client,
        {"images": list(images), "environment": "production", "namespace": "payments",
         "ticket": {"intent_id": "INT-1", "plan_id": "PLAN-1", "ticket_id": ticket_id}},
        headers=bearer("pipeline"),
    )


def test_ticket_decisions_route(client: TestClient) -> None:
    first = evaluate(client, "CHG-1")
    evaluate(client, "CHG-2")
    second = evaluate(client, "CHG-1", images=["nginx"])
    body = client.get("/v1/tickets/CHG-1/decisions", headers=bearer("auditor")).json()
    assert [d["decision_id"] for d in body["items"]] == [second["decision_id"], first["decision_id"]]
    assert body["next_cursor"] is None
    page = client.get("/v1/tickets/CHG-1/decisions", params={"limit": 1}, headers=bearer("pipeline")).json()
    assert len(page["items"]) == 1 and page["next_cursor"]


def export_lines(client: TestClient, **params: str) -> httpx.Response:
    response = client.get("/v1/audit/export", params=params, headers=bearer("auditor"))
    assert response.status_code == 200, response.text
    exported: httpx.Response = response
    return exported


def test_ticket_export_verifies_offline_and_detects_edits(client: TestClient, signing_key: tuple[Path, Path], tmp_path: Path) -> None:
    wanted = [evaluate(client, "CHG-1")["decision_id"]]
    evaluate(client, "CHG-2")
    evaluate(client, "CHG-3")
    wanted.append(evaluate(client, "CHG-1", images=["nginx"])["decision_id"])
    evaluate(client, "CHG-4")
    response = export_lines(client, ticket_id="CHG-1")
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0]["type"] == "header" and lines[0]["filters"] == {"ticket_id": "CHG-1"}
    assert [line["decision"]["decision_id"] for line in lines if line["type"] == "record"] == wanted
    assert [line["type"] for line in lines[1:]] == [
        "record", "link", "link", "checkpoint", "record", "link", "checkpoint"]
    assert lines[-1]["type"] == "checkpoint" and lines[-1]["seq"] == 5
    export = tmp_path / "chg-1.jsonl"
    export.write_text(response.text)
    runner = CliRunner()
    result = runner.invoke(audit_app, ["verify", "--file", str(export), "--public-key", str(signing_key[1])])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        "export verified: 2 records and 3 chain links (1..5), 2 signed checkpoints, "
        "covered by the checkpoint at record 5"
    )
    # an auditor's copy edited afterwards: the verdict of record 4 changed
    edited_lines = []
    for line in response.text.splitlines(keepends=True):
        value = json.loads(line)
        if value.get("seq") == 4 and value["type"] == "record":
            value["decision"]["verdict"] = "allow" if value["decision"]["verdict"] != "allow" else "deny"
            line = json.dumps(value) + "\n"
        edited_lines.append(line)
    export.write_text("".join(edited_lines))
    result = runner.invoke(audit_app, ["verify", "--file", str(export), "--public-key", str(signing_key[1])])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: export verification FAILED: record 4 changed: its decision does not match its digest"
    )
    # a record dropped from the file
    kept = [line for line in response.text.splitlines(keepends=True) if '"seq":4,' not in line]
    export.write_text("".join(kept))
    result = runner.invoke(audit_app, ["verify", "--file", str(export), "--public-key", str(signing_key[1])])
    assert result.exit_code == 1
    assert "record 4 removed: the trail goes from record 3 to record 5" in result.output
    # cut short: the final checkpoint is missing
    export.write_text("".join(response.text.splitlines(keepends=True)[:-1]))
    result = runner.invoke(audit_app, ["verify", "--file", str(export), "--public-key", str(signing_key[1])])
    assert result.exit_code == 1
    assert "the export does not end with a signed checkpoint (after record 5): it was cut short" in result.output


def test_csv_export_verifies_offline(client: TestClient, signing_key: tuple[Path, Path], tmp_path: Path) -> None:
    for ticket in ("CHG-1", "CHG-2", "CHG-1"):
        evaluate(client, ticket)
    response = export_lines(client, format="csv")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = response.text.splitlines()
    assert rows[0].startswith("type,seq,prev_hash,record_hash,")
    export = tmp_path / "all.csv"
    export.write_text(response.text)
    result = CliRunner().invoke(audit_app, ["verify", "--file", str(export), "--public-key", str(signing_key[1])])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("export verified: 3 records and 0 chain links (1..3)")


def test_verify_route(client: TestClient) -> None:
    for _ in range(4):
        evaluate(client)
    body = client.get("/v1/audit/verify", headers=bearer("auditor")).json()
    assert body["verified"] is True and body["records"] == 4 and body["last_checkpoint_seq"] == 3
    assert body["message"] == (
        "audit trail verified: 4 records (1..4), 1 signed checkpoint, last at record 3; "
        "1 record after it is chained but not yet signed"
    )


def test_readiness_fields(app: FastAPI, client: TestClient) -> None:
    audit = app.state.container.audit_log
    assert audit_readiness(audit) == {
        "audit_spool_depth": 0, "audit_spool_quarantined": 0,
        # issue 15: where the checkpoint key came from (here: GATEKEEPER_AUDIT_SIGNING_KEY_FILE)
        "audit_signing_key": {"source": "configured", "file": audit.signing_key_info["file"],
                              "key_id": audit.signer.key_id},
    }
    assert audit.signing_key_info["file"].endswith("audit-signing.pem")


# -- the role matrix -------------------------------------------------------------------------

P, A, PA, AD = "pipeline", "auditor", "policy-admin", "admin"
EA = "exception-approver"  # may approve a pending exception, nothing else
MATRIX = [
    ("POST", "/v1/evaluations", {P, AD}),
    ("GET", "/v1/decisions/{id}", {P, A, AD}),
    ("GET", "/v1/decisions", {P, A, AD}),
    ("GET", "/v1/tickets/CHG-1/decisions", {P, A, AD}),
    ("GET", "/v1/audit/export", {A, AD}),
    ("GET", "/v1/audit/verify", {A, AD}),
    ("POST", "/v1/sboms", {P, AD}),
    ("POST", "/v1/vex", {PA, AD}),  # and vex-publisher: test_vex_publisher_may_upload_vex
    ("GET", "/v1/policies", {PA, A, AD}),
    ("GET", "/v1/exceptions", {PA, A, AD}),
    # allowed roles reach the route: 404, as EXC-404 does not exist
    ("POST", "/v1/exceptions/EXC-404/approve", {PA, EA, AD}),
    ("GET", "/v1/compliance", {PA, A, AD}),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
]
SBOM = {"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1, "components": []}
VEX = {"@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.com/vex/1",
       "author": "sec", "timestamp": "2026-11-20T00:00:00Z", "version": 1,
       "statements": [{"vulnerability": {"name": "CVE-2024-3094"},
                       "products": [{"@id": f"pkg:oci/a@{DIGEST.replace(':', '%3A')}"}],
                       "status": "fixed"}]}


def call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    """The answer to one request of the matrix (an ``httpx.Response``; TestClient is untyped
    here: starlette types it against httpx2, which is not installed)."""
    if path == "/v1/vex":
        return client.post(path, content=json.dumps(VEX),
                           headers={**headers, "Content-Type": "application/json"})
    if path == "/v1/sboms":
        return client.post(
            path, params={"image_digest": DIGEST}, content=json.dumps(SBOM),
            headers={**headers, "Content-Type": "application/vnd.cyclonedx+json"},
        )
    if path.endswith("/approve"):
        return client.post(path, headers=headers)
    if method == "POST":
        return client.post(path, json={"images": [f"registry.example.com/a@{DIGEST}"]}, headers=headers)
    return client.get(path, headers=headers)


@pytest.mark.parametrize(("method", "path", "allowed"), MATRIX, ids=[f"{m} {p}" for m, p, _ in MATRIX])
def test_role_matrix(client: TestClient, method: str, path: str, allowed: set[str] | None) -> None:
    decision = evaluate(client)
    path = path.replace("{id}", decision["decision_id"])
    anonymous = call(client, method, path, {})
    if allowed is None:
        assert anonymous.status_code in (200, 503)
        return
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthorized"
    for role in (P, A, PA, EA, AD):
        response = call(client, method, path, bearer(role, sub=f"{role}-bot"))
        if role in allowed:
            expected = (404,) if path.endswith("/approve") else (200, 201)
            assert response.status_code in expected, (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            assert response.json()["error"] == "forbidden"
            assert response.json()["message"].startswith(f"subject '{role}-bot' lacks the role")


def test_vex_publisher_may_upload_vex_and_nothing_else(client: TestClient) -> None:
    publisher = bearer("vex-publisher", sub="sec-team")
    assert call(client, "POST", "/v1/vex", publisher).status_code == 201
    for method, path, allowed in MATRIX:
        if allowed is not None and path != "/v1/vex":
            assert call(client, method, path.replace("/{id}", "/x"), publisher).status_code == 403, path


def test_export_cli_with_progress_and_summary(client: TestClient, make_settings: MakeSettings, signing_key: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for ticket in ("CHG-1", "CHG-2", "CHG-1", "CHG-3"):
        evaluate(client, ticket)
    settings = make_settings()
    output = tmp_path / "out.jsonl"
    env = {"GATEKEEPER_DATABASE_URL": settings.database_url,
           "GATEKEEPER_AUDIT_SIGNING_KEY_FILE": str(signing_key[0])}
    result = CliRunner().invoke(audit_app, ["export", "--format", "jsonl", "--ticket-id", "CHG-1", "--file", str(output)], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"exported records 1..3 (3 chain entries) to {output}; it ends with the checkpoint at record 3 "
        f"(key {json.loads(output.read_text().splitlines()[-1])['key_id']}); verify offline with: "
        f"gatekeeper audit verify --file {output} --public-key PUBLIC_KEY"
    )
    verified = CliRunner().invoke(audit_app, ["verify", "--file", str(output), "--public-key", str(signing_key[1])])
    assert verified.exit_code == 0 and "2 records and 1 chain link (1..3)" in verified.output
    online = CliRunner().invoke(audit_app, ["verify"], env=env)
    assert online.exit_code == 0, online.output
    assert online.stdout.strip() == "audit trail verified: 4 records (1..4), 2 signed checkpoints, last at record 4"
