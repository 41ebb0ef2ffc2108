"""The ``scan`` collector's cache as the service sees it: the size bound (least recently used
goes first), the expiry instant, the negative answers kept for the short TTL, the hit/miss
metrics, and a cached section that callers cannot change (no network)."""

from __future__ import annotations

from gatekeeper.domain.ports import EvidenceContext, ScanSource
from gatekeeper.domain.reference import Digest, ImageReference, parse_image_reference
from gatekeeper.metrics import Metrics
from gatekeeper.scans import ScanEvidenceCollector, ScanReport, ScanState

CONTEXT = EvidenceContext(environment="staging", namespace=None)
HOST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedSource(ScanSource):
    """Answers ``state`` for every image and records which digests it was asked about."""

    name = "ecr"

    def __init__(self, state: ScanState = ScanState.COMPLETE) -> None:
        self.state = state
        self.asked: list[str] = []

    def applies_to(self, reference: ImageReference) -> bool:
        return True

    def fetch(
        self, reference: ImageReference, digest: Digest, context: EvidenceContext
    ) -> ScanReport:
        self.asked.append(digest.hex[:1])
        return ScanReport(self.state, f"ECR scan {self.state.value}", "ecr")


def image(letter: str) -> ImageReference:
    return parse_image_reference(f"{HOST}/app@sha256:{letter * 64}")


def lookups(metrics: Metrics, result: str) -> float | None:
    return metrics.registry.get_sample_value(
        "forge_gatekeeper_evidence_cache_total", {"cache": "scan", "result": result}
    )


def test_the_least_recently_used_report_is_dropped_at_the_bound_and_counted() -> None:
    source, metrics = ScriptedSource(), Metrics()
    collector = ScanEvidenceCollector(source=source, max_entries=2, metrics=metrics)

    for letter in "abacb":  # a, b; a again (a hit, now the newest); c drops b; b again
        reference = image(letter)
        collector.collect(reference, reference.digest, CONTEXT)

    assert source.asked == ["a", "b", "c", "b"]
    assert (lookups(metrics, "hit"), lookups(metrics, "miss")) == (1.0, 4.0)


def test_a_final_report_expires_at_its_ttl_and_not_before() -> None:
    clock, source = Clock(), ScriptedSource()
    collector = ScanEvidenceCollector(source=source, ttl_seconds=300, clock=clock)
    reference = image("a")

    collector.collect(reference, reference.digest, CONTEXT)
    clock.now = 299.999
    collector.collect(reference, reference.digest, CONTEXT)
    clock.now = 300.0
    collector.collect(reference, reference.digest, CONTEXT)

    assert source.asked == ["a", "a"]


def test_not_scanned_is_remembered_for_the_short_ttl_only() -> None:
    clock, source = Clock(), ScriptedSource(ScanState.NOT_SCANNED)
    collector = ScanEvidenceCollector(
        source=source, ttl_seconds=300, pending_ttl_seconds=30, clock=clock
    )
    reference = image("a")

    first = collector.collect(reference, reference.digest, CONTEXT)
    clock.now = 29.0
    collector.collect(reference, reference.digest, CONTEXT)
    clock.now = 30.0
    collector.collect(reference, reference.digest, CONTEXT)

    assert first["state"] == "not_scanned"
    assert source.asked == ["a", "a"]


def test_a_ttl_of_zero_caches_nothing() -> None:
    source = ScriptedSource()
    collector = ScanEvidenceCollector(source=source, ttl_seconds=0)
    reference = image("a")

    collector.collect(reference, reference.digest, CONTEXT)
    collector.collect(reference, reference.digest, CONTEXT)

    assert source.asked == ["a", "a"]


def test_changing_a_returned_section_does_not_change_the_cached_one() -> None:
    collector = ScanEvidenceCollector(source=ScriptedSource())
    reference = image("a")

    section = collector.collect(reference, reference.digest, CONTEXT)
    assert isinstance(section, dict)
    section["state"] = "tampered"

    assert collector.collect(reference, reference.digest, CONTEXT)["state"] == "complete"
