"""The ``scan`` evidence collector: one scan report per image digest, cached with a TTL.

Reports whose state can still change soon (pending, not scanned yet) are cached for a shorter
time than final ones. Transient failures are never cached: the exception propagates, so the
service denies this request and the next one asks the scanner again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.ports.scans import ScanReport, ScanSource, ScanState
from gatekeeper.domain.reference import Digest, ImageReference
from gatekeeper.domain.ttl_cache import TtlCache
from gatekeeper.metrics import Metrics

__all__ = ["ScanEvidenceCollector"]

_SHORT_LIVED = frozenset({ScanState.PENDING, ScanState.NOT_SCANNED, ScanState.IMAGE_NOT_FOUND})


class ScanEvidenceCollector:
    """Implements :class:`~gatekeeper.domain.ports.EvidenceCollector` under the name ``scan``."""

    name = "scan"

    def __init__(
        self,
        *,
        source: ScanSource,
        ttl_seconds: float = 300.0,
        pending_ttl_seconds: float = 30.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self._source = source
        self._ttl = ttl_seconds
        self._pending_ttl = pending_ttl_seconds
        self._cache: TtlCache[Mapping[str, Any]] = TtlCache(
            max_entries=max_entries, monotonic=clock
        )
        self._metrics = metrics

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.cache.labels(cache="scan", result=result).inc()

    def collect(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Mapping[str, Any]:
        if not self._source.applies_to(reference):
            return ScanReport(
                ScanState.NOT_APPLICABLE,
                f"{reference.registry} is not scanned by {self._source.name}",
                self._source.name,
            ).as_input()
        if digest is None:
            return ScanReport(
                ScanState.IMAGE_NOT_FOUND, "image digest unknown: cannot look up its scan",
                self._source.name,
            ).as_input()
        key = f"{reference.name}@{digest}"
        cached = self._cache.get(key)
        if cached is not None:
            self._count("hit")
            return dict(cached)
        self._count("miss")
        report = self._source.fetch(reference, digest, context)
        section = report.as_input()
        ttl = self._pending_ttl if report.state in _SHORT_LIVED else self._ttl
        self._cache.put(key, section, ttl)
        return dict(section)
