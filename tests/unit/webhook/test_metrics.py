"""Admission metrics: every answer is counted by outcome, refusals at the edge too."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from gatekeeper.webhook import (
    AdmissionHandler,
    AdmissionMetrics,
    AdmissionSettings,
    build_admission_router,
    parse_admission_review,
)
from tests.unit.webhook.fakes import build_service

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "admission"
API = "ghcr.io/acme/api:1.4"


def count(registry: CollectorRegistry, outcome: str, webhook: str = "validate") -> float:
    value = registry.get_sample_value(
        "gatekeeper_admission_reviews_total", {"webhook": webhook, "outcome": outcome})
    return value or 0.0


def test_outcomes_and_durations_are_recorded() -> None:
    registry = CollectorRegistry()
    service, _ = build_service(deny={API: "unsigned"})
    handler = AdmissionHandler(service, AdmissionSettings(), metrics=AdmissionMetrics(registry))
    for name in ("job-create", "daemonset-create", "pod-delete", "configmap-create"):
        review = parse_admission_review((ASSETS / f"{name}.json").read_bytes())
        asyncio.run(handler.handle(review, webhook="validate"))
    assert count(registry, "denied") == 1
    assert count(registry, "allowed") == 1
    assert count(registry, "not_evaluated") == 2
    assert registry.get_sample_value(
        "gatekeeper_admission_review_duration_seconds_count", {"webhook": "validate"}) == 4


def test_out_of_time_is_its_own_outcome() -> None:
    registry = CollectorRegistry()
    service, _ = build_service(delay=2.0)
    handler = AdmissionHandler(
        service, AdmissionSettings(budget_seconds=0.2, webhook_timeout_seconds=1.0),
        metrics=AdmissionMetrics(registry))
    review = parse_admission_review((ASSETS / "daemonset-create.json").read_bytes())
    asyncio.run(handler.handle(review, webhook="mutate"))
    assert count(registry, "out_of_time", "mutate") == 1
    handler.close()


def test_refused_requests_are_counted_by_status() -> None:
    registry = CollectorRegistry()
    service, _ = build_service()
    handler = AdmissionHandler(service, AdmissionSettings(), metrics=AdmissionMetrics(registry))
    app = FastAPI()
    app.include_router(build_admission_router(handler))
    with TestClient(app) as client:
        client.post("/admission/validate", content=b"nope",
                    headers={"Content-Type": "application/json"})
        client.post("/admission/mutate/never", content=b"{}",
                    headers={"Content-Type": "application/json"})
    assert registry.get_sample_value("gatekeeper_admission_rejected_requests_total",
                                     {"webhook": "validate", "status": "400"}) == 1
    assert registry.get_sample_value("gatekeeper_admission_rejected_requests_total",
                                     {"webhook": "mutate", "status": "404"}) == 1
