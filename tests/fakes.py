"""Fakes that implement the real ports (gatekeeper.domain.ports), for core tests.

Each fake subclasses its port, so mypy (which covers this module) checks it against the port."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gatekeeper.domain import (
    Decision,
    DecisionPage,
    DecisionQuery,
    Digest,
    EvidenceContext,
    ImageReference,
    PolicyResult,
    Violation,
)
from gatekeeper.domain.ports import (
    AuditLog,
    PolicyEngine,
    SbomCandidate,
    SbomSource,
    VexCandidate,
    VexSource,
)
from gatekeeper.errors import NotFoundError, PolicyEngineError, StorageError


class FakePolicyEngine(PolicyEngine):
    def __init__(
        self,
        violations: Iterable[Violation] = (),
        warnings: Iterable[Violation] = (),
        error: str | None = None,
    ) -> None:
        self.violations = tuple(violations)
        self.warnings = tuple(warnings)
        self.error = error
        self.inputs: list[Mapping[str, Any]] = []

    def evaluate(
        self, policy_input: Mapping[str, Any], evidence: Mapping[str, Any] | None = None
    ) -> PolicyResult:
        self.inputs.append(policy_input)
        if self.error:
            raise PolicyEngineError(self.error)
        return PolicyResult(self.violations, self.warnings, "sha256:fake")

    def revision(self) -> str:
        return "sha256:fake"

    def check_health(self) -> None:
        if self.error:
            raise PolicyEngineError(self.error)


class FakeAuditLog(AuditLog):
    """In-memory AuditLog; thread-safe (the admission handler records from worker threads)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.records: list[Decision] = []
        self._lock = threading.Lock()

    def record(self, decision: Decision) -> None:
        if self.fail:
            raise StorageError("audit store down")
        with self._lock:
            self.records.append(decision)

    def get(self, decision_id: str) -> Decision:
        for decision in self.records:
            if decision.decision_id == decision_id:
                return decision
        raise NotFoundError(f"decision {decision_id} not found")

    def query(self, query: DecisionQuery) -> DecisionPage:
        return DecisionPage(tuple(reversed(self.records))[: query.limit], None)

    def check_health(self) -> None:
        if self.fail:
            raise StorageError("audit store down")


class FixedSbomSource(SbomSource):
    """Finds the same SBOM candidates for every image (an attestation or referrer source)."""

    def __init__(self, *candidates: SbomCandidate, name: str = "fake") -> None:
        self.name = name
        self.candidates = candidates

    def find(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Sequence[SbomCandidate]:
        return self.candidates


class FixedVexSource(VexSource):
    """Finds the same VEX candidates for every image."""

    def __init__(self, *candidates: VexCandidate, name: str = "fake") -> None:
        self.name = name
        self.candidates = candidates

    def find(
        self, reference: ImageReference, digest: Digest, context: EvidenceContext
    ) -> Sequence[VexCandidate]:
        return self.candidates


def violation(message: str, image: str | None = None, policy: str = "test") -> Violation:
    return Violation(policy=policy, message=message, image=image)
