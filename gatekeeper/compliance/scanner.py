"""Continuous compliance: re-evaluate what already runs with the admission webhook's own steps.

Each workload stored in the API server is read as a CREATE review of that object and goes
through :func:`gatekeeper.webhook.prepare.prepare_review` (governed namespaces, images per field
path, mode and ticket) and :meth:`EvaluationService.evaluate`, exactly like an admission, with
``source: background``. So the policy sees what admission would show it (``input.review`` too,
once the admission input carries the object).

(1) list the workloads (pod-bearing kinds, excluded namespaces skipped, controller-owned
    objects evaluated through their owner);
(2) evaluate each one without recording;
(3) record the decision only when the workload's result changed (verdict, violations, warnings
    or policy revision): one record per workload and revision, not one per loop;
(4) write one PolicyReport per namespace, update the metrics and the snapshot that
    ``GET /v1/compliance`` serves.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from gatekeeper.domain import Decision, EvaluationRequest, Source, Verdict, Violation
from gatekeeper.domain.policy_lifecycle import StoredDecision
from gatekeeper.domain.ports.compliance import (
    PullSecretSource,
    ReportSink,
    WorkloadResult,
    WorkloadSource,
)
from gatekeeper.domain.workload import Workload
from gatekeeper.errors import GatekeeperError, InvalidInputError
from gatekeeper.service import EvaluationService, SystemClock
from gatekeeper.webhook.prepare import Prepared, Rejected, prepare_review
from gatekeeper.webhook.review import (
    AdmissionResponse,
    AdmissionReview,
    parse_admission_review,
)
from gatekeeper.webhook.scope import AdmissionSettings

__all__ = [
    "BACKGROUND_USER",
    "ComplianceScanner",
    "ComplianceSnapshot",
    "PullSecretSource",
    "ReportSink",
    "WorkloadResult",
    "WorkloadSource",
]

log = logging.getLogger(__name__)

#: The ``userInfo.username`` of the synthetic reviews (and the decisions' ``caller``).
BACKGROUND_USER = "system:gatekeeper:background"


class ViolationMetrics(Protocol):
    def publish(self, counts: Mapping[tuple[str, str], int]) -> None: ...


@dataclass(frozen=True, slots=True)
class ComplianceSnapshot:
    """The last completed scan (what ``GET /v1/compliance`` answers)."""

    trigger: str
    started_at: datetime
    finished_at: datetime
    results: tuple[WorkloadResult, ...]
    recorded: int
    reports: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        denied = [r for r in self.results if r.verdict is Verdict.DENY]
        revisions = sorted({r.revision for r in self.results if r.revision})
        return {
            "trigger": self.trigger,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "policy_revisions": revisions,
            "summary": {
                "workloads": len(self.results),
                "denied": len(denied),
                "warned": sum(r.verdict is Verdict.WARN for r in self.results),
                "allowed": sum(r.verdict is Verdict.ALLOW for r in self.results),
                "decisions_recorded": self.recorded,
            },
            "denied": [r.as_dict() for r in denied],
            "workloads": [r.as_dict() for r in self.results],
        }


class ComplianceScanner:
    """One scan of the cluster at a time (a lock); safe to call from the loop and a replay."""

    def __init__(
        self,
        service: EvaluationService,
        settings: AdmissionSettings,
        workloads: WorkloadSource,
        reports: ReportSink | None = None,
        *,
        metrics: ViolationMetrics | None = None,
        pull_secrets: PullSecretSource | None = None,
        clock: SystemClock | None = None,
    ) -> None:
        self._pull_secrets = pull_secrets
        self._service = service
        self._settings = settings
        self._workloads = workloads
        self._reports = reports
        self._metrics = metrics
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._last: dict[str, tuple[Any, ...]] = {}  # workload uid/key -> recorded fingerprint
        self._report_namespaces: set[str] = set()
        self._latest: tuple[Decision, ...] = ()  # each running workload's latest decision
        self.snapshot: ComplianceSnapshot | None = None
        #: Why the last scan could not list the workloads (the snapshot is then older).
        self.last_failure: str | None = None

    def scan(self, trigger: str) -> ComplianceSnapshot:
        with self._lock:
            started = self._clock.now()
            try:
                workloads = self._workloads.list_workloads()  # (1)
            except GatekeeperError as exc:
                self.last_failure = f"{started.isoformat()}: {exc.message}"
                raise
            self.last_failure = None
            results: list[WorkloadResult] = []
            latest: list[Decision] = []
            recorded = 0
            for workload in workloads:
                evaluated = self.evaluate(workload)  # (2)
                if evaluated is None:
                    continue
                result, decision = evaluated
                identity = workload.uid or workload.key
                if self._last.get(identity) != result.fingerprint:  # (3)
                    self._service.record_decision(decision)
                    self._last[identity] = result.fingerprint
                    recorded += 1
                results.append(result)
                latest.append(decision)
            self._latest = tuple(latest)
            live = {w.uid or w.key for w in workloads}
            for gone in set(self._last) - live:
                del self._last[gone]
            finished = self._clock.now()
            reports = self._write_reports(results, finished)  # (4)
            if self._metrics is not None:
                self._metrics.publish(_violation_counts(results))
            self.snapshot = ComplianceSnapshot(trigger, started, finished, tuple(results),
                                               recorded, reports)
            log.info("background scan (%s): %d workloads, %d denied, %d decisions recorded",
                     trigger, len(results),
                     sum(r.verdict is Verdict.DENY for r in results), recorded)
            return self.snapshot

    def running_decisions(self) -> list[StoredDecision]:
        """The latest decision of each running workload, as the replay reads decisions (the
        policy lifecycle's "running now" section evaluates a candidate over them)."""
        return [
            StoredDecision(
                decision_id=d.decision_id, created_at=d.created_at, verdict=d.verdict,
                mode=d.mode, environment=d.environment, namespace=d.namespace,
                ticket_id=d.ticket.ticket_id, policy_revision=d.policy_revision,
                violations=d.violations, warnings=d.warnings,
                policy_input=dict(d.policy_input) if d.policy_input is not None else None,
                evidence=d.evidence_documents,
            )
            for d in self._latest
        ]

    def evaluate(self, workload: Workload) -> tuple[WorkloadResult, Decision] | None:
        """The decision admission would give ``workload`` now (not recorded); None when the
        webhook would not evaluate it (excluded namespace, no images)."""
        try:
            review = _review_of(workload, self._settings.max_review_bytes)
        except InvalidInputError as exc:
            outcome: Prepared | Rejected | AdmissionResponse = AdmissionResponse(
                uid=workload.uid or workload.key, allowed=False, code=400,
                message=f"{workload.key} cannot be evaluated: {exc.message}")
        else:
            outcome = prepare_review(review, "validate", None, self._settings)
        if isinstance(outcome, AdmissionResponse):
            if outcome.allowed:
                return None
            decision = self._service.record_without_evaluation(
                _bare_request(workload, self._settings), verdict=Verdict.DENY,
                violations=[Violation("gatekeeper.input", outcome.message)], record=False)
        elif isinstance(outcome, Rejected):
            decision = self._service.record_without_evaluation(
                _as_background(outcome.request, workload), verdict=Verdict.DENY,
                violations=outcome.violations, record=False)
        else:
            prepared: Prepared = outcome
            request = _as_background(prepared.request, workload)
            if self._pull_secrets is not None:
                request = self._with_logins(request, workload)
            decision = self._service.evaluate(request, record=False)
        result = WorkloadResult(workload, decision.verdict, decision.violations,
                                decision.warnings, decision.policy_revision,
                                decision.decision_id, decision.created_at)
        return result, decision

    def _with_logins(self, request: EvaluationRequest,
                     workload: Workload) -> EvaluationRequest:
        assert self._pull_secrets is not None
        logins, problems = self._pull_secrets.logins_for(workload)
        background = dict(request.context["background"])
        background["pull_secrets"] = logins.origin if logins is not None else None
        if problems:
            background["pull_secret_problems"] = problems
        return replace(request, registry_logins=logins,
                       context={**request.context, "background": background})

    def _write_reports(self, results: Sequence[WorkloadResult], now: datetime) -> dict[str, str]:
        if self._reports is None:
            return {}
        by_namespace: dict[str, list[WorkloadResult]] = {}
        for result in results:
            if result.workload.namespace:
                by_namespace.setdefault(result.workload.namespace, []).append(result)
        # A namespace whose last workload went away gets an empty report, not a stale one.
        for namespace in self._report_namespaces - set(by_namespace):
            by_namespace[namespace] = []
        written: dict[str, str] = {}
        revision = next((r.revision for r in results if r.revision), None)
        for namespace, items in sorted(by_namespace.items()):
            try:
                written[namespace] = self._reports.write(namespace, items, revision, now)
            except GatekeeperError as exc:
                log.error("PolicyReport of namespace %s not written: %s", namespace,
                          exc.render())
                written[namespace] = f"failed: {exc.message}"
        self._report_namespaces = {n for n, items in by_namespace.items() if items}
        return written


def _review_of(workload: Workload, max_bytes: int) -> AdmissionReview:
    api_version = str(workload.obj.get("apiVersion") or "v1")
    group, _, version = api_version.rpartition("/")
    plural = workload.kind.lower() + "s"  # every listed kind pluralises with "s"
    document = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": workload.uid or workload.key,
            "kind": {"group": group, "version": version, "kind": workload.kind},
            "resource": {"group": group, "version": version, "resource": plural},
            "name": workload.name,
            "namespace": workload.namespace,
            "operation": "CREATE",
            "userInfo": {"username": BACKGROUND_USER},
            "object": dict(workload.obj),
            "dryRun": False,
        },
    }
    return parse_admission_review(json.dumps(document).encode(), max_bytes=max_bytes)


def _background_context(workload: Workload) -> dict[str, Any]:
    metadata = workload.obj.get("metadata") or {}
    return {"background": {"kind": workload.kind, "namespace": workload.namespace,
                           "name": workload.name, "uid": workload.uid or None,
                           "resource_version": metadata.get("resourceVersion")}}


def _as_background(request: EvaluationRequest, workload: Workload) -> EvaluationRequest:
    return replace(request, source=Source.BACKGROUND, dry_run=False,
                   context={**request.context, **_background_context(workload)})


def _bare_request(workload: Workload, settings: AdmissionSettings) -> EvaluationRequest:
    return EvaluationRequest(images=(), source=Source.BACKGROUND,
                             environment=settings.environment,
                             namespace=workload.namespace or None, caller=BACKGROUND_USER,
                             context=_background_context(workload))


def _violation_counts(results: Sequence[WorkloadResult]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for result in results:
        for violation in result.violations:
            key = (violation.policy, result.workload.namespace)
            counts[key] = counts.get(key, 0) + 1
    return counts
