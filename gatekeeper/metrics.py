"""Prometheus metrics, on a registry of our own (so tests and several apps never collide).

Every name starts with ``forge_gatekeeper_``: plain ``gatekeeper_`` collides with OPA
Gatekeeper's metrics in a shared Prometheus. The names this release renamed are also exposed
under their old ``gatekeeper_`` names (:class:`LegacyNames`) for one release, then dropped.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gatekeeper.domain import Decision

__all__ = ["LEGACY_PREFIX", "PREFIX", "LabelChildren", "LegacyNames", "Metrics"]

PREFIX = "forge_gatekeeper_"
#: The prefix of the names before this release, still exposed until the next one.
LEGACY_PREFIX = "gatekeeper_"

_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class LegacyNames(Collector):
    """Re-exposes metrics under their old ``gatekeeper_`` names (deprecated, one release)."""

    def __init__(self, metrics: Iterable[Collector]) -> None:
        self._metrics = tuple(metrics)

    def collect(self) -> Iterator[Metric]:
        for metric in self._metrics:
            for family in metric.collect():
                old = family.name.replace(PREFIX, LEGACY_PREFIX, 1)
                copy = Metric(old, family.documentation + " (deprecated name)", family.type)
                for sample in family.samples:
                    copy.add_sample(
                        sample.name.replace(PREFIX, LEGACY_PREFIX, 1), sample.labels,
                        sample.value, sample.timestamp, sample.exemplar,
                    )
                yield copy


class LabelChildren:
    """``metric.labels(*values)`` remembered per label values: the client's own lookup
    validates and converts the values and takes a lock on every call, which shows on the
    admission path (several increments per review). Only for bounded label values."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:  # a race only asks the client twice; it returns the same child
            child = self._children[values] = self._metric.labels(*values)
        return child


def _age(timestamp: Callable[[], float | None]) -> Callable[[], float]:
    def age() -> float:
        value = timestamp()
        return float("nan") if value is None else max(0.0, time.time() - value)

    return age


@dataclass
class Metrics:
    """Every metric of the gatekeeper; also the service's :class:`EvaluationObserver`."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r, p = self.registry, PREFIX
        self.decisions = Counter(
            f"{p}decisions_total", "Recorded decisions by verdict and source (every door)",
            ["verdict", "source"], registry=r,
        )
        self.request_latency = Histogram(
            f"{p}http_request_duration_seconds", "HTTP request latency per route",
            ["method", "route", "status"], buckets=_FAST_BUCKETS, registry=r,
        )
        self.opa_evaluations = Counter(
            f"{p}opa_evaluations_total", "OPA evaluations by outcome", ["outcome"], registry=r,
        )
        self.opa_latency = Histogram(
            f"{p}opa_evaluation_duration_seconds", "OPA evaluation latency",
            buckets=_FAST_BUCKETS, registry=r,
        )
        self.opa_restarts = Counter(
            f"{p}opa_restarts_total", "Restarts of the embedded OPA child", registry=r
        )
        self.audit_writes = Counter(
            f"{p}audit_writes_total", "Audit writes by outcome", ["outcome"], registry=r
        )
        self.db_queries = Histogram(
            f"{p}db_query_duration_seconds", "Audit store query latency",
            ["operation"], buckets=_FAST_BUCKETS, registry=r,
        )
        self.cache = Counter(
            f"{p}evidence_cache_total", "Evidence cache lookups", ["cache", "result"],
            registry=r,
        )
        self.spool_depth = Gauge(
            f"{p}audit_spool_depth", "Decisions waiting in the local spool", registry=r
        )
        self.spool_quarantined = Gauge(
            f"{p}audit_spool_quarantined",
            "Spooled decisions the audit store refused, kept in the quarantine file",
            registry=r,
        )
        r.register(LegacyNames([
            self.decisions, self.request_latency, self.opa_evaluations, self.opa_latency,
            self.opa_restarts, self.audit_writes, self.db_queries, self.cache, self.spool_depth,
            self.spool_quarantined,
        ]))
        # --- new in this release (no legacy names) ---------------------------------------
        self.audit_batches = Histogram(
            f"{p}audit_batch_decisions",
            "Decisions per audit write batch (one commit and fsync each): _count is commits, "
            "_sum decisions",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r,
        )
        self.policy_results = Counter(
            f"{p}policy_results_total",
            "Violations and warnings in recorded decisions, per policy (rule package)",
            ["policy", "kind"], registry=r,
        )
        self.evidence_steps = Counter(
            f"{p}evidence_steps_total",
            "Evidence steps (digest resolution and each verifier) by outcome",
            ["step", "outcome"], registry=r,
        )
        self.evidence_latency = Histogram(
            f"{p}evidence_step_duration_seconds", "Latency of one evidence step per image",
            ["step"], buckets=_FAST_BUCKETS, registry=r,
        )
        self.registry_requests = Counter(
            f"{p}registry_requests_total",
            "OCI registry round trips by operation and outcome (status class, timeout, ...)",
            ["operation", "outcome"], registry=r,
        )
        self.ecr_calls = Counter(
            f"{p}ecr_calls_total", "ECR API calls by operation and outcome (ok or error code)",
            ["operation", "outcome"], registry=r,
        )
        self.trust_root_age = Gauge(
            f"{p}trust_root_age_seconds",
            "Age of the Sigstore trust root in use (since its file was written)", registry=r,
        )
        self.last_checkpoint_age = Gauge(
            f"{p}audit_last_checkpoint_age_seconds",
            "Time since the newest signed audit checkpoint (NaN: none yet)", registry=r,
        )
        self.uncovered_records = Gauge(
            f"{p}audit_unsigned_records",
            "Recorded decisions not yet covered by a signed checkpoint", registry=r,
        )
        self.last_checkpoint_age.set_function(lambda: float("nan"))
        self.trust_root_age.set_function(lambda: float("nan"))
        self.build_info = Info(f"{p}build", "Version of the running gatekeeper", registry=r)
        # children of the metrics incremented on every decision (bounded label values)
        self._decisions = LabelChildren(self.decisions)
        self._policy_results = LabelChildren(self.policy_results)
        self._evidence_steps = LabelChildren(self.evidence_steps)
        self._evidence_latency = LabelChildren(self.evidence_latency)
        self.audit_write_outcomes = LabelChildren(self.audit_writes)
        self.db_query_operations = LabelChildren(self.db_queries)

    # --- wiring helpers ---------------------------------------------------------------------

    def set_build_info(self, version: str, **extra: str) -> None:
        self.build_info.info({"version": version, "python": platform.python_version(), **extra})

    def track_checkpoints(self, status: Callable[[], tuple[float | None, int]]) -> None:
        """``status()`` is (newest checkpoint time in epoch seconds, records after it)."""
        self.last_checkpoint_age.set_function(_age(lambda: status()[0]))
        self.uncovered_records.set_function(lambda: float(status()[1]))

    def track_trust_root(self, written_at: float | None) -> None:
        self.trust_root_age.set_function(_age(lambda: written_at))

    def registry_request(self, operation: str, outcome: str) -> None:
        self.registry_requests.labels(operation, outcome).inc()

    def ecr_call(self, operation: str, outcome: str) -> None:
        self.ecr_calls.labels(operation, outcome).inc()

    # --- EvaluationObserver -----------------------------------------------------------------

    def evidence_step(self, step: str, outcome: str, seconds: float) -> None:
        self._evidence_steps(step, outcome).inc()
        self._evidence_latency(step).observe(seconds)

    def decision_recorded(self, decision: Decision) -> None:
        self._decisions(decision.verdict.value, decision.source.value).inc()
        for violation in decision.violations:
            self._policy_results(violation.policy, "violation").inc()
        for warning in decision.warnings:
            self._policy_results(warning.policy, "warning").inc()
