"""``POST /v1/sboms`` / ``GET /v1/sboms/{id}`` on a minimal app with the app's error mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from gatekeeper.api.sbom_routes import build_sbom_router
from gatekeeper.errors import GatekeeperError
from gatekeeper.sbom import (
    CycloneDxValidator,
    SbomDocumentInspector,
    SbomEvidenceCollector,
    SqlSbomStore,
    StoredSbomSource,
)
from gatekeeper.usecases import SbomUploads
from tests.unit.sbom.factory import IMAGE_DIGEST, cyclonedx, cyclonedx_component, encode

CDX = {"Content-Type": "application/vnd.cyclonedx+json"}


@pytest.fixture()
def client(tmp_path: Path) -> TestClient:
    store = SqlSbomStore(sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    store.create_tables()
    validator = CycloneDxValidator()
    collector = SbomEvidenceCollector(sources=[StoredSbomSource(store)], validator=validator)
    uploader = SbomUploads(
        store=store, inspector=SbomDocumentInspector(collector=collector, validator=validator)
    )
    app = FastAPI()

    @app.exception_handler(GatekeeperError)
    async def render(_request: Request, exc: GatekeeperError) -> JSONResponse:
        status = {"invalid_input": 422, "not_found": 404}.get(exc.kind, 500)
        body = {"error": exc.kind, "message": exc.message}
        if "field" in exc.context:
            body["field"] = exc.context["field"]
        return JSONResponse(body, status_code=status)

    app.include_router(build_sbom_router(lambda _request: uploader, max_bytes=64 * 1024))
    return TestClient(app)


def test_upload_then_read_back(client: TestClient) -> None:
    content = encode(cyclonedx(3))
    answer = client.post(f"/v1/sboms?image_digest={IMAGE_DIGEST}&ticket_id=CHG-1",
                         content=content, headers=CDX)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["state"], body["format"], body["component_count"]) == ("bound", "cyclonedx", 3)
    assert answer.headers["location"] == f"/v1/sboms/{body['id']}"
    meta = client.get(f"/v1/sboms/{body['id']}").json()
    assert (meta["ticket_id"], meta["sha256"]) == ("CHG-1", body["sha256"])
    document = client.get(f"/v1/sboms/{body['id']}?document=true")
    assert document.content == content
    assert document.headers["content-type"] == "application/vnd.cyclonedx+json"


def test_invalid_document_names_the_json_path(client: TestClient) -> None:
    content = encode(cyclonedx([cyclonedx_component(0, type="weird")]))
    answer = client.post(f"/v1/sboms?image_digest={IMAGE_DIGEST}", content=content, headers=CDX)
    assert answer.status_code == 422
    assert answer.json()["field"] == "$.components[0].type"
    assert answer.json()["message"].startswith(
        "CycloneDX 1.6 schema violation at $.components[0].type: "
    )


def test_bad_digest_too_large_and_wrong_type(client: TestClient) -> None:
    bad = client.post("/v1/sboms?image_digest=sha256:nothex", content=b"{}", headers=CDX)
    assert (bad.status_code, bad.json()["field"]) == (422, "image_digest")
    large = client.post(f"/v1/sboms?image_digest={IMAGE_DIGEST}",
                        content=encode(cyclonedx(400)), headers=CDX)
    assert large.status_code == 413
    typed = client.post(f"/v1/sboms?image_digest={IMAGE_DIGEST}", content=b"{}",
                        headers={"Content-Type": "text/plain"})
    assert typed.status_code == 415


def test_unknown_sbom_is_404(client: TestClient) -> None:
    assert client.get("/v1/sboms/nope").status_code == 404
