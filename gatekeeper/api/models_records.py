"""Response bodies of the audit, SBOM, VEX, compliance and health routes (OpenAPI only).

The routes answer with the documents their use cases build; these models describe those JSON
forms in ``/openapi.json``. ``tests/integration/test_openapi.py`` checks real answers against
them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AuditVerification",
    "ComplianceDocument",
    "HealthDocument",
    "ReadinessDocument",
    "SbomMetadata",
    "SbomUploadDocument",
    "VexUploadDocument",
]


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HealthDocument(_Document):
    status: str


class ReadinessDocument(_Document):
    """``/readyz``: 200 with ``status: ready``, or 503 naming the broken components."""

    status: str = Field(description="ready or not ready")
    policy_revision: str | None = None
    message: str | None = None
    failures: dict[str, str] | None = Field(
        default=None, description="Component -> why it is not ready (503 only)"
    )
    audit_spool_depth: int
    audit_spool_quarantined: int = Field(
        description="Spooled decisions the audit store refused (kept beside the spool)"
    )
    audit_spool_quarantine: str | None = Field(
        default=None, description="Where the quarantined decisions are kept (when there are any)"
    )
    audit_signing_key: dict[str, str] = Field(
        description="Where the checkpoint signing key came from"
    )
    authentication: str


class AuditVerification(_Document):
    """``/v1/audit/verify``; a broken chain is ``verified: false`` with the first bad record."""

    verified: bool
    message: str
    record: int | None = Field(default=None, description="Sequence of the first bad record")
    records: int | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints: int | None = None
    last_checkpoint_seq: int | None = None
    uncovered: int | None = None
    pruned_through: int | None = None
    notes: list[str] | None = None


class SbomUploadDocument(_Document):
    id: str
    image_digest: str
    sha256: str
    format: str
    spec_version: str
    component_count: int
    uploaded_at: str
    state: str = Field(description="What the SBOM evidence would say for the digest")
    reason: str


class SbomMetadata(_Document):
    id: str
    image_digest: str
    sha256: str
    format: str
    spec_version: str
    component_count: int
    size: int
    uploaded_at: str
    ticket_id: str | None
    uploaded_by: str | None
    source: str


class VexUploadDocument(_Document):
    id: str
    sha256: str
    format: str
    statement_count: int
    image_digests: list[str]
    uploaded_at: str
    uploaded_by: str | None


class ComplianceViolation(_Document):
    policy: str
    image: str | None
    message: str


class ComplianceWorkload(_Document):
    kind: str
    namespace: str | None
    name: str
    uid: str | None
    verdict: str
    policy_revision: str | None
    decision_id: str | None
    evaluated_at: str
    violations: list[ComplianceViolation]
    warnings: list[ComplianceViolation]


class ComplianceSummary(_Document):
    workloads: int
    denied: int
    warned: int
    allowed: int
    decisions_recorded: int


class ComplianceDocument(_Document):
    """``GET /v1/compliance``: ``disabled``, ``pending`` (no scan finished yet) or ``ready``
    with the last background scan of the running workloads."""

    status: str = Field(description="disabled, pending or ready")
    message: str | None = None
    last_failure: str | None = None
    trigger: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    policy_revisions: list[str] | None = None
    summary: ComplianceSummary | None = None
    denied: list[ComplianceWorkload] | None = None
    workloads: list[ComplianceWorkload] | None = None
