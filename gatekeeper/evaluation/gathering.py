"""Evidence for each image: the network-free prefilter, digests, collectors, the cache."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import Any

from opentelemetry import trace

from gatekeeper.domain import (
    Digest,
    EnforcementMode,
    EvaluationRequest,
    EvidenceCollector,
    EvidenceContext,
    ImageReference,
    Source,
    Violation,
    build_policy_input,
)
from gatekeeper.domain.evidence import EvidenceError, EvidenceSkipped
from gatekeeper.errors import GatekeeperError, PolicyEngineError
from gatekeeper.evaluation.outcome import _GatheredImage
from gatekeeper.evaluation.state import ServiceState
from gatekeeper.evidence_cache import EvidenceKey

# The use case's logger: records keep the name they had before the split.
log = logging.getLogger("gatekeeper.service")


def _outcome_of(section: Mapping[str, Any]) -> str:
    """A short, bounded label for a collector's result (its own status or state word)."""
    for key in ("status", "state"):
        value = section.get(key)
        if isinstance(value, str) and value and len(value) <= 40:
            return value
    return "ok"


class _Step:
    """The outcome of one evidence step, set by the code inside the step."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.outcome = "ok"

    def fail(self, reason: str) -> None:
        self.outcome = "error"
        self.span.set_status(trace.StatusCode.ERROR, reason)


def _evidence_key(
    reference: ImageReference, digest: Digest, request: EvaluationRequest
) -> EvidenceKey:
    return EvidenceKey(reference.name, str(digest), request.environment, request.namespace)


class Gathering(ServiceState):
    """The evidence part of :class:`gatekeeper.service.EvaluationService`."""

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
                    digest, step.outcome = self._resolve_tag(reference, context, request)
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
