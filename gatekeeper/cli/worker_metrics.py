"""One ``/metrics`` for the N worker processes of ``gatekeeper serve --workers N``.

Each worker keeps its own registry (every collector of :class:`~gatekeeper.metrics.Metrics`
works unchanged, callback gauges included, which prometheus_client's multiprocess mode would
drop) and answers a connection on its private unix socket with its exposition text
(:class:`WorkerMetricsExporter`). The supervisor serves the metrics port; at each scrape
:class:`WorkerMetricsAggregator` reads every live worker and merges the families:

* counters and histograms (``_total``, ``_bucket``, ``_count``, ``_sum``) are summed per label
  set, ``_created`` takes the earliest: the series read as one process's would;
* gauges of per-worker state (the audit spools: each worker has its own) are summed; the other
  gauges describe shared state (checkpoint age, records not yet signed, trust root age, build
  info, the admission budget) and take the largest value a worker reports (NaN only when every
  worker reports NaN).

A worker that does not answer within the scrape's timeout (being restarted) is left out of that
scrape, and ``forge_gatekeeper_workers`` says how many answered out of how many configured.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import socketserver
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from gatekeeper.metrics import PREFIX

__all__ = ["WorkerMetricsAggregator", "WorkerMetricsExporter", "worker_metrics_socket"]

log = logging.getLogger(__name__)

#: Gauges whose value is each worker's own share (summed across the workers).
_SUMMED_GAUGE_SUFFIXES = ("audit_spool_depth", "audit_spool_quarantined")
_READ_LIMIT = 16 << 20


def worker_metrics_socket(runtime_dir: Path, index: int) -> Path:
    """Where worker ``index`` answers with its metrics."""
    return runtime_dir / f"metrics-{index}.sock"


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.wfile.write(generate_latest(self.server.registry))


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, registry: CollectorRegistry) -> None:
        self.registry = registry
        super().__init__(path, _Handler)


class WorkerMetricsExporter:
    """A worker's registry on a unix socket (a thread; the socket file is 0600)."""

    def __init__(self, path: Path, registry: CollectorRegistry) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        old_mask = os.umask(0o177)
        try:
            self._server = _Server(str(path), registry)
        finally:
            os.umask(old_mask)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="gatekeeper-worker-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.path.unlink(missing_ok=True)


def _read(path: Path, timeout: float) -> str | None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect(str(path))
            chunks: list[bytes] = []
            size = 0
            while chunk := connection.recv(1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > _READ_LIMIT:
                    raise OSError(f"more than {_READ_LIMIT} bytes")
    except OSError as exc:
        log.debug("worker metrics %s unreadable: %s", path, exc)
        return None
    return b"".join(chunks).decode()


def _merge_gauge(values: list[float], summed: bool) -> float:
    if summed:
        return float(sum(v for v in values if not math.isnan(v)))
    known = [v for v in values if not math.isnan(v)]
    return max(known) if known else float("nan")


class WorkerMetricsAggregator(Collector):
    """Collects every worker's families at each scrape and merges them (see the module)."""

    def __init__(self, sockets: Sequence[Path], *, timeout: float = 2.0) -> None:
        self._sockets = tuple(sockets)
        self._timeout = timeout

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        values: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[float]] = {}
        answered = 0
        for path in self._sockets:
            text = _read(path, self._timeout)
            if text is None:
                continue
            answered += 1
            for family in text_string_to_metric_families(text):
                families.setdefault(family.name, family)
                for sample in family.samples:
                    key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                    values.setdefault(key, []).append(sample.value)
        merged: dict[str, Metric] = {
            name: Metric(name, family.documentation, family.type)
            for name, family in families.items()
        }
        for (name, sample_name, labels), found in values.items():
            kind = families[name].type
            if sample_name.endswith("_created"):
                value = min(found)
            elif kind == "gauge":
                value = _merge_gauge(found, name.endswith(_SUMMED_GAUGE_SUFFIXES))
            else:
                value = float(sum(found))
            merged[name].add_sample(sample_name, dict(labels), value)
        yield from merged.values()
        workers = Metric(f"{PREFIX}workers", "Worker processes answering / configured", "gauge")
        workers.add_sample(f"{PREFIX}workers", {"state": "answering"}, float(answered))
        workers.add_sample(f"{PREFIX}workers", {"state": "configured"},
                           float(len(self._sockets)))
        yield workers


def aggregated_registry(sockets: Sequence[Path]) -> CollectorRegistry:
    """A registry whose only collector merges the workers' metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerMetricsAggregator(sockets))
    return registry
