"""Decisions, verdicts, enforcement modes and the evaluation request: pure values."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, assert_never

from gatekeeper.domain.credentials import WorkloadRegistryLogins
from gatekeeper.domain.fields import check_request_text
from gatekeeper.domain.reference import Digest, ImageReference

__all__ = [
    "Decision",
    "EnforcementMode",
    "EvaluationRequest",
    "ImageResult",
    "PolicyResult",
    "Source",
    "Ticket",
    "Verdict",
    "Violation",
    "apply_enforcement_mode",
    "decision_from_dict",
]


class Verdict(enum.StrEnum):
    ALLOW = "allow"
    WARN = "warn"
    DENY = "deny"


class EnforcementMode(enum.StrEnum):
    """What policy violations do: ``enforce`` denies, ``warn`` admits with warnings,
    ``audit`` admits silently; every mode records the decision with all its violations."""

    ENFORCE = "enforce"
    WARN = "warn"
    AUDIT = "audit"


class Source(enum.StrEnum):
    PIPELINE = "pipeline"
    ADMISSION = "admission"
    #: Re-evaluation of a workload already stored in the API server (gatekeeper.compliance).
    BACKGROUND = "background"


@dataclass(frozen=True, slots=True)
class Ticket:
    """Execution-ticket correlation: ``intent_id -> plan_id -> ticket_id -> deploy_id``."""

    intent_id: str | None = None
    plan_id: str | None = None
    ticket_id: str | None = None
    deploy_id: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "intent_id": self.intent_id,
            "plan_id": self.plan_id,
            "ticket_id": self.ticket_id,
            "deploy_id": self.deploy_id,
        }


@dataclass(frozen=True, slots=True)
class Violation:
    """One finding of a policy. ``image`` is None when it applies to the whole request."""

    policy: str
    message: str
    image: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"policy": self.policy, "image": self.image, "message": self.message}


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """What the policy engine answered for one input document."""

    violations: tuple[Violation, ...]
    warnings: tuple[Violation, ...]
    revision: str
    #: Exceptions the policy applied, or found expired/revoked (``id``, ``ticket_id``,
    #: ``expires_at``, ``policy``, ``image``, ``status``).
    exceptions: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class EvaluationRequest:
    """A request to decide on a set of images, from either door."""

    images: tuple[ImageReference, ...]
    source: Source
    environment: str
    namespace: str | None = None
    ticket: Ticket = field(default_factory=Ticket)
    mode: EnforcementMode = EnforcementMode.ENFORCE
    dry_run: bool = False
    caller: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    #: Evidence that could not be gathered (registry unreachable ...) is a gate failure. False:
    #: it denies in every mode (fail closed). True: it counts as a violation like any other,
    #: so it denies in ``enforce`` and is reported in ``warn`` / ``audit`` (fail open there).
    gate_failure_admits: bool = False
    #: The workload's own registry logins (its pull secrets), used for this evaluation's
    #: evidence only; never recorded (see gatekeeper.domain.credentials).
    registry_logins: WorkloadRegistryLogins | None = field(
        default=None, repr=False, compare=False
    )
    #: The workload as ``input.review`` (:func:`gatekeeper.domain.workload.build_review`), or
    #: None when the request names images only.
    review: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        """Parse at the edge, for both doors: see :mod:`gatekeeper.domain.fields`."""
        check_request_text(self.environment, "environment")
        check_request_text(self.namespace, "namespace")
        check_request_text(self.caller, "caller")
        for name, value in self.ticket.as_dict().items():
            check_request_text(value, f"ticket.{name}")


@dataclass(frozen=True, slots=True)
class ImageResult:
    """One image as decided: the reference as given, the digest verified, the evidence used."""

    reference: ImageReference
    digest: Digest | None
    evidence: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference.original,
            "digest": str(self.digest) if self.digest else None,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one evaluation; what both doors answer and the audit trail records."""

    decision_id: str
    created_at: datetime
    source: Source
    verdict: Verdict
    mode: EnforcementMode
    environment: str
    namespace: str | None
    ticket: Ticket
    images: tuple[ImageResult, ...]
    violations: tuple[Violation, ...]
    warnings: tuple[Violation, ...]
    policy_revision: str | None
    dry_run: bool = False
    caller: str | None = None
    #: Set when the decision is a fail-closed deny because something broke (engine down ...).
    error: str | None = None
    latency_ms: float | None = None
    policy_input: Mapping[str, Any] | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    exceptions: tuple[Mapping[str, Any], ...] = ()
    #: Evidence documents (sha256 -> document) that ``policy_input`` and ``images`` reference
    #: by hash; stored once each by the audit trail (gatekeeper/domain/evidence_documents.py).
    evidence_documents: Mapping[str, Any] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.verdict is not Verdict.DENY

    def as_dict(self) -> dict[str, Any]:
        """The public JSON document of the decision (API, CLI, audit)."""
        return {
            "decision_id": self.decision_id,
            "verdict": self.verdict.value,
            "allowed": self.allowed,
            "mode": self.mode.value,
            "violations": [v.as_dict() for v in self.violations],
            "warnings": [w.as_dict() for w in self.warnings],
            "exceptions": [dict(e) for e in self.exceptions],
            "images": [image.as_dict() for image in self.images],
            "policy_revision": self.policy_revision,
            "source": self.source.value,
            "environment": self.environment,
            "namespace": self.namespace,
            "ticket": self.ticket.as_dict(),
            "dry_run": self.dry_run,
            "caller": self.caller,
            "error": self.error,
            "latency_ms": self.latency_ms,
            "context": dict(self.context),
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
        }


def apply_enforcement_mode(
    mode: EnforcementMode, violations: tuple[Violation, ...], warnings: tuple[Violation, ...]
) -> Verdict:
    """Turn the policy's findings into a verdict under ``mode`` (exhaustive; fails closed)."""
    if mode is EnforcementMode.ENFORCE:
        if violations:
            return Verdict.DENY
        return Verdict.WARN if warnings else Verdict.ALLOW
    if mode is EnforcementMode.WARN or mode is EnforcementMode.AUDIT:
        return Verdict.WARN if (violations or warnings) else Verdict.ALLOW
    assert_never(mode)


def decision_from_dict(
    document: Mapping[str, Any], policy_input: Mapping[str, Any] | None = None
) -> Decision:
    """Rebuild a :class:`Decision` from :meth:`Decision.as_dict` output (audit read path)."""
    from gatekeeper.domain.reference import parse_digest, parse_image_reference

    def violations(items: Any) -> tuple[Violation, ...]:
        return tuple(Violation(i["policy"], i["message"], i.get("image")) for i in items)

    images = tuple(
        ImageResult(
            parse_image_reference(item["reference"]),
            parse_digest(item["digest"]) if item.get("digest") else None,
            item.get("evidence") or {},
        )
        for item in document["images"]
    )
    created = document["created_at"].replace("Z", "+00:00")
    return Decision(
        decision_id=document["decision_id"],
        created_at=datetime.fromisoformat(created),
        source=Source(document["source"]),
        verdict=Verdict(document["verdict"]),
        mode=EnforcementMode(document.get("mode", "enforce")),
        environment=document["environment"],
        namespace=document.get("namespace"),
        ticket=Ticket(**document.get("ticket", {})),
        images=images,
        violations=violations(document.get("violations", [])),
        warnings=violations(document.get("warnings", [])),
        policy_revision=document.get("policy_revision"),
        dry_run=bool(document.get("dry_run", False)),
        caller=document.get("caller"),
        error=document.get("error"),
        latency_ms=document.get("latency_ms"),
        policy_input=policy_input,
        context=document.get("context") or {},
        exceptions=tuple(document.get("exceptions") or ()),
    )
