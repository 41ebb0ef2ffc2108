"""Ports: the interfaces the service depends on. Adapters implement them; tests fake them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from gatekeeper.domain.decision import Decision, PolicyResult, Verdict, Violation
from gatekeeper.domain.reference import Digest, ImageReference

__all__ = [
    "AuditLog",
    "Clock",
    "DecisionPage",
    "DecisionQuery",
    "EvidenceCollector",
    "EvidenceContext",
    "HealthCheck",
    "PolicyEngine",
    "PolicyPrefilter",
]


class PolicyEngine(Protocol):
    """Evaluates the versioned input document against the active policies."""

    def evaluate(self, policy_input: Mapping[str, Any]) -> PolicyResult:
        """Raise :class:`~gatekeeper.errors.PolicyEngineError` when it cannot decide."""
        ...

    def revision(self) -> str:
        """Content hash of the loaded policies and data."""
        ...

    def check_health(self) -> None:
        """Raise :class:`~gatekeeper.errors.PolicyEngineError` when not ready."""
        ...


class PolicyPrefilter(Protocol):
    """The policy's network-free rules (``data.gatekeeper.main.prefilter``), asked before any
    evidence is gathered: registry allow-list, digest required, with exceptions applied."""

    def prefilter(self, policy_input: Mapping[str, Any]) -> tuple[Violation, ...]:
        """Violations that hold whatever the evidence; () when the policy defines none.
        Raise :class:`~gatekeeper.errors.PolicyEngineError` when it cannot answer."""
        ...


@dataclass(frozen=True, slots=True)
class DecisionQuery:
    intent_id: str | None = None
    plan_id: str | None = None
    ticket_id: str | None = None
    deploy_id: str | None = None
    image_digest: str | None = None
    verdict: Verdict | None = None
    namespace: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class DecisionPage:
    items: tuple[Decision, ...]
    next_cursor: str | None


class AuditLog(Protocol):
    """Durable store of every decision."""

    def record(self, decision: Decision) -> None:
        """Persist ``decision``; raise :class:`~gatekeeper.errors.StorageError` on failure."""
        ...

    def get(self, decision_id: str) -> Decision:
        """Raise :class:`~gatekeeper.errors.NotFoundError` for an unknown id."""
        ...

    def query(self, query: DecisionQuery) -> DecisionPage: ...

    def check_health(self) -> None: ...


@dataclass(frozen=True, slots=True)
class EvidenceContext:
    """What a collector may know about the request besides the image itself."""

    environment: str
    namespace: str | None
    deadline: float | None = None  # time.monotonic() value after which no network step starts


@runtime_checkable
class EvidenceCollector(Protocol):
    """Proves facts about one image; returns a JSON-ready section of ``evidence``.

    ``name`` is the key of its section under ``input.images[].evidence``. A collector never
    raises for a negative fact (unsigned, stale scan): it says so in its section.
    """

    name: str

    def collect(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Mapping[str, Any]: ...


class DigestResolver(Protocol):
    def resolve(self, reference: ImageReference, context: EvidenceContext) -> Digest: ...


class HealthCheck(Protocol):
    def check_health(self) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


__all__ += ["DigestResolver"]
