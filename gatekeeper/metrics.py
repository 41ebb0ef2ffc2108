"""Prometheus metrics, on a registry of our own (so tests and several apps never collide)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.decisions = Counter(
            "gatekeeper_decisions_total", "Decisions by verdict and source",
            ["verdict", "source"], registry=r,
        )
        self.request_latency = Histogram(
            "gatekeeper_http_request_duration_seconds", "HTTP request latency per route",
            ["method", "route", "status"], buckets=_FAST_BUCKETS, registry=r,
        )
        self.opa_evaluations = Counter(
            "gatekeeper_opa_evaluations_total", "OPA evaluations by outcome",
            ["outcome"], registry=r,
        )
        self.opa_latency = Histogram(
            "gatekeeper_opa_evaluation_duration_seconds", "OPA evaluation latency",
            buckets=_FAST_BUCKETS, registry=r,
        )
        self.opa_restarts = Counter(
            "gatekeeper_opa_restarts_total", "Restarts of the embedded OPA child", registry=r
        )
        self.audit_writes = Counter(
            "gatekeeper_audit_writes_total", "Audit writes by outcome", ["outcome"], registry=r
        )
        self.db_queries = Histogram(
            "gatekeeper_db_query_duration_seconds", "Audit store query latency",
            ["operation"], buckets=_FAST_BUCKETS, registry=r,
        )
        self.cache = Counter(
            "gatekeeper_evidence_cache_total", "Evidence cache lookups", ["cache", "result"],
            registry=r,
        )
        self.spool_depth = Gauge(
            "gatekeeper_audit_spool_depth", "Decisions waiting in the local spool", registry=r
        )
        self.spool_quarantined = Gauge(
            "gatekeeper_audit_spool_quarantined",
            "Spooled decisions the audit store refused, kept in the quarantine file",
            registry=r,
        )
