"""What tracing and the metrics observer add to one decision (the service alone, in process).

Run: .venv/bin/python -m benchmarks.bench_tracing [--rounds N]
Measures ``EvaluationService.evaluate`` for a 3-image request with three evidence steps per
image and in-memory fakes for OPA and the audit store (so only the gatekeeper's own work is
timed): tracing off (no-op tracer), and tracing on with the real SDK, batch processor and OTLP
exporter pointed at a closed loopback port (the export runs on its own thread; spans that
cannot be delivered are dropped, never waited for). Target: under 1 ms added per decision
(p50, 2 cores; 12 spans per decision).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping
from typing import Any

from benchmarks.common import free_port, summarise
from gatekeeper.domain import (
    EnforcementMode,
    EvaluationRequest,
    Source,
    Ticket,
    parse_image_reference,
)
from gatekeeper.domain.ports import EvidenceCollector, EvidenceContext
from gatekeeper.domain.reference import Digest, ImageReference
from gatekeeper.metrics import Metrics
from gatekeeper.service import EvaluationService
from gatekeeper.tracing import build_tracing
from tests.fakes import FakeAuditLog, FakePolicyEngine


class _Collector(EvidenceCollector):
    def __init__(self, name: str) -> None:
        self.name = name

    def collect(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Mapping[str, Any]:
        return {"status": "verified"}


def _run(service: EvaluationService, request: EvaluationRequest, rounds: int) -> list[float]:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        service.evaluate(request)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    rounds = parser.parse_args().rounds
    request = EvaluationRequest(
        images=tuple(parse_image_reference(f"registry.example.com/app/{i}:1.0") for i in range(3)),
        source=Source.PIPELINE, environment="production", namespace="pay",
        ticket=Ticket("INT-1", "PLAN-1", "CHG-1", "DEP-1"), mode=EnforcementMode.ENFORCE,
    )
    collectors = [_Collector(n) for n in ("signatures", "sbom", "scan")]
    off = build_tracing(None, service_name="bench", sample_ratio=1.0, version="bench")
    on = build_tracing(f"http://127.0.0.1:{free_port()}", service_name="bench",
                       sample_ratio=1.0, version="bench")
    results = {}
    for label, tracing, observers in (
        ("tracing off, no observer", off, []),
        ("tracing off, metrics observer", off, [Metrics()]),
        ("tracing on (SDK + OTLP batch), metrics", on, [Metrics()]),
    ):
        service = EvaluationService(
            policy_engine=FakePolicyEngine(), audit_log=FakeAuditLog(), collectors=collectors,
            tracer=tracing.tracer, observers=observers,
        )
        _run(service, request, 200)  # warm-up
        results[label] = _run(service, request, rounds)
    on.shutdown()
    print(f"cores: {os.cpu_count()}, rounds: {rounds}, 3 images x 3 evidence steps")
    for label, timings in results.items():
        summary = summarise(timings)
        print(f"{label:<40} p50 {summary.p50:.3f} ms  p99 {summary.p99:.3f} ms")


if __name__ == "__main__":
    main()
