"""The warm admission path: evaluate on the event loop when only the policy engine is asked."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import trace

from gatekeeper.domain import (
    Decision,
    Digest,
    EnforcementMode,
    EvaluationRequest,
    EvidenceContext,
    ImageReference,
    ImageResult,
    Source,
    Verdict,
    Violation,
)
from gatekeeper.errors import GatekeeperError, PolicyEngineError
from gatekeeper.evaluation.gathering import Gathering, _evidence_key
from gatekeeper.evaluation.outcome import (
    _decisive_first,
    _engine_failed,
    _GatheredImage,
    _interpret,
)
from gatekeeper.evaluation.recording import Recording
from gatekeeper.evaluation.tag_digests import REMEMBERED_OUTCOME

# The use case's logger: records keep the name they had before the split.
log = logging.getLogger("gatekeeper.service")


def _resolver_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="gatekeeper-resolve")



class WarmAdmission(Gathering, Recording):
    """The event-loop part of :class:`gatekeeper.service.EvaluationService`."""

    async def _warm_evidence(
        self, request: EvaluationRequest, deadline: float | None
    ) -> list[_GatheredImage] | None:
        """Every image's evidence from the cache of admitted digests (or no collector
        configured), or None when one needs a fetch. Tags are resolved first (one registry
        request each, on the service's resolver threads) only when every tag names a
        repository admitted here lately; a failed resolution is also None (the worker-thread
        path then decides, saying why)."""
        if (self._async_engine is None or request.source is not Source.ADMISSION
                or request.registry_logins is not None):
            return None
        tags = [ref for ref in request.images if ref.digest is None]
        resolved: dict[str, Digest] = {}
        if tags:
            if (self._resolver is None
                    or not all(self._admitted_lately(ref, request) for ref in tags)):
                return None
            # remembered tags on the loop (no task, no thread hop); the others on the
            # service's resolver threads, concurrently
            memory = self._tag_memory(request)
            to_resolve: list[ImageReference] = []
            for ref in tags:
                remembered = memory.recall(ref) if memory is not None else None
                if remembered is None:
                    to_resolve.append(ref)
                else:
                    self._remembered_step(ref)
                    resolved[ref.original] = remembered
            if to_resolve:
                context = EvidenceContext(environment=request.environment,
                                          namespace=request.namespace, deadline=deadline)
                loop = asyncio.get_running_loop()
                outcomes = await asyncio.gather(*(
                    loop.run_in_executor(self._resolve_pool, contextvars.copy_context().run,
                                         self._resolve_step, ref, context, request)
                    for ref in to_resolve))
                for ref, digest in zip(to_resolve, outcomes, strict=True):
                    if digest is None:
                        return None
                    resolved[ref.original] = digest
        gathered: list[_GatheredImage] = []
        for reference in request.images:
            digest = reference.digest or resolved[reference.original]
            if not self._collectors:
                gathered.append(_GatheredImage(reference, digest, {}, ()))
                continue
            cached = (self._evidence_cache.get(_evidence_key(reference, digest, request))
                      if self._evidence_cache is not None else None)
            if cached is None:
                return None
            gathered.append(_GatheredImage(reference, digest, cached, (), cached=True))
        return gathered

    def _remembered_step(self, reference: ImageReference) -> None:
        """The digest step of a remembered tag: a span when tracing is on; the observers
        (metrics) hear of it either way, as of a step that took no time."""
        if type(self._tracer) is not trace.NoOpTracer:
            with self._step("digest", {"gatekeeper.image": reference.original}) as step:
                step.outcome = REMEMBERED_OUTCOME
            return
        for observer in self._observers:
            try:
                observer.evidence_step("digest", REMEMBERED_OUTCOME, 0.0)
            except Exception:  # telemetry must never change a decision
                log.exception("observer %s failed on step digest", type(observer).__name__)

    def _resolve_step(
        self, reference: ImageReference, context: EvidenceContext, request: EvaluationRequest
    ) -> Digest | None:
        assert self._resolver is not None
        with self._step("digest", {"gatekeeper.image": reference.original}) as step:
            try:
                digest, step.outcome = self._resolve_tag(reference, context, request)
            except GatekeeperError as exc:
                step.fail(exc.message)
                return None
            return digest

    async def evaluate_warm(
        self, request: EvaluationRequest, *, deadline: float | None = None, record: bool = True
    ) -> Decision | None:
        """:meth:`evaluate` on the running event loop when nothing needs the network but the
        policy engine: every image pinned and its evidence cached (controller-made objects,
        the validating webhook, re-admissions), or tags of repositories admitted here lately
        whose resolved digests' evidence is cached. One policy query (the prefilter is
        skipped, as :meth:`evaluate` skips it then), the audit write awaited (durable before
        the answer). None, with nothing recorded, when some image needs more than its digest
        from the network: the caller runs :meth:`evaluate` in a worker thread instead."""
        gathered = await self._warm_evidence(request, deadline)
        if gathered is None:
            return None
        assert self._async_engine is not None
        with self._decision_span(request):
            started = self._clock.monotonic()
            created_at = self._clock.now()
            policy_input, documents = self._input(request, gathered, created_at)
            try:
                with self._span("gatekeeper.policy.opa") as opa_span:
                    try:
                        result = await self._async_engine.evaluate_async(
                            policy_input, documents)
                    except PolicyEngineError as exc:
                        opa_span.set_status(trace.StatusCode.ERROR, exc.message)
                        raise
                    opa_span.set_attribute("gatekeeper.policy_revision", result.revision or "")
                    opa_span.set_attribute("gatekeeper.violation_count",
                                           len(result.violations))
                outcome = _interpret(request, gathered, policy_input, documents, result, {})
            except PolicyEngineError as exc:
                outcome = _engine_failed(request, gathered, policy_input, documents, exc)
            if (outcome.violations and outcome.error is None and self._prefilter is not None
                    and request.mode is EnforcementMode.ENFORCE
                    and any(ref.digest is None for ref in request.images)):
                # tags: the prefilter was skipped as in ``_prefilter_violations``; asked now
                # (a blocking query: off the loop) to put the decisive reasons first
                decisive = await asyncio.get_running_loop().run_in_executor(
                    self._resolve_pool, self._ask_prefilter, request, created_at)
                outcome = dataclasses.replace(
                    outcome, violations=_decisive_first(outcome.violations, decisive))
            decision = self._new_decision(
                request, created_at=created_at, verdict=outcome.verdict,
                images=outcome.images(gathered),
                violations=outcome.violations, warnings=outcome.warnings,
                revision=outcome.revision, error=outcome.error,
                latency_ms=round((self._clock.monotonic() - started) * 1000, 3),
                policy_input=outcome.policy_input, exceptions=outcome.exceptions,
                evidence_documents=outcome.evidence_documents,
            )
            if record:
                with self._audit_span(decision):
                    await self._record_async(decision)
            return self._recorded(decision)

    async def record_without_evaluation_async(
        self,
        request: EvaluationRequest,
        *,
        verdict: Verdict,
        violations: Sequence[Violation],
        error: str | None = None,
        record: bool = True,
    ) -> Decision:
        """:meth:`record_without_evaluation` with the audit write awaited on the event loop."""
        if not violations and verdict is not Verdict.ALLOW:
            raise ValueError("a deny or warn without evaluation needs at least one violation")
        with self._decision_span(request):
            decision = self._new_decision(
                request, created_at=self._clock.now(), verdict=verdict,
                images=tuple(ImageResult(ref, ref.digest, {}) for ref in request.images),
                violations=tuple(violations), error=error,
            )
            if record:
                with self._audit_span(decision):
                    await self._record_async(decision)
            return self._recorded(decision)

