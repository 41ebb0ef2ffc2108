"""What a policy result (or a failed engine) makes of the gathered images: the outcome."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gatekeeper.domain import (
    Digest,
    EvaluationRequest,
    ImageReference,
    ImageResult,
    PolicyResult,
    Verdict,
    Violation,
    apply_enforcement_mode,
)
from gatekeeper.errors import PolicyEngineError

# The use case's logger: records keep the name they had before the split.
log = logging.getLogger("gatekeeper.service")

#: ``policy`` of violations the gatekeeper itself raises when evidence could not be gathered.
EVIDENCE_POLICY = "gatekeeper.evidence"
#: ``policy`` of the violation recorded when the policy engine could not decide.
ENGINE_POLICY = "gatekeeper.engine"
#: ``policy`` of violations for input refused before evaluation (a malformed image reference).
INPUT_POLICY = "gatekeeper.input"
#: ``policy`` of the violation recorded when an admission answer had to be given before the
#: evaluation finished (its budget ran out).
DEADLINE_POLICY = "gatekeeper.deadline"


@dataclass(frozen=True, slots=True)
class _GatheredImage:
    reference: ImageReference
    digest: Digest | None
    evidence: dict[str, Any]
    failures: tuple[str, ...]
    #: Evidence came from the cache of admitted digests (no registry round trip).
    cached: bool = False
    #: Not gathered: network-free rules already deny the image (see ``_prefilter``).
    skipped: bool = False



@dataclass(frozen=True, slots=True)
class _Outcome:
    verdict: Verdict
    violations: tuple[Violation, ...]
    warnings: tuple[Violation, ...]
    revision: str | None
    error: str | None
    policy_input: Mapping[str, Any]
    exceptions: tuple[Mapping[str, Any], ...]
    evidence_documents: Mapping[str, Any]

    def images(self, gathered: Sequence[_GatheredImage]) -> tuple[ImageResult, ...]:
        """The images as decided, their evidence as the policy input carries it (large
        documents by reference, as in ``policy_input``)."""
        sent = self.policy_input.get("images") or []
        return tuple(
            ImageResult(g.reference, g.digest, sent[i]["evidence"] if i < len(sent) else
                        g.evidence)
            for i, g in enumerate(gathered)
        )



def _evidence_violations(gathered: Sequence[_GatheredImage]) -> tuple[Violation, ...]:
    return tuple(
        Violation(EVIDENCE_POLICY, reason, g.reference.original)
        for g in gathered
        for reason in g.failures
    )


def _engine_failed(
    request: EvaluationRequest,
    gathered: Sequence[_GatheredImage],
    policy_input: Mapping[str, Any],
    documents: Mapping[str, Any],
    exc: PolicyEngineError,
) -> _Outcome:
    log.error("policy engine failed: %s", exc.render())
    error = f"policy engine unavailable: {exc.message}"
    failed = (*_evidence_violations(gathered), Violation(ENGINE_POLICY, error))
    verdict = (apply_enforcement_mode(request.mode, failed, ())
               if request.gate_failure_admits else Verdict.DENY)
    return _Outcome(verdict, failed, (), None, error, policy_input, (), documents)


def _interpret(
    request: EvaluationRequest,
    gathered: Sequence[_GatheredImage],
    policy_input: Mapping[str, Any],
    documents: Mapping[str, Any],
    result: PolicyResult,
    decisive: Mapping[str, tuple[Violation, ...]],
) -> _Outcome:
    evidence_violations = _evidence_violations(gathered)
    violations = evidence_violations + _decisive_first(result.violations, decisive)
    verdict = apply_enforcement_mode(request.mode, violations, result.warnings)
    if evidence_violations and not request.gate_failure_admits:
        verdict = Verdict.DENY  # evidence we could not gather fails closed in every mode
    return _Outcome(verdict, violations, result.warnings, result.revision, None,
                    policy_input, result.exceptions, documents)


def _decisive_first(
    violations: tuple[Violation, ...], decisive: Mapping[str, tuple[Violation, ...]]
) -> tuple[Violation, ...]:
    """Per image, the violations the network-free rules found come first (the policy's order
    otherwise), so that the reason that decided an image leads its lines in the answer."""
    if not decisive:
        return violations
    first = {v for found in decisive.values() for v in found}
    order = {image: index for index, image in enumerate(dict.fromkeys(v.image for v in violations))}
    return tuple(sorted(violations, key=lambda v: (order[v.image], 0 if v in first else 1)))

