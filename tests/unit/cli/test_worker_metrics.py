"""The supervisor's ``/metrics`` reads every worker's registry over its unix socket and merges
them so that the series read as one process's would."""

from __future__ import annotations

import math
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gatekeeper.cli.worker_metrics import (
    WorkerMetricsExporter,
    aggregated_registry,
    worker_metrics_socket,
)
from gatekeeper.metrics import Metrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_histograms_and_gauges_merge_across_workers(tmp_path: Path) -> None:
    first, second = Metrics(), Metrics()
    for metrics in (first, second):
        metrics.set_build_info("1.2.3")
    first.decisions.labels("allow", "admission").inc(3)
    second.decisions.labels("allow", "admission").inc(4)
    second.decisions.labels("deny", "pipeline").inc()
    first.opa_latency.observe(0.002)
    second.opa_latency.observe(0.2)
    first.spool_depth.set(2)
    second.spool_depth.set(5)
    first.track_checkpoints(lambda: (None, 7))  # both read the one shared chain head
    second.track_checkpoints(lambda: (None, 9))
    exporters = [WorkerMetricsExporter(worker_metrics_socket(tmp_path, i), m.registry)
                 for i, m in enumerate((first, second))]
    sockets = [worker_metrics_socket(tmp_path, i) for i in range(3)]  # worker 2 is down
    try:
        merged = samples(generate_latest(aggregated_registry(sockets)).decode())
    finally:
        for exporter in exporters:
            exporter.close()

    decisions = "forge_gatekeeper_decisions_total"
    assert merged[(decisions, (("source", "admission"), ("verdict", "allow")))] == 7
    assert merged[(decisions, (("source", "pipeline"), ("verdict", "deny")))] == 1
    assert merged[("gatekeeper_decisions_total",  # the deprecated name too
                   (("source", "admission"), ("verdict", "allow")))] == 7
    latency = "forge_gatekeeper_opa_evaluation_duration_seconds"
    assert merged[(f"{latency}_count", ())] == 2
    assert merged[(f"{latency}_bucket", (("le", "0.0025"),))] == 1
    assert merged[(f"{latency}_bucket", (("le", "+Inf"),))] == 2
    assert math.isclose(merged[(f"{latency}_sum", ())], 0.202)
    assert merged[("forge_gatekeeper_audit_spool_depth", ())] == 7  # each worker's own spool
    assert merged[("forge_gatekeeper_audit_unsigned_records", ())] == 9  # shared: the newest
    assert math.isnan(merged[("forge_gatekeeper_audit_last_checkpoint_age_seconds", ())])
    assert merged[("forge_gatekeeper_workers", (("state", "answering"),))] == 2
    assert merged[("forge_gatekeeper_workers", (("state", "configured"),))] == 3
    build = [value for (name, _), value in merged.items()
             if name == "forge_gatekeeper_build_info"]
    assert build == [1.0]  # the same version in every worker: one series

def test_the_socket_is_private(tmp_path: Path) -> None:
    exporter = WorkerMetricsExporter(worker_metrics_socket(tmp_path, 0), Metrics().registry)
    try:
        assert worker_metrics_socket(tmp_path, 0).stat().st_mode & 0o777 == 0o600
    finally:
        exporter.close()
    assert not worker_metrics_socket(tmp_path, 0).exists()
