"""The background loop: when to scan, and the metrics of the last scan.

A scan runs (a) at start, (b) every ``interval`` seconds, (c) as soon as the active policy
revision differs from the one last seen (checked every ``tick`` seconds: an activation reaches
the reports within one tick), (d) when :meth:`ComplianceLoop.trigger` asks for it. New scan
evidence (ECR findings published for a running digest) is read by every scan: background
evaluations never use the admission evidence cache, only the scan collector's own cache, whose
TTL (``ecr_scan_cache_seconds``) therefore bounds how late a new finding can show.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Gauge

from gatekeeper.compliance.scanner import ComplianceScanner

__all__ = ["BackgroundMetrics", "ComplianceLoop"]

log = logging.getLogger(__name__)


class BackgroundMetrics:
    """``forge_gatekeeper_background_violations{policy,namespace}``: violations of running workloads
    found by the last scan (a gauge: it goes down when they are fixed)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.violations = Gauge(
            "forge_gatekeeper_background_violations",
            "Violations of running workloads found by the last background scan",
            ["policy", "namespace"], registry=registry,
        )
        self.scans = Gauge(
            "forge_gatekeeper_background_last_scan_timestamp_seconds",
            "When the last background scan finished", registry=registry,
        )

    def publish(self, counts: Mapping[tuple[str, str], int]) -> None:
        self.violations.clear()
        for (policy, namespace), count in counts.items():
            self.violations.labels(policy=policy, namespace=namespace).set(count)
        self.scans.set_to_current_time()


class ComplianceLoop:
    def __init__(self, scanner: ComplianceScanner, *, interval: float, tick: float,
                 revision: Callable[[], str | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval <= 0 or tick <= 0:
            raise ValueError("background interval and tick must be positive")
        self._scanner = scanner
        self._interval = interval
        self._tick = min(tick, interval)
        self._revision = revision
        self._clock = clock
        self._stop = threading.Event()
        self._requested: str | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gatekeeper-background",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def trigger(self, reason: str) -> None:
        self._requested = reason

    def _probe(self) -> str | None:
        try:
            return self._revision()
        except Exception as exc:  # the engine may be restarting; the schedule still runs
            log.warning("background loop: policy revision unknown: %s", exc)
            return None

    def _run(self) -> None:
        last_scan: float | None = None
        seen = self._probe()
        reason: str | None = "start"
        while True:
            if reason is not None:
                try:
                    self._scanner.scan(reason)
                except Exception:  # the loop must outlive one failed scan; logged in full
                    log.exception("background scan (%s) failed", reason)
                last_scan = self._clock()
            if self._stop.wait(self._tick):
                return
            revision = self._probe()
            requested, self._requested = self._requested, None
            if revision is not None and revision != seen:
                reason, seen = "policy revision activated", revision
            elif requested is not None:
                reason = requested
            elif last_scan is None or self._clock() - last_scan >= self._interval:
                reason = "schedule"
            else:
                reason = None
