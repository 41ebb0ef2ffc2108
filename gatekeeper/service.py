"""The use case: evidence -> policy -> decision -> audit. Talks to ports only.

Both doors (the REST API / CLI for pipelines, the admission webhook for Kubernetes) call
:meth:`EvaluationService.evaluate`; so both answer the same decision and write the same record.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace  # the API only: the SDK and exporter live in the adapters

from gatekeeper.domain import (
    AuditLog,
    Decision,
    Digest,
    DigestResolver,
    EvaluationRequest,
    EvidenceCollector,
    EvidenceContext,
    ImageReference,
    ImageResult,
    PolicyEngine,
    Verdict,
    Violation,
    apply_enforcement_mode,
    build_policy_input,
)
from gatekeeper.domain.ports import EvaluationObserver
from gatekeeper.errors import GatekeeperError, PolicyEngineError

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
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


def new_decision_id() -> str:
    """A UUIDv7 (time-ordered, RFC 9562) so ids sort roughly by creation time."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= (rand >> 68) << 64 & (0xFFF << 64)
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def _request_attributes(request: EvaluationRequest) -> dict[str, str]:
    """Span attributes that correlate a decision with the platform's ticket chain."""
    attributes = {
        "gatekeeper.source": request.source.value,
        "gatekeeper.environment": request.environment,
        "gatekeeper.mode": request.mode.value,
        "gatekeeper.image_count": str(len(request.images)),
    }
    if request.namespace:
        attributes["gatekeeper.namespace"] = request.namespace
    for name, value in request.ticket.as_dict().items():
        if value:
            attributes[name] = value  # intent_id, plan_id, ticket_id, deploy_id
    return attributes


def _outcome_of(section: Mapping[str, Any]) -> str:
    """A short, bounded label for a collector's result (its own status or state word)."""
    for key in ("status", "state"):
        value = section.get(key)
        if isinstance(value, str) and value and len(value) <= 40:
            return value
    return "ok"


@dataclass(frozen=True, slots=True)
class _GatheredImage:
    reference: ImageReference
    digest: Digest | None
    evidence: dict[str, Any]
    failures: tuple[str, ...]


class _Step:
    """The outcome of one evidence step, set by the code inside the step."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.outcome = "ok"

    def fail(self, reason: str) -> None:
        self.outcome = "error"
        self.span.set_status(trace.StatusCode.ERROR, reason)


class EvaluationService:
    """Gathers evidence for each image, asks the policy engine, records the decision."""

    def __init__(
        self,
        *,
        policy_engine: PolicyEngine,
        audit_log: AuditLog,
        collectors: Sequence[EvidenceCollector] = (),
        digest_resolver: DigestResolver | None = None,
        clock: SystemClock | None = None,
        id_factory: Callable[[], str] = new_decision_id,
        tracer: trace.Tracer | None = None,
        observers: Sequence[EvaluationObserver] = (),
    ) -> None:
        self._engine = policy_engine
        self._audit = audit_log
        self._collectors = tuple(collectors)
        self._resolver = digest_resolver
        self._clock = clock or SystemClock()
        self._new_id = id_factory
        self._tracer = tracer or trace.NoOpTracer()
        self._observers = tuple(observers)

    def evaluate(self, request: EvaluationRequest, *, deadline: float | None = None) -> Decision:
        """Decide on ``request`` and record the decision before returning it.

        Never raises for a deny. Raises :class:`~gatekeeper.errors.StorageError` when the
        decision cannot be recorded: an unrecorded decision must not be answered.
        """
        # One trace per decision: a child of the caller's span when the request carried a
        # W3C traceparent (the HTTP instrumentation made it current), else a new root.
        with self._tracer.start_as_current_span(
            "gatekeeper.decision", attributes=_request_attributes(request)
        ):
            return self._evaluate(request, deadline)

    def _evaluate(self, request: EvaluationRequest, deadline: float | None) -> Decision:
        started = self._clock.monotonic()
        created_at = self._clock.now()
        context = EvidenceContext(
            environment=request.environment, namespace=request.namespace, deadline=deadline
        )
        gathered = [self._gather(ref, context) for ref in request.images]
        policy_input = build_policy_input(
            request, [(g.reference, g.digest, g.evidence) for g in gathered], created_at
        )
        evidence_violations = tuple(
            Violation(EVIDENCE_POLICY, reason, g.reference.original)
            for g in gathered
            for reason in g.failures
        )
        error: str | None = None
        try:
            with self._tracer.start_as_current_span("gatekeeper.policy.opa") as opa_span:
                try:
                    result = self._engine.evaluate(policy_input)
                except PolicyEngineError as exc:
                    opa_span.set_status(trace.StatusCode.ERROR, exc.message)
                    raise
                opa_span.set_attribute("gatekeeper.policy_revision", result.revision or "")
                opa_span.set_attribute("gatekeeper.violation_count", len(result.violations))
            violations = evidence_violations + result.violations
            warnings = result.warnings
            revision: str | None = result.revision
            exceptions = result.exceptions
            verdict = apply_enforcement_mode(request.mode, violations, warnings)
            if evidence_violations:
                verdict = Verdict.DENY  # evidence we could not gather fails closed in every mode
        except PolicyEngineError as exc:
            log.error("policy engine failed: %s", exc.render())
            error = f"policy engine unavailable: {exc.message}"
            violations = (*evidence_violations, Violation(ENGINE_POLICY, error))
            warnings = ()
            revision = None
            exceptions = ()
            verdict = Verdict.DENY

        return self._record(
            request,
            created_at=created_at,
            verdict=verdict,
            images=tuple(ImageResult(g.reference, g.digest, g.evidence) for g in gathered),
            violations=violations,
            warnings=warnings,
            revision=revision,
            error=error,
            latency_ms=round((self._clock.monotonic() - started) * 1000, 3),
            policy_input=policy_input,
            exceptions=exceptions,
        )

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
        current = trace.get_current_span()
        current.set_attribute("gatekeeper.decision_id", decision.decision_id)
        current.set_attribute("gatekeeper.verdict", decision.verdict.value)
        with self._tracer.start_as_current_span(
            "gatekeeper.audit.write",
            attributes={"gatekeeper.decision_id": decision.decision_id},
        ) as audit_span:
            try:
                self._audit.record(decision)
            except GatekeeperError as exc:
                audit_span.set_status(trace.StatusCode.ERROR, exc.message)
                raise
        for observer in self._observers:
            try:
                observer.decision_recorded(decision)
            except Exception:  # the decision is recorded; telemetry must never undo the answer
                log.exception("observer %s failed on decision %s",
                              type(observer).__name__, decision.decision_id)
        return decision

    def _gather(self, reference: ImageReference, context: EvidenceContext) -> _GatheredImage:
        digest = reference.digest
        evidence: dict[str, Any] = {}
        failures: list[str] = []
        image = {"gatekeeper.image": reference.original}
        if digest is None and self._resolver is not None:
            with self._step("digest", image) as step:
                try:
                    digest = self._resolver.resolve(reference, context)
                    step.outcome = "resolved"
                except GatekeeperError as exc:
                    step.fail(exc.message)
                    failures.append(f"digest not resolved: {exc.message}")
        for collector in self._collectors:
            with self._step(collector.name, image) as step:
                try:
                    section: Mapping[str, Any] = collector.collect(reference, digest, context)
                    evidence[collector.name] = dict(section)
                    step.outcome = _outcome_of(section)
                except GatekeeperError as exc:
                    step.fail(exc.message)
                    evidence[collector.name] = {"status": "error", "reason": exc.message}
                    failures.append(f"{collector.name} evidence not gathered: {exc.message}")
        return _GatheredImage(reference, digest, evidence, tuple(failures))

    @contextmanager
    def _step(self, name: str, attributes: Mapping[str, str]) -> Iterator[_Step]:
        """A span and a timing for one evidence step; the observers hear its outcome."""
        started = self._clock.monotonic()
        with self._tracer.start_as_current_span(
            f"gatekeeper.evidence.{name}", attributes=dict(attributes)
        ) as span:
            step = _Step(span)
            yield step
            span.set_attribute("gatekeeper.outcome", step.outcome)
        seconds = self._clock.monotonic() - started
        for observer in self._observers:
            try:
                observer.evidence_step(name, step.outcome, seconds)
            except Exception:  # telemetry must never change a decision
                log.exception("observer %s failed on step %s", type(observer).__name__, name)

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
    ) -> Decision:
        """Record an answer the gate gave without a policy decision (refused input, a deadline
        that ran out); ``violations`` say why. Raises StorageError like :meth:`evaluate`."""
        if not violations:
            raise ValueError("an answer without evaluation needs at least one violation")
        with self._tracer.start_as_current_span(
            "gatekeeper.decision", attributes=_request_attributes(request)
        ):
            return self._record(
            request,
            created_at=self._clock.now(),
            verdict=verdict,
                images=tuple(ImageResult(ref, ref.digest, {}) for ref in request.images),
                violations=tuple(violations),
                error=error,
            )

    def get_decision(self, decision_id: str) -> Decision:
        return self._audit.get(decision_id)
