"""Ports of the background compliance door: where running workloads come from, where the
PolicyReports go, and how a workload's own pull secrets become registry logins.

:mod:`gatekeeper.compliance` depends on these only; the Kubernetes adapters
(:mod:`gatekeeper.kube.reports`, :mod:`gatekeeper.kube.pull_secrets`) implement them and
:func:`gatekeeper.wiring.build_compliance_adapters` hands them over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gatekeeper.domain.credentials import WorkloadRegistryLogins
from gatekeeper.domain.decision import Verdict, Violation
from gatekeeper.domain.workload import Workload

__all__ = [
    "ComplianceAdapters",
    "PullSecretSource",
    "ReportSink",
    "WorkloadResult",
    "WorkloadSource",
]


@dataclass(frozen=True, slots=True)
class WorkloadResult:
    """What the current policy says about one running workload."""

    workload: Workload
    verdict: Verdict
    violations: tuple[Violation, ...]
    warnings: tuple[Violation, ...]
    revision: str | None
    decision_id: str | None
    evaluated_at: datetime

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        return (self.verdict, self.violations, self.warnings, self.revision)

    def as_dict(self) -> dict[str, Any]:
        workload = self.workload
        return {
            "kind": workload.kind, "namespace": workload.namespace, "name": workload.name,
            "uid": workload.uid, "verdict": self.verdict.value,
            "policy_revision": self.revision, "decision_id": self.decision_id,
            "evaluated_at": self.evaluated_at.isoformat(),
            "violations": [v.as_dict() for v in self.violations],
            "warnings": [w.as_dict() for w in self.warnings],
        }


class WorkloadSource(Protocol):
    """The workloads that run now (outside the excluded namespaces)."""

    def list_workloads(self) -> list[Workload]: ...


class ReportSink(Protocol):
    """Writes one namespace's results (a PolicyReport); returns the report's name."""

    def write(self, namespace: str, results: Sequence[WorkloadResult],
              revision: str | None, now: datetime) -> str: ...


class PullSecretSource(Protocol):
    """A workload's registry logins from its own pull secrets, and a problem per secret that
    could not be used (names only, never content)."""

    def logins_for(
        self, workload: Workload
    ) -> tuple[WorkloadRegistryLogins | None, list[str]]: ...


@dataclass(frozen=True, slots=True)
class ComplianceAdapters:
    """What the composition root builds for the background door; ``close`` releases the
    connection they share."""

    workloads: WorkloadSource
    reports: ReportSink | None
    pull_secrets: PullSecretSource | None
    close: Callable[[], None]
