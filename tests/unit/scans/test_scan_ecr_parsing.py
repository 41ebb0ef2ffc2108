"""ECR host parsing, response -> report mapping, and the TTL cache (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from gatekeeper.domain.ports import EvidenceCollector, EvidenceContext, ScanSource
from gatekeeper.domain.reference import Digest, ImageReference, parse_image_reference
from gatekeeper.domain.ttl_cache import TtlCache
from gatekeeper.errors import UpstreamUnavailableError
from gatekeeper.scans import (
    EcrImageLocation,
    EcrScanSource,
    ScanEvidenceCollector,
    ScanReport,
    ScanState,
    parse_ecr_host,
    report_from_pages,
)

LOCATION = EcrImageLocation("123456789012", "eu-west-1", "app", "x")
CONTEXT = EvidenceContext(environment="staging", namespace=None)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:1", ("123456789012", "eu-west-1")),
        ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/app", ("123456789012",
                                                                       "us-gov-west-1")),
        ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/app", ("123456789012", "cn-north-1")),
        ("123456789012.dkr-ecr.ap-southeast-2.on.aws/app", ("123456789012", "ap-southeast-2")),
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com:443/app", ("123456789012", "eu-west-1")),
        ("public.ecr.aws/nginx/nginx", None),
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.io/app", None),
        ("12345678901.dkr.ecr.eu-west-1.amazonaws.com/app", None),
        ("ghcr.io/acme/app", None),
    ],
)
def test_parse_ecr_host(image: str, expected: tuple[str, str] | None) -> None:
    location = parse_ecr_host(parse_image_reference(image))
    if expected is None:
        assert location is None
    else:
        assert location is not None
        assert (location.registry_id, location.region) == expected


def test_unknown_status_fails_closed() -> None:
    report = report_from_pages(
        [{"imageScanStatus": {"status": "SOMETHING_NEW"}}], LOCATION, max_findings=10
    )
    assert report.state is ScanState.UNKNOWN_STATUS
    assert report.state.findings_available is False


def test_missing_status_is_unknown() -> None:
    assert report_from_pages([{}], LOCATION, max_findings=10).state is ScanState.UNKNOWN_STATUS


def test_enhanced_finding_with_two_packages_counts_once() -> None:
    page: dict[str, Any] = {
        "imageScanStatus": {"status": "COMPLETE"},
        "imageScanFindings": {"enhancedFindings": [{
            "severity": "HIGH", "fixAvailable": "PARTIAL", "exploitAvailable": "NO",
            "scoreDetails": {"cvss": {"score": 7.1}},
            "packageVulnerabilityDetails": {
                "vulnerabilityId": "CVE-2026-1",
                "vulnerablePackages": [
                    {"name": "libssl3", "version": "3.0.2", "release": "0ubuntu1.10",
                     "fixedInVersion": "3.0.2-0ubuntu1.12"},
                    {"name": "openssl", "version": "3.0.2", "epoch": 1,
                     "fixedInVersion": "NotAvailable"},
                ],
            },
        }]},
    }
    report = report_from_pages([page], LOCATION, max_findings=10)
    assert report.counts_source == "computed"
    assert report.severity_counts["HIGH"] == 1
    assert [(f.package, f.installed_version, f.fixed_version, f.score) for f in report.findings] == [
        ("libssl3", "3.0.2-0ubuntu1.10", "3.0.2-0ubuntu1.12", 7.1),
        ("openssl", "1:3.0.2", None, 7.1),
    ]
    assert all(f.fix_available is True for f in report.findings)  # PARTIAL: some fix exists


def test_complete_scan_without_findings() -> None:
    report = report_from_pages(
        [{"imageScanStatus": {"status": "COMPLETE"}, "imageScanFindings": {}}],
        LOCATION, max_findings=10,
    )
    assert report.state is ScanState.COMPLETE
    assert report.as_input()["severity_counts"] == dict.fromkeys(
        ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED", "UNTRIAGED"), 0
    )


def test_ttl_cache_expires_and_evicts() -> None:
    now = [0.0]
    cache: TtlCache[int] = TtlCache(max_entries=2, monotonic=lambda: now[0])
    cache.put("a", 1, ttl_seconds=10)
    cache.put("b", 2, ttl_seconds=10)
    cache.put("c", 3, ttl_seconds=10)
    assert cache.get("a") is None  # evicted (LRU)
    assert cache.get("b") == 2
    now[0] = 10.0
    assert cache.get("b") is None  # expired


class FailingSource(ScanSource):
    name = "ecr"

    def __init__(self) -> None:
        self.calls = 0

    def applies_to(self, reference: ImageReference) -> bool:
        return True

    def fetch(self, reference: ImageReference, digest: Digest, context: EvidenceContext
              ) -> ScanReport:
        self.calls += 1
        if self.calls == 1:
            raise UpstreamUnavailableError("ECR down")
        return ScanReport(ScanState.PENDING, "ECR scan status PENDING", "ecr")


def test_transient_failures_are_not_cached_and_pending_is_short_lived() -> None:
    now = [0.0]
    failing = FailingSource()
    collector = ScanEvidenceCollector(source=failing, ttl_seconds=300, pending_ttl_seconds=30,
                                      clock=lambda: now[0])
    assert isinstance(collector, EvidenceCollector)
    image = parse_image_reference("123456789012.dkr.ecr.eu-west-1.amazonaws.com/a@sha256:"
                                  + "1" * 64)
    with pytest.raises(UpstreamUnavailableError):
        collector.collect(image, image.digest, CONTEXT)
    assert collector.collect(image, image.digest, CONTEXT)["state"] == "pending"
    now[0] = 29.0
    collector.collect(image, image.digest, CONTEXT)
    assert failing.calls == 2
    now[0] = 31.0
    collector.collect(image, image.digest, CONTEXT)
    assert failing.calls == 3


def test_unknown_digest_is_reported_not_raised() -> None:
    collector = ScanEvidenceCollector(source=EcrScanSource(endpoint_url="http://127.0.0.1:9"))
    image = parse_image_reference("123456789012.dkr.ecr.eu-west-1.amazonaws.com/a:1")
    assert collector.collect(image, None, CONTEXT)["state"] == "image_not_found"
