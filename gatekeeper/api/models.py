"""Request and response bodies of the REST API (pydantic at the edge)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BINARY_SCHEMA",
    "DecisionDocument",
    "DecisionList",
    "ErrorBody",
    "EvaluationBody",
    "InlineSbomBody",
    "ManifestEvaluationDocument",
    "TicketBody",
    "ViolationDocument",
    "error_document",
    "error_response",
    "hoist_request_definitions",
    "request_body",
]

_ID = Field(default=None, max_length=256)


class TicketBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    intent_id: str | None = _ID
    plan_id: str | None = _ID
    ticket_id: str | None = _ID
    deploy_id: str | None = _ID


class InlineSbomBody(BaseModel):
    """An SBOM sent with the evaluation, for the image at index ``image`` (digest-pinned)."""

    model_config = ConfigDict(extra="forbid")

    image: int = Field(ge=0, description="Index into images[] of the image this SBOM describes")
    document: dict[str, Any] = Field(description="CycloneDX or SPDX 2.3 JSON document")


class EvaluationBody(BaseModel):
    """``POST /v1/evaluations``: may these images be deployed?"""

    model_config = ConfigDict(extra="forbid")

    images: list[str] | None = Field(
        default=None, min_length=1,
        description="Image references, as the deploy names them (or send manifests)",
    )
    manifests: str | None = Field(
        default=None, min_length=1,
        description="Kubernetes manifests (YAML or JSON, several documents, List kinds, a "
        "`helm template` or `kubectl kustomize` output): every workload in them is decided "
        "as admission would decide it; the answer is a ManifestEvaluationDocument",
    )
    environment: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="Target environment; the configured default (production) when omitted",
    )
    namespace: str | None = Field(default=None, min_length=1, max_length=253)
    ticket: TicketBody = Field(default_factory=TicketBody)
    dry_run: bool = False
    sboms: list[InlineSbomBody] = Field(
        default_factory=list,
        description="SBOMs to upload (stored and audited with their sha256) before deciding",
    )


class WorkloadDocument(BaseModel):
    document: int
    api_version: str
    kind: str
    namespace: str | None
    name: str | None
    verdict: str
    messages: list[str] = Field(description="Violations addressed to their fields")
    decision: DecisionDocument


class NotEvaluatedDocument(BaseModel):
    document: int
    kind: str | None
    name: str | None
    reason: str


class ManifestEvaluationDocument(BaseModel):
    """``POST /v1/evaluations`` with ``manifests``: one decision per workload."""

    verdict: str
    allowed: bool
    workloads: list[WorkloadDocument]
    not_evaluated: list[NotEvaluatedDocument]


class ViolationDocument(BaseModel):
    policy: str
    image: str | None
    message: str


class ImageDocument(BaseModel):
    reference: str
    digest: str | None
    evidence: dict[str, Any]


class DecisionDocument(BaseModel):
    decision_id: str
    verdict: str
    allowed: bool
    mode: str
    violations: list[ViolationDocument]
    warnings: list[ViolationDocument]
    exceptions: list[dict[str, Any]] = Field(
        default_factory=list, description="Exceptions applied, or found expired or revoked"
    )
    images: list[ImageDocument]
    policy_revision: str | None
    source: str
    environment: str
    namespace: str | None
    ticket: TicketBody
    dry_run: bool
    caller: str | None
    error: str | None
    latency_ms: float | None
    context: dict[str, Any]
    created_at: datetime


class DecisionList(BaseModel):
    items: list[DecisionDocument]
    next_cursor: str | None


class ErrorBody(BaseModel):
    error: str
    message: str
    field: str | None = None


def error_document(
    kind: str, message: str, field: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The JSON error answer every route gives: ``{"error", "message"[, "field"], ...}``."""
    body: dict[str, Any] = {"error": kind, "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return body


def error_response(
    status: int, kind: str, message: str, field: str | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_document(kind, message, field, **extra), status_code=status)


#: The OpenAPI schema of a raw document body (tar.gz, SBOM or VEX bytes).
BINARY_SCHEMA: dict[str, Any] = {"type": "string", "format": "binary"}


def request_body(
    model: type[BaseModel] | None = None,
    *,
    required: bool = True,
    media_types: tuple[str, ...] = (),
    description: str | None = None,
) -> dict[str, Any]:
    """``openapi_extra`` declaring the body a route reads itself: ``model`` as JSON and/or
    ``media_types`` as raw documents. Nested models' ``$defs`` are moved into the document's
    components by :func:`gatekeeper.app.create_app`."""
    content: dict[str, Any] = {}
    if model is not None:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        content["application/json"] = {"schema": schema}
    for media_type in media_types:
        content[media_type] = {"schema": BINARY_SCHEMA}
    body: dict[str, Any] = {"required": required, "content": content}
    if description:
        body["description"] = description
    return {"requestBody": body}


def hoist_request_definitions(document: dict[str, Any]) -> dict[str, Any]:
    """Move the ``$defs`` of request schemas declared with :func:`request_body` (or another
    ``openapi_extra``) into ``components.schemas``, where their ``$ref`` points."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                definitions = media.get("schema", {}).pop("$defs", {})
                for name, schema in definitions.items():
                    schemas.setdefault(name, schema)
    return document
