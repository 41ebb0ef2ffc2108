"""Ports of evaluation: the policy engine, evidence collectors, digest resolution and the clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from gatekeeper.domain.concurrency import EvaluationMemo
from gatekeeper.domain.decision import Decision, PolicyResult, Violation
from gatekeeper.domain.reference import Digest, ImageReference

__all__ = [
    "AsyncPolicyEngine",
    "Clock",
    "DigestResolver",
    "EvidenceCollector",
    "EvidenceContext",
    "HealthCheck",
    "PolicyEngine",
    "PolicyPrefilter",
]


class PolicyEngine(Protocol):
    """Evaluates the versioned input document against the active policies."""

    def evaluate(
        self, policy_input: Mapping[str, Any], evidence: Mapping[str, Any] | None = None
    ) -> PolicyResult:
        """Raise :class:`~gatekeeper.errors.PolicyEngineError` when it cannot decide.

        ``evidence``: the documents (sha256 -> document) the input references by hash (see
        :mod:`gatekeeper.domain.evidence_documents`); the engine makes them readable by the
        policy, or fails closed."""
        ...

    def revision(self) -> str:
        """Content hash of the loaded policies and data."""
        ...

    def check_health(self) -> None:
        """Raise :class:`~gatekeeper.errors.PolicyEngineError` when not ready."""
        ...


class AsyncPolicyEngine(Protocol):
    """A policy engine that can also decide on the running event loop (the warm admission
    path: no worker thread per request)."""

    async def evaluate_async(
        self, policy_input: Mapping[str, Any], evidence: Mapping[str, Any] | None = None
    ) -> PolicyResult:
        """As :meth:`PolicyEngine.evaluate` (``evidence`` likewise); raises
        :class:`~gatekeeper.errors.PolicyEngineError` when it cannot decide."""
        ...


class PolicyPrefilter(Protocol):
    """The policy's network-free rules (``data.gatekeeper.main.prefilter``), asked before any
    evidence is gathered: registry allow-list, digest required, with exceptions applied."""

    def prefilter(self, policy_input: Mapping[str, Any]) -> tuple[Violation, ...]:
        """Violations that hold whatever the evidence; () when the policy defines none.
        Raise :class:`~gatekeeper.errors.PolicyEngineError` when it cannot answer."""
        ...


@dataclass(frozen=True, slots=True)
class EvidenceContext:
    """What a collector may know about the request besides the image itself.

    One context per evaluation. ``memo`` is that evaluation's single-flight memo: a collector
    that needs what another collector (or another source) of the same evaluation also needs,
    such as an image's cosign discovery, computes it through ``memo.once`` so it is fetched
    and verified once per image per evaluation, whatever the TTL caches are set to (a TTL of 0
    stores nothing). Collectors may run concurrently (images and collectors in parallel).
    """

    environment: str
    namespace: str | None
    deadline: float | None = None  # time.monotonic() value after which no network step starts
    memo: EvaluationMemo = field(default_factory=EvaluationMemo, compare=False, repr=False)


@runtime_checkable
class EvidenceCollector(Protocol):
    """Proves facts about one image; returns a JSON-ready section of ``evidence``.

    ``name`` is the key of its section under ``input.images[].evidence``. A collector never
    raises for a negative fact (unsigned, stale scan): it says so in its section.

    ``collect`` must be thread-safe: the service calls the collectors of one image
    concurrently, and the images of one request concurrently. A collector never re-fetches
    what another collector of the same evaluation fetched: shared results go through
    ``context.memo`` (see :class:`EvidenceContext`).
    """

    name: str

    def collect(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Mapping[str, Any]: ...


class DigestResolver(Protocol):
    """Turns a tag into the digest it names now (registry HEAD/GET of the manifest)."""

    def resolve(self, reference: ImageReference, context: EvidenceContext) -> Digest: ...


class HealthCheck(Protocol):
    """A dependency the readiness probe asks; raises a ``GatekeeperError`` when not ready."""

    def check_health(self) -> None: ...


class Clock(Protocol):
    """Wall-clock time (timezone-aware UTC) and a monotonic counter for deadlines."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...



class EvaluationObserver(Protocol):
    """Told what the service did (metrics, decision-log streams); must not raise or block."""

    def evidence_step(self, step: str, outcome: str, seconds: float) -> None:
        """One evidence step (``digest`` or a collector's name) ended with ``outcome``."""

    def decision_recorded(self, decision: Decision) -> None:
        """``decision`` is in the audit trail (called for every decision, from both doors)."""


__all__ += ["EvaluationObserver"]
