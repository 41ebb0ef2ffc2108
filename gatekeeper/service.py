"""The use case: evidence -> policy -> decision -> audit. Talks to ports only.

Both doors (the REST API / CLI for pipelines, the admission webhook for Kubernetes) call
:meth:`EvaluationService.evaluate`; so both answer the same decision and write the same record.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import uuid6
from opentelemetry import trace  # the API only: the SDK and exporter live in the adapters

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
    PolicyResult,
    Source,
    Verdict,
    Violation,
    apply_enforcement_mode,
    build_policy_input,
)
from gatekeeper.domain.concurrency import FanOut
from gatekeeper.domain.credentials import workload_logins
from gatekeeper.domain.evidence import EvidenceError, EvidenceSkipped
from gatekeeper.domain.evidence_documents import EvidenceExternaliser
from gatekeeper.domain.ports import AsyncPolicyEngine, Clock, EvaluationObserver, PolicyPrefilter
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
    #: Evidence came from the cache of admitted digests (no registry round trip).
    cached: bool = False
    #: Not gathered: network-free rules already deny the image (see ``_prefilter``).
    skipped: bool = False


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
        clock: Clock | None = None,
        id_factory: Callable[[], str] = new_decision_id,
        prefilter: PolicyPrefilter | None = None,
        evidence_cache: EvidenceCache | None = None,
        tracer: trace.Tracer | None = None,
        observers: Sequence[EvaluationObserver] = (),
        evidence_threads: int = 16,
        evidence_externaliser: EvidenceExternaliser | None = None,
        async_policy_engine: AsyncPolicyEngine | None = None,
        record_async: Callable[[Decision], Awaitable[None]] | None = None,
        audit_write_threads: int = 8,
    ) -> None:
        """``async_policy_engine`` (the same engine, asked on the event loop) enables
        :meth:`evaluate_warm`. ``record_async`` awaits a durable audit write; by default
        :meth:`AuditLog.record` runs on ``audit_write_threads`` threads of the service's own
        (never the shared pool), so concurrent writes still share a commit."""
        self._async_engine = async_policy_engine
        #: Tag resolutions of the warm path (a blocking registry client): a pool of its own.
        self._resolve_pool = _resolver_pool()
        self._threaded_writes: _ThreadedAuditWrites | None = None
        if record_async is None:
            self._threaded_writes = _ThreadedAuditWrites(audit_log, audit_write_threads)
            record_async = self._threaded_writes.record
        self._record_async = record_async
        self._engine = policy_engine
        self._audit = audit_log
        self._collectors = tuple(collectors)
        self._resolver = digest_resolver
        self._clock: Clock = clock or SystemClock()
        self._new_id = id_factory
        self._prefilter = prefilter
        self._evidence_cache = evidence_cache
        self._tracer = tracer or trace.NoOpTracer()
        self._observers = tuple(observers)
        # Evidence is gathered concurrently: the images of a request, and the collectors of an
        # image (they block on registries, ECR, the database: threads, not coroutines; see
        # gatekeeper.domain.concurrency). Two pools, so an image's worker never waits on its
        # own pool. Each step keeps the request's deadline (EvidenceContext.deadline).
        self._image_fan_out = FanOut(max(1, evidence_threads // 2), name="gatekeeper-images")
        self._collector_fan_out = FanOut(evidence_threads, name="gatekeeper-collectors")
        self._externaliser = evidence_externaliser or EvidenceExternaliser()

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
        # One trace per decision: a child of the caller's span when the request carried a
        # W3C traceparent (the HTTP instrumentation made it current), else a new root.
        with self._tracer.start_as_current_span(
            "gatekeeper.decision", attributes=_request_attributes(request)
        ):
            return self._evaluate(request, deadline, record)

    def _evaluate(
        self, request: EvaluationRequest, deadline: float | None, record: bool
    ) -> Decision:
        started = self._clock.monotonic()
        created_at = self._clock.now()
        context = EvidenceContext(
            environment=request.environment, namespace=request.namespace, deadline=deadline
        )
        asked = self._prefilter_violations(request, created_at)  # (1)
        decisive = asked or {}
        # The workload's own pull secrets, when it carries them, for this evaluation only.
        with workload_logins(request.registry_logins):
            gathered = self._image_fan_out.run([
                partial(self._gather, ref, context, request, decisive.get(ref.original, ()))
                for ref in request.images
            ])  # (2), the images concurrently
            while True:
                outcome = self._decide(request, gathered, created_at, decisive)  # (3)
                denied_images = {v.image for v in outcome.violations}
                undecided = [g for g in gathered if g.skipped and g.reference.original not in
                             denied_images]
                if not undecided or outcome.error is not None:
                    break
                log.warning("prefilter denied %s but the policy did not: gathering its "
                            "evidence", ", ".join(g.reference.original for g in undecided))
                decisive = {}
                gathered = [self._gather(g.reference, context, request, ()) if g.skipped
                            else g for g in gathered]  # (4)
        if asked is None and outcome.violations and outcome.error is None:
            # (1) skipped for lately admitted repositories, yet something is wrong: the
            # network-free rules' reasons first, as if they had been asked before
            outcome = dataclasses.replace(outcome, violations=_decisive_first(
                outcome.violations, self._ask_prefilter(request, created_at)))
        if (request.source is Source.ADMISSION and outcome.verdict is not Verdict.DENY
                and request.registry_logins is None):
            # Evidence read with a workload's own logins is not offered to other workloads.
            self._remember_evidence(request, gathered)
        return self._record(
            request,
            created_at=created_at,
            verdict=outcome.verdict,
            images=outcome.images(gathered),
            violations=outcome.violations,
            warnings=outcome.warnings,
            revision=outcome.revision,
            error=outcome.error,
            latency_ms=round((self._clock.monotonic() - started) * 1000, 3),
            policy_input=outcome.policy_input,
            exceptions=outcome.exceptions,
            evidence_documents=outcome.evidence_documents,
            record=record,
        )

    def _decide(
        self,
        request: EvaluationRequest,
        gathered: Sequence[_GatheredImage],
        created_at: datetime,
        decisive: Mapping[str, tuple[Violation, ...]],
    ) -> _Outcome:
        policy_input, documents = self._input(request, gathered, created_at)
        try:
            with self._tracer.start_as_current_span("gatekeeper.policy.opa") as opa_span:
                try:
                    result = self._engine.evaluate(policy_input, documents)
                except PolicyEngineError as exc:
                    opa_span.set_status(trace.StatusCode.ERROR, exc.message)
                    raise
                opa_span.set_attribute("gatekeeper.policy_revision", result.revision or "")
                opa_span.set_attribute("gatekeeper.violation_count", len(result.violations))
        except PolicyEngineError as exc:
            return _engine_failed(request, gathered, policy_input, documents, exc)
        return _interpret(request, gathered, policy_input, documents, result, decisive)

    def _input(
        self, request: EvaluationRequest, gathered: Sequence[_GatheredImage], created_at: datetime
    ) -> tuple[dict[str, Any], Mapping[str, Any]]:
        """The policy input, with large evidence replaced by its sha256, and the documents
        it references (sha256 -> document)."""
        externalised = self._externaliser.externalise(build_policy_input(
            request, [(g.reference, g.digest, g.evidence) for g in gathered], created_at
        ))
        return externalised.policy_input, externalised.documents

    def _prefilter_violations(
        self, request: EvaluationRequest, created_at: datetime
    ) -> dict[str, tuple[Violation, ...]] | None:
        """(1) Violations of the network-free rules, by image, when they will deny anyway;
        None when they were not asked because every image was admitted here lately."""
        if (
            self._prefilter is None
            or request.mode is not EnforcementMode.ENFORCE
            or all(self._nothing_to_fetch(ref, request) for ref in request.images)
        ):
            return {}  # nothing would be fetched: the policy evaluation alone decides
        if all(self._nothing_to_fetch(ref, request) or self._admitted_lately(ref, request)
               for ref in request.images):
            # Only tags of repositories admitted here lately (their registry passed these
            # rules then): resolving them is one request to an allowed registry, and their
            # evidence is likely cached. Should the policy deny, the prefilter is asked after
            # the decision, to put the decisive reasons first (see ``_evaluate``).
            return None
        return self._ask_prefilter(request, created_at)

    def _ask_prefilter(
        self, request: EvaluationRequest, created_at: datetime
    ) -> dict[str, tuple[Violation, ...]]:
        assert self._prefilter is not None
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
        evidence_documents: Mapping[str, Any] | None = None,
        record: bool = True,
    ) -> Decision:
        """Build the decision from the request's own fields, record it, return it."""
        decision = self._new_decision(
            request, created_at=created_at, verdict=verdict, images=images,
            violations=violations, warnings=warnings, revision=revision, error=error,
            latency_ms=latency_ms, policy_input=policy_input, exceptions=exceptions,
            evidence_documents=evidence_documents,
        )
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

    @contextmanager
    def _audit_span(self, decision: Decision) -> Iterator[None]:
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
        image = {"gatekeeper.image": reference.original}
        if digest is None and self._resolver is not None:
            with self._step("digest", image) as step:
                try:
                    digest = self._resolver.resolve(reference, context)
                    step.outcome = "resolved"
                except GatekeeperError as exc:
                    step.fail(exc.message)
                    failures.append(f"digest not resolved: {exc.message}")
        if digest is not None and request.source is Source.ADMISSION and self._evidence_cache:
            cached = self._evidence_cache.get(_evidence_key(reference, digest, request))
            if cached is not None:
                return _GatheredImage(reference, digest, cached, (), cached=True)
        # The collectors concurrently; those that need the same registry material share one
        # lookup through ``context.memo``. Sections and failures keep the collectors' order.
        collected = self._collector_fan_out.run([
            partial(self._collect, collector, reference, digest, context, image)
            for collector in self._collectors
        ])  # fmt: skip
        for collector, (section, failure) in zip(self._collectors, collected, strict=True):
            evidence[collector.name] = section
            if failure is not None:
                failures.append(failure)
        return _GatheredImage(reference, digest, evidence, tuple(failures))

    def _collect(
        self,
        collector: EvidenceCollector,
        reference: ImageReference,
        digest: Digest | None,
        context: EvidenceContext,
        image: Mapping[str, str],
    ) -> tuple[dict[str, Any], str | None]:
        """One collector's section, and why it could not be gathered (``None``: it was)."""
        with self._step(collector.name, image) as step:
            try:
                section: Mapping[str, Any] = collector.collect(reference, digest, context)
                step.outcome = _outcome_of(section)
                return dict(section), None
            except GatekeeperError as exc:
                step.fail(exc.message)
                failure = f"{collector.name} evidence not gathered: {exc.message}"
                return EvidenceError(exc.message).as_input(), failure

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

    def _admitted_lately(self, reference: ImageReference, request: EvaluationRequest) -> bool:
        return (
            request.source is Source.ADMISSION
            and request.registry_logins is None
            and self._evidence_cache is not None
            and self._evidence_cache.admitted_lately(
                reference.name, request.environment, request.namespace)
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

    # -- the warm admission path, on the event loop ---------------------------------------

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
            context = EvidenceContext(environment=request.environment,
                                      namespace=request.namespace, deadline=deadline)
            loop = asyncio.get_running_loop()
            outcomes = await asyncio.gather(*(
                loop.run_in_executor(self._resolve_pool, contextvars.copy_context().run,
                                     self._resolve_step, ref, context)
                for ref in tags))
            for ref, digest in zip(tags, outcomes, strict=True):
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

    def _resolve_step(self, reference: ImageReference, context: EvidenceContext) -> Digest | None:
        assert self._resolver is not None
        with self._step("digest", {"gatekeeper.image": reference.original}) as step:
            try:
                digest = self._resolver.resolve(reference, context)
            except GatekeeperError as exc:
                step.fail(exc.message)
                return None
            step.outcome = "resolved"
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
        with self._tracer.start_as_current_span(
            "gatekeeper.decision", attributes=_request_attributes(request)
        ):
            started = self._clock.monotonic()
            created_at = self._clock.now()
            policy_input, documents = self._input(request, gathered, created_at)
            try:
                with self._tracer.start_as_current_span("gatekeeper.policy.opa") as opa_span:
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
        with self._tracer.start_as_current_span(
            "gatekeeper.decision", attributes=_request_attributes(request)
        ):
            decision = self._new_decision(
                request, created_at=self._clock.now(), verdict=verdict,
                images=tuple(ImageResult(ref, ref.digest, {}) for ref in request.images),
                violations=tuple(violations), error=error,
            )
            if record:
                with self._audit_span(decision):
                    await self._record_async(decision)
            return self._recorded(decision)

    def close(self) -> None:
        """Wait for the audit writes under way (their callers are answered after them)."""
        self._resolve_pool.shutdown(wait=True)
        self._resolve_pool = _resolver_pool()  # threads start lazily: a restart finds one
        if self._threaded_writes is not None:
            self._threaded_writes.close()

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
        with workload_logins(request.registry_logins):
            gathered = self._image_fan_out.run(
                [partial(self._gather, ref, context, request, ()) for ref in request.images]
            )
        document = build_policy_input(
            request, [(g.reference, g.digest, g.evidence) for g in gathered], now
        )
        return dict(document), tuple(reason for g in gathered for reason in g.failures)

    def record_decision(self, decision: Decision) -> None:
        """Record a decision :meth:`evaluate` made with ``record=False`` (the background
        compliance loop records a workload's decision only when its result changed)."""
        self._audit.record(decision)

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


def _resolver_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="gatekeeper-resolve")


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


def _evidence_key(
    reference: ImageReference, digest: Digest, request: EvaluationRequest
) -> EvidenceKey:
    return EvidenceKey(reference.name, str(digest), request.environment, request.namespace)
