"""Decisions built from a request and written to the audit log (spans, observers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from opentelemetry import trace

from gatekeeper.domain import (
    AuditLog,
    Decision,
    EvaluationRequest,
    ImageResult,
    Verdict,
    Violation,
)
from gatekeeper.errors import GatekeeperError
from gatekeeper.evaluation.state import ServiceState

# The use case's logger: records keep the name they had before the split.
log = logging.getLogger("gatekeeper.service")


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



class _NoSpan:
    """The span context of a service whose tracer is OpenTelemetry's no-op one (tracing off):
    the no-op tracer still builds a context manager, attaches a context and computes the
    attributes on every decision; this does nothing, as cheaply as possible."""

    __slots__ = ()

    def __enter__(self) -> trace.Span:
        return trace.INVALID_SPAN

    def __exit__(self, *_exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


class _ThreadedAuditWrites:
    """An awaitable :meth:`AuditLog.record`: the write runs on threads of its own (not the
    shared pool), so the event loop never blocks on the database or its fsync and writes from
    concurrent requests still meet in one group commit. The one place to swap for an audit
    log's own awaitable writer (``record_async=`` of :class:`EvaluationService`)."""

    def __init__(self, audit_log: AuditLog, threads: int) -> None:
        self._audit = audit_log
        self._threads = max(1, threads)
        self._pool = self._new_pool()

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self._threads,
                                  thread_name_prefix="gatekeeper-audit-write")

    async def record(self, decision: Decision) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._audit.record, decision)

    def close(self) -> None:
        """Wait for the writes under way; a later write gets a new pool (threads start
        lazily, so an unused pool costs nothing)."""
        self._pool.shutdown(wait=True)
        self._pool = self._new_pool()



class Recording(ServiceState):
    """The recording part of :class:`gatekeeper.service.EvaluationService`."""

    def _span(
        self, name: str, attributes: Mapping[str, str] | None = None
    ) -> AbstractContextManager[trace.Span]:
        """``start_as_current_span``, or nothing at all when tracing is off."""
        if type(self._tracer) is trace.NoOpTracer:
            return _NO_SPAN
        return self._tracer.start_as_current_span(name, attributes=attributes)

    def _decision_span(self, request: EvaluationRequest) -> AbstractContextManager[trace.Span]:
        if type(self._tracer) is trace.NoOpTracer:
            return _NO_SPAN  # the attributes are not even computed
        return self._tracer.start_as_current_span(
            "gatekeeper.decision", attributes=_request_attributes(request))

    def _record(self, decision: Decision, *, record: bool = True) -> Decision:
        """Record ``decision`` (built by :meth:`_new_decision`) unless ``record`` is false;
        return it once the observers heard of it."""
        if record:
            with self._audit_span(decision):
                self._audit.record(decision)
        return self._recorded(decision)

    def _new_decision(
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
        evidence_documents: Mapping[str, Any] | None = None,
    ) -> Decision:
        return Decision(
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
            evidence_documents=evidence_documents or {},
        )

    def _audit_span(self, decision: Decision) -> AbstractContextManager[Any]:
        if type(self._tracer) is trace.NoOpTracer:
            return _NO_SPAN
        return self._traced_audit_write(decision)

    @contextmanager
    def _traced_audit_write(self, decision: Decision) -> Iterator[None]:
        with self._tracer.start_as_current_span(
            "gatekeeper.audit.write",
            attributes={"gatekeeper.decision_id": decision.decision_id},
        ) as audit_span:
            try:
                yield
            except GatekeeperError as exc:
                audit_span.set_status(trace.StatusCode.ERROR, exc.message)
                raise

    def _recorded(self, decision: Decision) -> Decision:
        """After the write (or none, ``record=False``): the span's attributes, the observers."""
        if type(self._tracer) is not trace.NoOpTracer:
            current = trace.get_current_span()
            current.set_attribute("gatekeeper.decision_id", decision.decision_id)
            current.set_attribute("gatekeeper.verdict", decision.verdict.value)
        for observer in self._observers:
            try:
                observer.decision_recorded(decision)
            except Exception:  # the decision is answered; telemetry must never undo it
                log.exception("observer %s failed on decision %s",
                              type(observer).__name__, decision.decision_id)
        return decision

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
        with self._decision_span(request):
            return self._record(self._new_decision(
                request,
                created_at=self._clock.now(),
                verdict=verdict,
                images=tuple(ImageResult(ref, ref.digest, {}) for ref in request.images),
                violations=tuple(violations),
                error=error,
            ), record=record)

    def record_decision(self, decision: Decision) -> None:
        """Record a decision :meth:`evaluate` made with ``record=False`` (the background
        compliance loop records a workload's decision only when its result changed)."""
        self._audit.record(decision)

    def get_decision(self, decision_id: str) -> Decision:
        return self._audit.get(decision_id)

