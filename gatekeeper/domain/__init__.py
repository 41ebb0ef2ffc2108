"""Pure domain types and ports: no I/O, no frameworks."""

from gatekeeper.domain.decision import (
    Decision,
    EnforcementMode,
    EvaluationRequest,
    ImageResult,
    PolicyResult,
    Source,
    Ticket,
    Verdict,
    Violation,
    apply_enforcement_mode,
    decision_from_dict,
)
from gatekeeper.domain.policy_input import SCHEMA_VERSION, build_policy_input
from gatekeeper.domain.ports import (
    AuditLog,
    Clock,
    DecisionPage,
    DecisionQuery,
    DigestResolver,
    EvidenceCollector,
    EvidenceContext,
    PolicyEngine,
)
from gatekeeper.domain.reference import Digest, ImageReference, parse_digest, parse_image_reference

__all__ = [
    "SCHEMA_VERSION",
    "AuditLog",
    "Clock",
    "Decision",
    "DecisionPage",
    "DecisionQuery",
    "Digest",
    "DigestResolver",
    "EnforcementMode",
    "EvaluationRequest",
    "EvidenceCollector",
    "EvidenceContext",
    "ImageReference",
    "ImageResult",
    "PolicyEngine",
    "PolicyResult",
    "Source",
    "Ticket",
    "Verdict",
    "Violation",
    "apply_enforcement_mode",
    "build_policy_input",
    "decision_from_dict",
    "parse_digest",
    "parse_image_reference",
]
