"""Request and response bodies of the REST API (pydantic at the edge)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DecisionDocument",
    "DecisionList",
    "ErrorBody",
    "EvaluationBody",
    "InlineSbomBody",
    "ManifestEvaluationDocument",
    "TicketBody",
    "ViolationDocument",
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
