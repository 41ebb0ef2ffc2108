"""ECR scan evidence path against moto: boto3 describe_image_scan_findings -> evidence.scan.

Run: .venv/bin/python -m benchmarks.bench_ecr [--rounds N] [--findings N]
Uses GATEKEEPER_TEST_MOTO_URL when set, else starts its own ``moto_server`` on loopback.
Prints the cold path (one real boto3 call through moto, enhanced findings normalised) and the
cached path (the collector's per-digest TTL cache).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3

from benchmarks.common import free_port, summarise
from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import parse_digest, parse_image_reference
from gatekeeper.scans import EcrScanSource, ScanEvidenceCollector

ACCOUNT, REGION = "123456789012", "eu-west-1"
HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"


@contextlib.contextmanager
def moto_endpoint() -> Iterator[str]:
    url = os.environ.get("GATEKEEPER_TEST_MOTO_URL")
    if url:
        yield url
        return
    port = free_port()
    binary = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()  # noqa: S310
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def finding(index: int) -> dict[str, Any]:
    return {
        "packageVulnerabilityDetails": {
            "vulnerabilityId": f"CVE-2026-{index:05d}",
            "vulnerablePackages": [{"name": f"pkg{index}", "version": "1.0",
                                    "fixedInVersion": "1.1", "packageManager": "OS"}],
        },
        "severity": ("CRITICAL", "HIGH", "MEDIUM", "LOW")[index % 4], "score": 7.0,
        "fixAvailable": "YES", "exploitAvailable": "NO", "status": "ACTIVE",
        "title": f"CVE-2026-{index:05d} - pkg{index}", "type": "PACKAGE_VULNERABILITY",
    }


def prepare(url: str, findings: int) -> tuple[str, str]:
    ecr = boto3.client("ecr", region_name=REGION, endpoint_url=url)
    repository = f"bench/app-{uuid.uuid4().hex[:8]}"
    ecr.create_repository(repositoryName=repository)
    manifest = {"schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                           "size": 1, "digest": "sha256:" + uuid.uuid4().hex * 2},
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                            "size": 1, "digest": "sha256:" + uuid.uuid4().hex * 2}]}
    image = ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest))
    digest = image["image"]["imageId"]["imageDigest"]
    ecr.start_image_scan(repositoryName=repository, imageId={"imageDigest": digest})
    result = {
        "registryId": ACCOUNT, "repositoryName": repository, "imageId": {"imageDigest": digest},
        "imageScanStatus": {"status": "ACTIVE"},
        "imageScanFindings": {
            "imageScanCompletedAt": "2026-03-01T10:00:00Z",
            "vulnerabilitySourceUpdatedAt": "2026-03-01T06:00:00Z",
            "findingSeverityCounts": {"CRITICAL": findings // 4},
            "enhancedFindings": [finding(i) for i in range(findings)],
        },
    }
    request = urllib.request.Request(
        f"{url}/moto-api/static/ecr/scan-finding-results",
        data=json.dumps({"results": [result], "region": REGION}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 - loopback
    return repository, digest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--findings", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    context = EvidenceContext(environment="production", namespace=None)
    with moto_endpoint() as url:
        repository, digest_text = prepare(url, args.findings)
        reference = parse_image_reference(f"{HOST}/{repository}@{digest_text}")
        digest = parse_digest(digest_text)
        source = EcrScanSource(endpoint_url=url)
        source.fetch(reference, digest, context)  # warm-up: client creation, connection
        cold: list[float] = []
        for _ in range(args.rounds):
            collector = ScanEvidenceCollector(source=source)
            start = time.perf_counter()
            evidence = collector.collect(reference, digest, context)
            cold.append((time.perf_counter() - start) * 1000)
        assert evidence["finding_count"] == args.findings, evidence["reason"]
        warm: list[float] = []
        for _ in range(args.rounds * 20):
            start = time.perf_counter()
            collector.collect(reference, digest, context)
            warm.append((time.perf_counter() - start) * 1000)
        cold_summary, warm_summary = summarise(cold), summarise(warm)
        print(f"cores: {os.cpu_count()}  moto {url}  {args.findings} enhanced findings")
        print(f"cold (boto3 -> moto -> evidence): median {cold_summary.p50:.2f} ms, "
              f"p90 {cold_summary.p90:.2f} ms over {len(cold)} calls")
        print(f"cached (per-digest TTL cache):    median {warm_summary.p50 * 1000:.1f} us, "
              f"p90 {warm_summary.p90 * 1000:.1f} us over {len(warm)} calls")


if __name__ == "__main__":
    main()
