"""Pagination and throttling retries of the real boto3 path, against a loopback ECR endpoint.

moto answers ``describe_image_scan_findings`` with one stored response whatever the
``nextToken`` is, so it cannot show pagination. This test serves ECR's JSON protocol
(``X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.DescribeImageScanFindings``) from a
real HTTP server on loopback: three pages, and a throttling error before the second page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import parse_image_reference
from gatekeeper.errors import UpstreamUnavailableError
from gatekeeper.scans import EcrScanSource
from tests.helpers.net import serving_in_thread

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "f" * 64
REFERENCE = parse_image_reference(f"123456789012.dkr.ecr.us-east-2.amazonaws.com/app@{DIGEST}")
CONTEXT = EvidenceContext(environment="production", namespace=None)


def _page(index: int, token: str | None) -> dict[str, Any]:
    findings = [
        {
            "packageVulnerabilityDetails": {
                "vulnerabilityId": f"CVE-2026-{index}{n:03d}",
                "vulnerablePackages": [{"name": f"pkg{index}{n}", "version": "1.0",
                                        "fixedInVersion": "1.1"}],
            },
            "severity": "HIGH", "score": 7.0, "fixAvailable": "YES", "exploitAvailable": "NO",
        }
        for n in range(2)
    ]
    page: dict[str, Any] = {
        "registryId": "123456789012", "repositoryName": "app", "imageId": {"imageDigest": DIGEST},
        "imageScanStatus": {"status": "COMPLETE"},
        "imageScanFindings": {"imageScanCompletedAt": 1772359200.0,
                              "findingSeverityCounts": {"HIGH": 6},
                              "enhancedFindings": findings},
    }
    if token:
        page["nextToken"] = token
    return page


class _EcrHandler(BaseHTTPRequestHandler):
    server: _EcrServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.headers.get("X-Amz-Target"), body))
        token = body.get("nextToken")
        if token == "page-2" and self.server.throttles_left > 0:
            self.server.throttles_left -= 1
            self._answer(400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
            return
        if self.server.always_throttle:
            self._answer(400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
            return
        pages = {None: _page(1, "page-2"), "page-2": _page(2, "page-3"), "page-3": _page(3, None)}
        self._answer(200, pages[token])

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _EcrServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EcrHandler)
        self.requests: list[tuple[str | None, dict[str, Any]]] = []
        self.throttles_left = 1
        self.always_throttle = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_EcrServer]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    ecr = _EcrServer()
    with serving_in_thread(ecr):
        yield ecr


def test_all_pages_are_read_and_throttling_is_retried(server: _EcrServer) -> None:
    source = EcrScanSource(endpoint_url=server.url, retry_mode="standard", max_attempts=3,
                           page_size=2)
    report = source.fetch(REFERENCE, REFERENCE.digest, CONTEXT)  # type: ignore[arg-type]
    assert report.finding_count == 6
    assert [f.id for f in report.findings][:2] == ["CVE-2026-1000", "CVE-2026-1001"]
    assert report.truncated is False
    tokens = [body.get("nextToken") for _, body in server.requests]
    assert tokens == [None, "page-2", "page-2", "page-3"]  # one throttled retry
    target, first = server.requests[0]
    assert target == "AmazonEC2ContainerRegistry_V20150921.DescribeImageScanFindings"
    assert first == {"registryId": "123456789012", "repositoryName": "app",
                     "imageId": {"imageDigest": DIGEST}, "maxResults": 2}
    assert report.as_input()["completed_at"] == "2026-03-01T10:00:00Z"


def test_finding_cap_stops_paging_and_flags_truncation(server: _EcrServer) -> None:
    server.throttles_left = 0
    source = EcrScanSource(endpoint_url=server.url, page_size=2, max_findings=3)
    report = source.fetch(REFERENCE, REFERENCE.digest, CONTEXT)  # type: ignore[arg-type]
    assert len(report.findings) == 3
    assert report.truncated is True
    assert report.severity_counts["HIGH"] == 6  # ECR's totals, not the fetched ones


def test_persistent_throttling_is_upstream_unavailable(server: _EcrServer) -> None:
    server.always_throttle = True
    source = EcrScanSource(endpoint_url=server.url, retry_mode="standard", max_attempts=2)
    with pytest.raises(UpstreamUnavailableError) as caught:
        source.fetch(REFERENCE, REFERENCE.digest, CONTEXT)  # type: ignore[arg-type]
    assert "(ThrottlingException)" in caught.value.message
    assert len(server.requests) == 2
