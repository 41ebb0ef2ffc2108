"""Registry round trips and ECR API calls are counted by outcome, against the real servers
(docker-registry and moto_server on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.domain import parse_image_reference
from gatekeeper.metrics import Metrics
from gatekeeper.registry import OciRegistryClient, RegistryClientSettings
from gatekeeper.scans import EcrScanSource, ScanEvidenceCollector
from tests.integration.cosign_fixtures import push_image, registry_host, unique_repository
from tests.integration.test_ecr_scans import (  # noqa: F401  (fixtures)
    CONTEXT,
    HOST,
    PushImage,
    aws_credentials,
    ecr,
)
from tests.integration.test_ecr_scans import push_image as push_ecr_image  # noqa: F401

pytestmark = pytest.mark.integration


def test_registry_round_trips_by_outcome(tmp_path: Path) -> None:
    host = registry_host()
    metrics = Metrics()
    client = OciRegistryClient(
        RegistryClientSettings.from_mapping({"hosts": [{"host": host, "plain_http": True}]}),
        on_request=metrics.registry_request,
    )
    repository = unique_repository("metrics")
    digest = push_image(host, f"{repository}:1.0", "counted", tmp_path)
    assert client.resolve_digest(parse_image_reference(f"{host}/{repository}:1.0")) == digest
    with pytest.raises(Exception, match="not found|404|unknown"):
        client.resolve_digest(parse_image_reference(f"{host}/{repository}:nope"))
    client.close()
    counted = {
        (s.labels["operation"], s.labels["outcome"]): s.value
        for family in metrics.registry.collect()
        if family.name == "forge_gatekeeper_registry_requests"
        for s in family.samples if s.name.endswith("_total")
    }
    assert counted.get(("head", "2xx"), 0) + counted.get(("get", "2xx"), 0) >= 1
    assert counted.get(("head", "404"), 0) + counted.get(("get", "404"), 0) >= 1
    assert not any(outcome in ("timeout", "unreachable") for _, outcome in counted)


def test_ecr_calls_by_operation_and_outcome(moto_url: str, push_ecr_image: PushImage) -> None:  # noqa: F811
    metrics = Metrics()
    source = EcrScanSource(endpoint_url=moto_url, max_attempts=1, on_call=metrics.ecr_call)
    reference, digest = push_ecr_image(scan=False)
    ScanEvidenceCollector(source=source).collect(reference, digest, CONTEXT)
    missing = parse_image_reference(f"{HOST}/does/not-exist@sha256:{'c' * 64}")
    ScanEvidenceCollector(source=source).collect(missing, missing.digest, CONTEXT)
    sample = metrics.registry.get_sample_value
    assert sample("forge_gatekeeper_ecr_calls_total", {
        "operation": "DescribeImageScanFindings", "outcome": "ScanNotFoundException"}) == 1
    assert sample("forge_gatekeeper_ecr_calls_total", {
        "operation": "DescribeImageScanFindings", "outcome": "RepositoryNotFoundException"}) == 1
