"""ECR scan evidence through the real boto3 path against ``moto_server`` on loopback.

Findings are injected with moto's ``POST /moto-api/static/ecr/scan-finding-results``; moto
then answers ``describe_image_scan_findings`` for that repository and digest with them.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from gatekeeper.domain.ports import EvidenceContext, ScanReport, ScanSource
from gatekeeper.domain.reference import Digest, ImageReference, parse_digest, parse_image_reference
from gatekeeper.scans import EcrScanSource, ScanEvidenceCollector

pytestmark = pytest.mark.integration

ACCOUNT = "123456789012"
REGION = "eu-west-1"
HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
CONTEXT = EvidenceContext(environment="production", namespace="shop")


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # The adapter uses boto3's default chain; give it test credentials through the environment.
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture()
def ecr(moto_url: str) -> Any:
    return boto3.client("ecr", region_name=REGION, endpoint_url=moto_url)


PushImage = Callable[..., tuple[ImageReference, Digest]]


@pytest.fixture()
def push_image(ecr: Any) -> PushImage:
    """Create a repository and an image in moto, start its scan; return (reference, digest)."""

    def push(scan: bool = True) -> tuple[ImageReference, Digest]:
        repository = f"team/app-{uuid.uuid4().hex[:10]}"
        ecr.create_repository(repositoryName=repository)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": 7023, "digest": "sha256:" + uuid.uuid4().hex * 2},
            # moto derives the image digest from the layer digests: make each image unique.
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": 1024, "digest": "sha256:" + uuid.uuid4().hex * 2}],
        }
        image = ecr.put_image(
            repositoryName=repository, imageManifest=json.dumps(manifest), imageTag="1.0"
        )["image"]
        digest = parse_digest(image["imageId"]["imageDigest"])
        if scan:
            ecr.start_image_scan(repositoryName=repository, imageId={"imageDigest": str(digest)})
        return parse_image_reference(f"{HOST}/{repository}@{digest}"), digest

    return push


def complete_scan(
    findings: list[dict[str, Any]], *, age: timedelta = timedelta(hours=2)
) -> dict[str, Any]:
    """A finished enhanced scan with ``findings``, completed ``age`` ago (for :func:`inject`)."""
    recent = (datetime.now(UTC) - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding["severity"]] = counts.get(finding["severity"], 0) + 1
    return {
        "imageScanStatus": {"status": "COMPLETE"},
        "imageScanFindings": {"imageScanCompletedAt": recent,
                              "vulnerabilitySourceUpdatedAt": recent,
                              "findingSeverityCounts": counts, "enhancedFindings": findings},
    }  # fmt: skip


def inject(moto_url: str, reference: ImageReference, digest: Digest, **response: Any) -> None:
    result = {
        "registryId": ACCOUNT,
        "repositoryName": reference.repository,
        "imageId": {"imageDigest": str(digest)},
        **response,
    }
    request = urllib.request.Request(
        f"{moto_url}/moto-api/static/ecr/scan-finding-results",
        data=json.dumps({"results": [result], "region": REGION}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        assert answer.status == 201


def enhanced_finding(
    cve: str, package: str, installed: str, fixed: str | None, severity: str = "CRITICAL",
    *, score: float = 9.8, exploit: str = "YES",
) -> dict[str, Any]:
    vulnerable: dict[str, Any] = {"name": package, "version": installed,
                                  "packageManager": "OS", "arch": "x86_64"}
    if fixed is not None:
        vulnerable["fixedInVersion"] = fixed
    return {
        "awsAccountId": ACCOUNT,
        "findingArn": f"arn:aws:inspector2:{REGION}:{ACCOUNT}:finding/{uuid.uuid4().hex}",
        "description": f"{cve} in {package}",
        "packageVulnerabilityDetails": {
            "vulnerabilityId": cve, "source": "NVD", "vulnerablePackages": [vulnerable],
            "cvss": [{"baseScore": score, "scoringVector": "CVSS:3.1/AV:N", "source": "NVD",
                      "version": "3.1"}],
        },
        "score": score,
        "severity": severity,
        "status": "ACTIVE",
        "title": f"{cve} - {package}",
        "type": "PACKAGE_VULNERABILITY",
        "fixAvailable": "YES" if fixed else "NO",
        "exploitAvailable": exploit,
    }


COMPLETED = "2026-03-01T10:00:00Z"
DB_UPDATED = "2026-03-01T06:00:00Z"


def source(moto_url: str, **kwargs: Any) -> EcrScanSource:
    return EcrScanSource(endpoint_url=moto_url, retry_mode="standard", max_attempts=2, **kwargs)


def test_enhanced_findings_drive_the_evidence(moto_url: str, push_image: PushImage) -> None:
    reference, digest = push_image()
    inject(
        moto_url, reference, digest,
        imageScanStatus={"status": "ACTIVE", "description": "Continuous scan is selected"},
        imageScanFindings={
            "imageScanCompletedAt": COMPLETED,
            "vulnerabilitySourceUpdatedAt": DB_UPDATED,
            "findingSeverityCounts": {"CRITICAL": 1, "HIGH": 1, "UNTRIAGED": 1},
            "enhancedFindings": [
                enhanced_finding("CVE-2024-3094", "xz-utils", "5.6.0", "5.6.1"),
                enhanced_finding("CVE-2023-0001", "zlib", "1.2.11", None, "HIGH", score=7.5,
                                 exploit="NO"),
                enhanced_finding("CVE-2025-9999", "busybox", "1.36.1", None, "UNTRIAGED",
                                 score=0.0, exploit="NO"),
            ],
        },
    )
    evidence = ScanEvidenceCollector(source=source(moto_url)).collect(reference, digest, CONTEXT)
    assert evidence["state"] == "active"
    assert evidence["findings_available"] is True
    assert evidence["scan_type"] == "enhanced"
    assert evidence["status"] == "ACTIVE"
    assert evidence["completed_at"] == "2026-03-01T10:00:00Z"
    assert evidence["vulnerability_db_updated_at"] == "2026-03-01T06:00:00Z"
    assert evidence["severity_counts"] == {
        "CRITICAL": 1, "HIGH": 1, "MEDIUM": 0, "LOW": 0, "INFORMATIONAL": 0, "UNDEFINED": 0,
        "UNTRIAGED": 1,
    }
    assert evidence["counts_source"] == "reported"
    assert evidence["findings"][0] == {
        "id": "CVE-2024-3094", "severity": "CRITICAL", "package": "xz-utils",
        "installed_version": "5.6.0", "fixed_version": "5.6.1", "fix_available": True,
        "exploit_available": True, "score": 9.8, "package_manager": "OS",
        "title": "CVE-2024-3094 - xz-utils",
    }
    assert evidence["findings"][1]["fix_available"] is False
    assert [f["severity"] for f in evidence["findings"]] == ["CRITICAL", "HIGH", "UNTRIAGED"]
    assert evidence["location"] == {
        "registry_id": ACCOUNT, "region": REGION, "repository": reference.repository,
    }
    json.dumps(evidence)


def test_basic_findings(moto_url: str, push_image: PushImage) -> None:
    reference, digest = push_image()
    inject(
        moto_url, reference, digest,
        imageScanStatus={"status": "COMPLETE", "description": "The scan was completed."},
        imageScanFindings={
            "imageScanCompletedAt": COMPLETED,
            "vulnerabilitySourceUpdatedAt": DB_UPDATED,
            "findingSeverityCounts": {"HIGH": 1, "LOW": 1},
            "findings": [
                {"name": "CVE-2022-1111", "severity": "HIGH", "uri": "https://example.com",
                 "attributes": [{"key": "package_name", "value": "openssl"},
                                {"key": "package_version", "value": "1.1.1k"},
                                {"key": "CVSS3_SCORE", "value": "8.1"}]},
                {"name": "CVE-2021-2222", "severity": "LOW",
                 "attributes": [{"key": "package_name", "value": "bash"},
                                {"key": "package_version", "value": "5.0"},
                                {"key": "CVSS2_SCORE", "value": "2.1"}]},
            ],
        },
    )
    evidence = ScanEvidenceCollector(source=source(moto_url)).collect(reference, digest, CONTEXT)
    assert (evidence["state"], evidence["scan_type"]) == ("complete", "basic")
    assert evidence["severity_counts"]["HIGH"] == 1
    assert evidence["findings"][0] == {
        "id": "CVE-2022-1111", "severity": "HIGH", "package": "openssl",
        "installed_version": "1.1.1k", "fixed_version": None, "fix_available": None,
        "exploit_available": None, "score": 8.1, "package_manager": None, "title": None,
    }
    assert evidence["findings"][1]["score"] == 2.1


def test_missing_counts_are_computed(moto_url: str, push_image: PushImage) -> None:
    reference, digest = push_image()
    inject(
        moto_url, reference, digest,
        imageScanStatus={"status": "COMPLETE"},
        imageScanFindings={
            "imageScanCompletedAt": COMPLETED,
            "enhancedFindings": [
                enhanced_finding("CVE-1", "a", "1", "2", "MEDIUM"),
                enhanced_finding("CVE-2", "b", "1", "2", "MEDIUM"),
                enhanced_finding("CVE-3", "c", "1", None, "UNTRIAGED"),
            ],
        },
    )
    evidence = ScanEvidenceCollector(source=source(moto_url)).collect(reference, digest, CONTEXT)
    assert evidence["counts_source"] == "computed"
    assert evidence["severity_counts"]["MEDIUM"] == 2
    assert evidence["severity_counts"]["UNTRIAGED"] == 1
    assert evidence["vulnerability_db_updated_at"] is None


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("FAILED", "failed"),
        ("IN_PROGRESS", "pending"),
        ("PENDING", "pending"),
        ("UNSUPPORTED_IMAGE", "unsupported_image"),
        ("FINDINGS_UNAVAILABLE", "findings_unavailable"),
        ("SCAN_ELIGIBILITY_EXPIRED", "scan_eligibility_expired"),
        ("LIMIT_EXCEEDED", "limit_exceeded"),
        ("IMAGE_ARCHIVED", "image_archived"),
    ],
)
def test_every_status_has_its_own_state(
    status: str, state: str, moto_url: str, push_image: PushImage
) -> None:
    reference, digest = push_image()
    inject(moto_url, reference, digest,
           imageScanStatus={"status": status, "description": f"the scan is {status.lower()}"})
    evidence = ScanEvidenceCollector(source=source(moto_url)).collect(reference, digest, CONTEXT)
    assert evidence["state"] == state
    assert evidence["findings_available"] is False
    assert evidence["findings"] == []
    assert evidence["reason"] == f"ECR scan status {status}: the scan is {status.lower()}"


def test_image_never_scanned(moto_url: str, push_image: PushImage) -> None:
    reference, digest = push_image(scan=False)
    evidence = ScanEvidenceCollector(source=source(moto_url)).collect(reference, digest, CONTEXT)
    assert (evidence["state"], evidence["reason"]) == (
        "not_scanned", "ECR has no scan for this image"
    )


def test_unknown_repository(moto_url: str) -> None:
    reference = parse_image_reference(f"{HOST}/does/not-exist@sha256:{'c' * 64}")
    evidence = ScanEvidenceCollector(source=source(moto_url)).collect(
        reference, reference.digest, CONTEXT
    )
    assert evidence["state"] == "repository_not_found"


def test_image_not_on_ecr_is_not_applicable(moto_url: str) -> None:
    reference = parse_image_reference(f"ghcr.io/acme/app@sha256:{'d' * 64}")
    evidence = ScanEvidenceCollector(source=source(moto_url)).collect(
        reference, reference.digest, CONTEXT
    )
    assert evidence["state"] == "not_applicable"
    assert evidence["reason"] == "ghcr.io is not scanned by ecr"


def test_results_are_cached_per_digest(moto_url: str, push_image: PushImage) -> None:
    reference, digest = push_image()
    inject(moto_url, reference, digest, imageScanStatus={"status": "COMPLETE"},
           imageScanFindings={"imageScanCompletedAt": COMPLETED, "findingSeverityCounts": {}})
    now = [0.0]
    calls: list[str] = []
    real = source(moto_url)

    class CountingSource(ScanSource):
        name = "ecr"

        def applies_to(self, ref: ImageReference) -> bool:
            return real.applies_to(ref)

        def fetch(self, ref: ImageReference, dig: Digest, context: EvidenceContext) -> ScanReport:
            calls.append(str(dig))
            return real.fetch(ref, dig, context)

    collector = ScanEvidenceCollector(source=CountingSource(), ttl_seconds=60,
                                      clock=lambda: now[0])
    first = collector.collect(reference, digest, CONTEXT)
    assert collector.collect(reference, digest, CONTEXT) == first
    assert len(calls) == 1
    now[0] = 61.0
    collector.collect(reference, digest, CONTEXT)
    assert len(calls) == 2


def test_unreachable_endpoint_is_upstream_unavailable() -> None:
    from gatekeeper.errors import UpstreamUnavailableError

    dead = EcrScanSource(endpoint_url="http://127.0.0.1:9", retry_mode="standard",
                         max_attempts=1, connect_timeout=0.5, read_timeout=0.5)
    reference = parse_image_reference(f"{HOST}/team/app@sha256:{'e' * 64}")
    with pytest.raises(UpstreamUnavailableError, match="ECR scan findings for .* unavailable"):
        dead.fetch(reference, parse_digest("sha256:" + "e" * 64), CONTEXT)


def test_deadline_already_passed_is_upstream_unavailable(moto_url: str) -> None:
    from gatekeeper.errors import UpstreamUnavailableError

    reference = parse_image_reference(f"{HOST}/team/app@sha256:{'e' * 64}")
    late = EvidenceContext(environment="production", namespace=None, deadline=0.0)
    with pytest.raises(UpstreamUnavailableError, match="no time left"):
        source(moto_url).fetch(reference, parse_digest("sha256:" + "e" * 64), late)

