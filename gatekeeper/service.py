"""The use case: evidence -> policy -> decision -> audit. Talks to ports only.

Both doors (the REST API / CLI for pipelines, the admission webhook for Kubernetes) call
:meth:`EvaluationService.evaluate`; so both answer the same decision and write the same record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import uuid6

from gatekeeper.domain import (
    AuditLog,
    Decision,
    Digest,
    DigestResolver,
    EnforcementMode,
    EvaluationRequest,
    EvidenceCollector,
    EvidenceContext,
    ImageReference,
    ImageResult,
    PolicyEngine,
    Source,
    Verdict,
    Violation,
    apply_enforcement_mode,
    build_policy_input,
)
from gatekeeper.domain.evidence import EvidenceError, EvidenceSkipped
from gatekeeper.domain.ports import Clock, PolicyPrefilter
from gatekeeper.errors import GatekeeperError, PolicyEngineError
from gatekeeper.evidence_cache import EvidenceCache, EvidenceKey

__all__ = [
    "DEADLINE_POLICY",
    "ENGINE_POLICY",
    "EVIDENCE_POLICY",
    "INPUT_POLICY",
    "EvaluationService",
    "SystemClock",
    "new_decision_id",
]

log = logging.getLogger(__name__)

#: ``policy`` of violations the gatekeeper itself raises when evidence could not be gathered.
EVIDENCE_POLICY = "gatekeeper.evidence"
#: ``policy`` of the violation recorded when the policy engine could not decide.
ENGINE_POLICY = "gatekeeper.engine"
#: ``policy`` of violations for input refused before evaluation (a malformed image reference).
INPUT_POLICY = "gatekeeper.input"
#: ``policy`` of the violation recorded when an admission answer had to be given before the
#: evaluation finished (its budget ran out).
DEADLINE_POLICY = "gatekeeper.deadline"


class SystemClock:
    """The production :class:`~gatekeeper.domain.ports.Clock`: UTC wall clock, monotonic."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


def new_decision_id() -> str:
    """A UUIDv7 (time-ordered, RFC 9562) so ids sort roughly by creation time."""
    return str(uuid6.uuid7())


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


class EvaluationService:
    """Gathers evidence for each image, asks the policy engine, records the decision."""

    def __init__(
        self,
        *,
        policy_engine: PolicyEngine,
        audit_log: AuditLog,
        collectors: Sequence[EvidenceCollector] = (),
        digest_resolver: DigestResolver | None = None,
        clock: Clock | None = None,
        id_factory: Callable[[], str] = new_decision_id,
        prefilter: PolicyPrefilter | None = None,
        evidence_cache: EvidenceCache | None = None,
    ) -> None:
        self._engine = policy_engine
        self._audit = audit_log
        self._collectors = tuple(collectors)
        self._resolver = digest_resolver
        self._clock: Clock = clock or SystemClock()
        self._new_id = id_factory
        self._prefilter = prefilter
        self._evidence_cache = evidence_cache

    def evaluate(
        self, request: EvaluationRequest, *, deadline: float | None = None, record: bool = True
    ) -> Decision:
        """Decide on ``request`` and record the decision before returning it.

        Never raises for a deny. Raises :class:`~gatekeeper.errors.StorageError` when the
        decision cannot be recorded: an unrecorded decision must not be answered.
        ``record=False`` (dry-run admissions when so configured) decides without recording.

        (1) Network-free rules first (``data.gatekeeper.main.prefilter``, enforce mode only): an
            image they deny is not fetched from any registry.
        (2) Evidence per image (from the cache of admitted digests for admission requests).
        (3) One policy evaluation over the whole input; the reasons that decided an image
            without evidence come first among its violations.
        (4) Should the full policy not deny an image whose evidence was skipped (a prefilter
            that is not a subset of ``deny``), its evidence is gathered and the policy asked
            again: a skipped image is never admitted.
        """
        started = self._clock.monotonic()
        created_at = self._clock.now()
        context = EvidenceContext(
            environment=request.environment, namespace=request.namespace, deadline=deadline
        )
        decisive = self._prefilter_violations(request, created_at)  # (1)
        gathered = [
            self._gather(ref, context, request, decisive.get(ref.original, ()))
            for ref in request.images
        ]  # (2)
        while True:
            outcome = self._decide(request, gathered, created_at, decisive)  # (3)
            denied_images = {v.image for v in outcome.violations}
            undecided = [g for g in gathered if g.skipped and g.reference.original not in
                         denied_images]
            if not undecided or outcome.error is not None:
                break
            log.warning("prefilter denied %s but the policy did not: gathering its evidence",
                        ", ".join(g.reference.original for g in undecided))
            decisive = {}
            gathered = [self._gather(g.reference, context, request, ()) if g.skipped else g
                        for g in gathered]  # (4)
        if request.source is Source.ADMISSION and outcome.verdict is not Verdict.DENY:
            self._remember_evidence(request, gathered)
        return self._record(
            request,
            created_at=created_at,
            verdict=outcome.verdict,
            images=tuple(ImageResult(g.reference, g.digest, g.evidence) for g in gathered),
            violations=outcome.violations,
            warnings=outcome.warnings,
            revision=outcome.revision,
            error=outcome.error,
            latency_ms=round((self._clock.monotonic() - started) * 1000, 3),
            policy_input=outcome.policy_input,
            exceptions=outcome.exceptions,
            record=record,
        )

    def _decide(
        self,
        request: EvaluationRequest,
        gathered: Sequence[_GatheredImage],
        created_at: datetime,
        decisive: Mapping[str, tuple[Violation, ...]],
    ) -> _Outcome:
        policy_input = build_policy_input(
            request, [(g.reference, g.digest, g.evidence) for g in gathered], created_at
        )
        evidence_violations = tuple(
            Violation(EVIDENCE_POLICY, reason, g.reference.original)
            for g in gathered
            for reason in g.failures
        )
        try:
            result = self._engine.evaluate(policy_input)
        except PolicyEngineError as exc:
            log.error("policy engine failed: %s", exc.render())
            error = f"policy engine unavailable: {exc.message}"
            failed = (*evidence_violations, Violation(ENGINE_POLICY, error))
            verdict = (apply_enforcement_mode(request.mode, failed, ())
                       if request.gate_failure_admits else Verdict.DENY)
            return _Outcome(verdict, failed, (), None, error, policy_input, ())
        violations = evidence_violations + _decisive_first(result.violations, decisive)
        verdict = apply_enforcement_mode(request.mode, violations, result.warnings)
        if evidence_violations and not request.gate_failure_admits:
            verdict = Verdict.DENY  # evidence we could not gather fails closed in every mode
        return _Outcome(verdict, violations, result.warnings, result.revision, None,
                        policy_input, result.exceptions)

    def _prefilter_violations(
        self, request: EvaluationRequest, created_at: datetime
    ) -> dict[str, tuple[Violation, ...]]:
        """(1) Violations of the network-free rules, by image, when they will deny anyway."""
        if (
            self._prefilter is None
            or request.mode is not EnforcementMode.ENFORCE
            or all(self._nothing_to_fetch(ref, request) for ref in request.images)
        ):
            return {}  # nothing would be fetched: the policy evaluation alone decides
        document = build_policy_input(
            request, [(ref, ref.digest, {}) for ref in request.images], created_at
        )
        document["prefilter"] = {"digests_resolved": self._resolver is not None}
        try:
            found = self._prefilter.prefilter(document)
        except PolicyEngineError as exc:  # the full evaluation decides (and fails closed)
            log.warning("policy prefilter failed, gathering all evidence: %s", exc.message)
            return {}
        by_image: dict[str, tuple[Violation, ...]] = {}
        for violation in found:
            if violation.image is not None:
                by_image[violation.image] = (*by_image.get(violation.image, ()), violation)
        return by_image

    def _record(
        self,
        request: EvaluationRequest,
        *,
        created_at: datetime,
        verdict: Verdict,
        images: tuple[ImageResult, ...],
        violations: tuple[Violation, ...],
        warnings: tuple[Violation, ...] = (),
        revision: str | None = None,
        error: str | None = None,
        latency_ms: float = 0.0,
        policy_input: Mapping[str, Any] | None = None,
        exceptions: tuple[Mapping[str, Any], ...] = (),
        record: bool = True,
    ) -> Decision:
        """Build the decision from the request's own fields, record it, return it."""
        decision = Decision(
            decision_id=self._new_id(),
            created_at=created_at,
            source=request.source,
            verdict=verdict,
            mode=request.mode,
            environment=request.environment,
            namespace=request.namespace,
            ticket=request.ticket,
            images=images,
            violations=violations,
            warnings=warnings,
            policy_revision=revision,
            dry_run=request.dry_run,
            caller=request.caller,
            error=error,
            latency_ms=latency_ms,
            policy_input=policy_input,
            context=request.context,
            exceptions=exceptions,
        )
        if record:
            self._audit.record(decision)
        return decision

    def _gather(
        self,
        reference: ImageReference,
        context: EvidenceContext,
        request: EvaluationRequest,
        decisive: tuple[Violation, ...],
    ) -> _GatheredImage:
        if decisive:  # (1) denied by network-free rules: nothing is fetched for it
            reason = "not gathered: " + "; ".join(v.message for v in decisive)
            skipped = EvidenceSkipped(reason)
            return _GatheredImage(
                reference, reference.digest,
                {collector.name: skipped.as_input() for collector in self._collectors},
                (), skipped=True,
            )
        digest = reference.digest
        evidence: dict[str, Any] = {}
        failures: list[str] = []
        if digest is None and self._resolver is not None:
            try:
                digest = self._resolver.resolve(reference, context)
            except GatekeeperError as exc:
                failures.append(f"digest not resolved: {exc.message}")
        if digest is not None and request.source is Source.ADMISSION and self._evidence_cache:
            cached = self._evidence_cache.get(_evidence_key(reference, digest, request))
            if cached is not None:
                return _GatheredImage(reference, digest, cached, (), cached=True)
        for collector in self._collectors:
            try:
                section: Mapping[str, Any] = collector.collect(reference, digest, context)
                evidence[collector.name] = dict(section)
            except GatekeeperError as exc:
                evidence[collector.name] = EvidenceError(exc.message).as_input()
                failures.append(f"{collector.name} evidence not gathered: {exc.message}")
        return _GatheredImage(reference, digest, evidence, tuple(failures))

    def _nothing_to_fetch(self, reference: ImageReference, request: EvaluationRequest) -> bool:
        """True when gathering ``reference`` needs no registry: pinned, and either no
        collector is configured or its evidence is in the cache of admitted digests."""
        if reference.digest is None:
            return self._resolver is None and not self._collectors
        if not self._collectors:
            return True
        return (
            request.source is Source.ADMISSION
            and self._evidence_cache is not None
            and self._evidence_cache.contains(_evidence_key(reference, reference.digest, request))
        )

    def _remember_evidence(
        self, request: EvaluationRequest, gathered: Sequence[_GatheredImage]
    ) -> None:
        if self._evidence_cache is None:
            return
        for image in gathered:
            if image.digest is None or image.failures or image.skipped or image.cached:
                continue
            self._evidence_cache.put(
                _evidence_key(image.reference, image.digest, request), image.evidence
            )

    def record_rejection(
        self, request: EvaluationRequest, violations: Sequence[Violation]
    ) -> Decision:
        """Record a deny for input refused before evaluation (no evidence, no policy), so that
        such answers are in the trail like every other decision."""
        return self.record_without_evaluation(request, verdict=Verdict.DENY, violations=violations)

    def record_without_evaluation(
        self,
        request: EvaluationRequest,
        *,
        verdict: Verdict,
        violations: Sequence[Violation],
        error: str | None = None,
        record: bool = True,
    ) -> Decision:
        """Record an answer the gate gave without a policy decision (refused input, a deadline
        that ran out, an update that changed no image); ``violations`` say why a deny or warn
        was given. Raises StorageError like :meth:`evaluate`."""
        if not violations and verdict is not Verdict.ALLOW:
            raise ValueError("a deny or warn without evaluation needs at least one violation")
        return self._record(
            request,
            created_at=self._clock.now(),
            verdict=verdict,
            images=tuple(ImageResult(ref, ref.digest, {}) for ref in request.images),
            violations=tuple(violations),
            error=error,
            record=record,
        )

    def policy_input(
        self, request: EvaluationRequest, *, now: datetime, deadline: float | None = None
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The input document :meth:`evaluate` would give the policy for ``request`` at ``now``
        (evidence gathered the same way), and what could not be gathered. Nothing is recorded."""
        context = EvidenceContext(
            environment=request.environment, namespace=request.namespace, deadline=deadline
        )
        # Full evidence for every image: `policy input` shows what the policy could read.
        gathered = [self._gather(ref, context, request, ()) for ref in request.images]
        document = build_policy_input(
            request, [(g.reference, g.digest, g.evidence) for g in gathered], now
        )
        return dict(document), tuple(reason for g in gathered for reason in g.failures)

    def get_decision(self, decision_id: str) -> Decision:
        return self._audit.get(decision_id)


@dataclass(frozen=True, slots=True)
class _Outcome:
    verdict: Verdict
    violations: tuple[Violation, ...]
    warnings: tuple[Violation, ...]
    revision: str | None
    error: str | None
    policy_input: Mapping[str, Any]
    exceptions: tuple[Mapping[str, Any], ...]


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


def _evidence_key(
    reference: ImageReference, digest: Digest, request: EvaluationRequest
) -> EvidenceKey:
    return EvidenceKey(reference.name, str(digest), request.environment, request.namespace)
