"""Admission metrics, registered on the application's own registry (``Metrics.registry``).

What an operator watches before trusting a webhook with ``failurePolicy: Fail``: how many
reviews were answered and how (``allowed``, ``denied``, ``not_evaluated``, ``out_of_time``,
``failed``, ``fail_open``), how long they took against the budget, and how many were refused
at the edge as malformed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gatekeeper.metrics import PREFIX, LabelChildren, LegacyNames

__all__ = ["AdmissionMetrics", "Outcome"]

#: Buckets around the admission budget: milliseconds for cached digests, seconds for the tail.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 6, 8, 10)

Outcome = str  # one of the label values listed in the module docstring


class AdmissionMetrics:
    def __init__(self, registry: CollectorRegistry, *, budget_seconds: float | None = None) -> None:
        self.reviews = Counter(
            f"{PREFIX}admission_reviews_total",
            "AdmissionReviews answered, by webhook and outcome",
            ["webhook", "outcome"], registry=registry,
        )
        self.duration = Histogram(
            f"{PREFIX}admission_review_duration_seconds",
            "Time from receiving an AdmissionReview to answering it",
            ["webhook"], buckets=_BUCKETS, registry=registry,
        )
        self.rejected = Counter(
            f"{PREFIX}admission_rejected_requests_total",
            "Requests refused before evaluation (not JSON, not v1, too large, bad path)",
            ["webhook", "status"], registry=registry,
        )
        registry.register(LegacyNames([self.reviews, self.duration, self.rejected]))
        #: The internal budget, so alerts compare latency with it ("near its budget").
        self.budget = Gauge(
            f"{PREFIX}admission_budget_seconds",
            "Internal time budget of one AdmissionReview (below the webhook timeout)",
            registry=registry,
        )
        if budget_seconds is not None:
            self.budget.set(budget_seconds)
        self._reviews = LabelChildren(self.reviews)
        self._duration = LabelChildren(self.duration)

    def observe(self, webhook: str, outcome: Outcome, seconds: float) -> None:
        self._reviews(webhook, outcome).inc()
        self._duration(webhook).observe(seconds)
