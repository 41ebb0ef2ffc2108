"""The use case: evidence -> policy -> decision -> audit. Talks to ports only.

Both doors (the REST API / CLI for pipelines, the admission webhook for Kubernetes) call
:meth:`EvaluationService.evaluate`; so both answer the same decision and write the same record.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import uuid6
from opentelemetry import trace  # the API only: the SDK and exporter live in the adapters

from gatekeeper.domain import (
    AuditLog,
    Decision,
    DigestResolver,
    EvaluationRequest,
    EvidenceCollector,
    EvidenceContext,
    PolicyEngine,
    Source,
    Verdict,
    Violation,
    build_policy_input,
)
from gatekeeper.domain.concurrency import FanOut
from gatekeeper.domain.credentials import workload_logins
from gatekeeper.domain.evidence_documents import EvidenceExternaliser
from gatekeeper.domain.ports import AsyncPolicyEngine, Clock, EvaluationObserver, PolicyPrefilter
from gatekeeper.errors import PolicyEngineError
from gatekeeper.evaluation.gathering import Gathering
from gatekeeper.evaluation.outcome import (
    DEADLINE_POLICY,
    ENGINE_POLICY,
    EVIDENCE_POLICY,
    INPUT_POLICY,
    _decisive_first,
    _engine_failed,
    _GatheredImage,
    _interpret,
    _Outcome,
)
from gatekeeper.evaluation.recording import Recording, _request_attributes, _ThreadedAuditWrites
from gatekeeper.evaluation.tag_digests import TagDigestMemory
from gatekeeper.evaluation.warm import WarmAdmission, _resolver_pool
from gatekeeper.evidence_cache import EvidenceCache

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


class SystemClock:
    """The production :class:`~gatekeeper.domain.ports.Clock`: UTC wall clock, monotonic."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


def new_decision_id() -> str:
    """A UUIDv7 (time-ordered, RFC 9562) so ids sort roughly by creation time."""
    return str(uuid6.uuid7())


class EvaluationService(WarmAdmission, Gathering, Recording):
    """Gathers evidence for each image, asks the policy engine, records the decision.

    Composed of its parts in :mod:`gatekeeper.evaluation`: evidence gathering, recording and
    the warm admission path; the cold path (:meth:`evaluate`) is here."""

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
        tag_digest_memory: TagDigestMemory | None = None,
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
        #: Tags of admitted images resolved lately (gatekeeper.evaluation.tag_digests).
        self._tag_digests = tag_digest_memory
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
        return self._record(self._new_decision(
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
        ), record=record)

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

    def close(self) -> None:
        """Wait for the audit writes under way (their callers are answered after them)."""
        self._resolve_pool.shutdown(wait=True)
        self._resolve_pool = _resolver_pool()  # threads start lazily: a restart finds one
        if self._threaded_writes is not None:
            self._threaded_writes.close()

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

