"""Request and response bodies of the policy lifecycle and exception routes (OpenAPI only).

The routes validate bodies themselves (field-addressed messages that the CLI shares) and answer
with the documents of :mod:`gatekeeper.policy`; these models describe those JSON forms in
``/openapi.json``. ``tests/integration/test_openapi.py`` checks real answers against them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gatekeeper.api.models import ViolationDocument

__all__ = [
    "ActivationDocument",
    "CheckReportDocument",
    "ExceptionBody",
    "ExceptionDocument",
    "ExceptionExport",
    "ExceptionList",
    "PoliciesOverview",
    "PolicyEventDocument",
    "PolicyEventList",
    "PolicyFilesBody",
    "PolicyRefusedBody",
    "ReasonBody",
    "ReplayDocument",
    "RevisionDocument",
]


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests -----------------------------------------------------------------------------


class PolicyFilesBody(_Document):
    """``POST /v1/policies/revisions`` as JSON (a tar.gz body is the other form)."""

    policies: dict[str, str] = Field(description="File path -> Rego text, served by OPA")
    tests: dict[str, str] = Field(
        default_factory=dict, description="File path -> Rego test text, run by opa test"
    )
    description: str | None = Field(default=None, max_length=2000)


class ReasonBody(_Document):
    """Optional body of activate, rollback and revoke: why (kept in the audit record)."""

    reason: str | None = Field(default=None, max_length=2000)


class ExceptionBody(_Document):
    """``POST /v1/exceptions``: a time-boxed waiver of named policies for image patterns."""

    images: list[str] = Field(min_length=1, description="Image patterns naming a registry host")
    policies: list[str] = Field(min_length=1, description="Rule package names (registries)")
    environment: str | None = Field(default=None, max_length=128)
    namespace: str | None = Field(default=None, max_length=253)
    reason: str = Field(max_length=2000)
    ticket_id: str = Field(max_length=256)
    expires_at: str = Field(description="RFC 3339 instant, in the future (bounded lifetime)")
    any_digest: bool = Field(
        default=False,
        description="Tagged patterns match any digest (otherwise approval pins them to digests)",
    )


# -- responses ----------------------------------------------------------------------------


class CheckProblemDocument(_Document):
    check: str = Field(description="structure, check, fmt or test")
    file: str | None
    line: int | None
    message: str


class CheckReportDocument(_Document):
    passed: bool
    problems: list[CheckProblemDocument]
    failed_tests: list[str]
    tests_run: int
    tests_passed: int
    opa_version: str


class FileEntry(_Document):
    path: str
    bytes: int


class FileListing(_Document):
    policies: list[FileEntry]
    tests: list[FileEntry]


class FileContents(_Document):
    policies: dict[str, str]
    tests: dict[str, str]


class RevisionSummary(_Document):
    revision_id: str
    created_at: str
    created_by: str
    source: str
    status: str
    description: str | None


class RevisionDocument(RevisionSummary):
    active: bool
    checks: CheckReportDocument
    files: FileListing
    contents: FileContents | None = Field(
        default=None, description="The files' text (single-revision reads only)"
    )


class PolicyEventDocument(_Document):
    seq: int
    occurred_at: str
    actor: str
    action: str
    from_revision: str | None
    to_revision: str | None
    subject: str | None
    detail: dict[str, Any]
    prev_hash: str
    entry_hash: str


class PoliciesOverview(_Document):
    active_revision: RevisionDocument | None
    revisions: list[RevisionSummary]
    events: list[PolicyEventDocument]


class ActivationDocument(_Document):
    active_revision: str | None
    event: PolicyEventDocument


class PolicyEventList(_Document):
    items: list[PolicyEventDocument]
    chain_length: int


class PolicyRefusedBody(_Document):
    """422 answer to an upload whose checks failed: the refused revision is kept."""

    error: str
    message: str
    revision: RevisionDocument


class ReplayTotals(_Document):
    replayed: int
    skipped_without_input: int
    would_deny: int
    previously_denied: int
    newly_denied: int
    newly_allowed: int
    changed: int
    tickets_affected: int


class DecisionChangeDocument(_Document):
    decision_id: str
    created_at: str
    environment: str
    namespace: str | None
    ticket_id: str | None
    old_revision: str | None
    old_verdict: str
    new_verdict: str
    violations_added: list[ViolationDocument]
    violations_removed: list[ViolationDocument]
    warnings_added: list[ViolationDocument]
    warnings_removed: list[ViolationDocument]


class RunningDeniedDocument(_Document):
    kind: str | None
    namespace: str | None
    name: str | None
    current_verdict: str
    current_revision: str | None
    new_verdict: str
    violations: list[ViolationDocument]


class RunningNowDocument(_Document):
    """The candidate over the running workloads (the background loop's latest inputs)."""

    available: bool = Field(description="false when background compliance is off")
    message: str | None = None
    workloads: int | None = None
    would_deny: int | None = None
    newly_denied: int | None = None
    denied: list[RunningDeniedDocument] | None = None


class ReplayDocument(_Document):
    revision_id: str
    since: str | None
    until: str | None
    summary: str
    totals: ReplayTotals
    tickets_affected: list[str]
    changes: list[DecisionChangeDocument]
    running_now: RunningNowDocument


class ExceptionDocument(_Document):
    id: str
    images: list[str]
    policies: list[str]
    environment: str | None
    namespace: str | None
    reason: str
    ticket_id: str
    created_at: str
    expires_at: str
    created_by: str
    any_digest: bool
    digests: dict[str, str] = Field(description="Tag -> digest pinned at approval")
    approved_at: str | None
    approved_by: str | None
    revoked_at: str | None
    revoked_by: str | None
    revoke_reason: str | None
    status: str = Field(description="pending, active, expired or revoked")


class ExceptionList(_Document):
    items: list[ExceptionDocument]


class ExceptionExport(_Document):
    exported_at: str
    exceptions: list[ExceptionDocument]
    events: list[PolicyEventDocument]
