"""Vulnerability scan evidence: states as types, and the port a scanner adapter implements.

The policy sees :meth:`ScanReport.as_input` at ``input.images[].evidence.scan``. Every scanner
status has its own :class:`ScanState`; only ``complete`` and ``active`` (enhanced scanning's
continuous mode) carry findings a policy may rely on (``findings_available``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from gatekeeper.domain.ports.evaluation import EvidenceContext
from gatekeeper.domain.reference import Digest, ImageReference

__all__ = [
    "SEVERITIES",
    "ScanFinding",
    "ScanReport",
    "ScanSource",
    "ScanState",
    "format_timestamp",
]

#: Every severity a count is reported for (ECR's FindingSeverity plus Inspector's UNTRIAGED).
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED", "UNTRIAGED")


class ScanState(enum.StrEnum):
    COMPLETE = "complete"  # COMPLETE
    ACTIVE = "active"  # ACTIVE: enhanced scanning monitors the image continuously
    PENDING = "pending"  # IN_PROGRESS, PENDING
    FAILED = "failed"  # FAILED
    UNSUPPORTED_IMAGE = "unsupported_image"  # UNSUPPORTED_IMAGE
    FINDINGS_UNAVAILABLE = "findings_unavailable"  # FINDINGS_UNAVAILABLE
    SCAN_ELIGIBILITY_EXPIRED = "scan_eligibility_expired"  # SCAN_ELIGIBILITY_EXPIRED
    LIMIT_EXCEEDED = "limit_exceeded"  # LIMIT_EXCEEDED
    IMAGE_ARCHIVED = "image_archived"  # IMAGE_ARCHIVED
    IMAGE_SIZE_EXCEEDED = "image_size_exceeded"  # IMAGE_SIZE_EXCEEDED
    UNKNOWN_STATUS = "unknown_status"  # a status this gatekeeper does not know yet
    NOT_SCANNED = "not_scanned"  # ScanNotFoundException: no scan was ever started
    IMAGE_NOT_FOUND = "image_not_found"  # the digest is not in the repository
    REPOSITORY_NOT_FOUND = "repository_not_found"
    NOT_APPLICABLE = "not_applicable"  # the image is not on a registry this source scans

    @property
    def findings_available(self) -> bool:
        return self in (ScanState.COMPLETE, ScanState.ACTIVE)


def format_timestamp(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z`` (what Rego's ``time.parse_rfc3339_ns`` reads)."""
    if value is None:
        return None
    from datetime import UTC

    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ScanFinding:
    """One vulnerability in one package (an enhanced finding naming two packages is two)."""

    id: str  # CVE / GHSA / ALAS id
    severity: str
    package: str | None
    installed_version: str | None
    fixed_version: str | None
    fix_available: bool | None  # None: the scanner does not say (basic scanning)
    exploit_available: bool | None
    score: float | None
    package_manager: str | None = None
    title: str | None = None

    def as_input(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "package": self.package,
            "installed_version": self.installed_version,
            "fixed_version": self.fixed_version,
            "fix_available": self.fix_available,
            "exploit_available": self.exploit_available,
            "score": self.score,
            "package_manager": self.package_manager,
            "title": self.title,
        }


@dataclass(frozen=True, slots=True)
class ScanReport:
    state: ScanState
    reason: str
    scanner: str  # "ecr"
    scan_type: str | None = None  # "basic" | "enhanced"
    status: str | None = None  # the scanner's own status word
    completed_at: datetime | None = None
    vulnerability_db_updated_at: datetime | None = None
    severity_counts: Mapping[str, int] = field(default_factory=dict)
    #: "reported" when the scanner gave counts, "computed" when derived from the findings.
    counts_source: str = "reported"
    findings: tuple[ScanFinding, ...] = ()
    finding_count: int = 0
    truncated: bool = False
    location: Mapping[str, str] = field(default_factory=dict)

    def as_input(self) -> dict[str, Any]:
        counts = {severity: int(self.severity_counts.get(severity, 0)) for severity in SEVERITIES}
        return {
            "state": self.state.value,
            "findings_available": self.state.findings_available,
            "reason": self.reason,
            "scanner": self.scanner,
            "scan_type": self.scan_type,
            "status": self.status,
            "completed_at": format_timestamp(self.completed_at),
            "vulnerability_db_updated_at": format_timestamp(self.vulnerability_db_updated_at),
            "severity_counts": counts,
            "counts_source": self.counts_source,
            "finding_count": self.finding_count,
            "findings": [finding.as_input() for finding in self.findings],
            "truncated": self.truncated,
            "location": dict(self.location),
        }


class ScanSource(Protocol):
    """Fetches the scan report of one image from a scanner.

    Return a report with a negative state for definitive facts (not scanned, failed, not
    applicable); raise :class:`~gatekeeper.errors.UpstreamUnavailableError` for transient
    failures and :class:`~gatekeeper.errors.ConfigurationError` for missing permissions.
    """

    name: str

    def fetch(
        self, reference: ImageReference, digest: Digest, context: EvidenceContext
    ) -> ScanReport: ...

    def applies_to(self, reference: ImageReference) -> bool: ...
