"""End to end: uploaded SBOM + ECR findings (moto) -> the real OPA with policies/ -> decision.

The service, the real embedded OPA with the repository's policies, the SQL SBOM store and the
boto3 ECR path are all real; only the audit log is the fake that implements the real port.
The SBOM/vulnerability settings are loaded as an extra OPA data directory, exactly where the
proposal puts them (``data.gatekeeper.config.sbom`` / ``.vulnerabilities``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gatekeeper.domain import EvaluationRequest, Source, Verdict
from gatekeeper.domain.reference import parse_image_reference
from gatekeeper.policy import EmbeddedOpa
from gatekeeper.sbom import (
    CycloneDxValidator,
    SbomDocumentInspector,
    SbomEvidenceCollector,
    SqlSbomStore,
    StoredSbomSource,
)
from gatekeeper.scans import EcrScanSource, ScanEvidenceCollector
from gatekeeper.service import EvaluationService
from gatekeeper.usecases import SbomUploads
from tests.fakes import FakeAuditLog
from tests.integration.test_ecr_scans import (
    HOST,
    PushImage,
    complete_scan,
    enhanced_finding,
    inject,
)
from tests.unit.sbom.factory import cyclonedx, cyclonedx_component, encode

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

SETTINGS: dict[str, Any] = {
    # This module isolates SBOM and scan evidence; signatures have their own end-to-end tests
    # (test_cosign_decisions.py), so production's signature requirement is lifted here.
    "signatures": {"environments": {"production": {"require_signature": False, "require_provenance": False}}},
    "sbom": {
        "environments": {"production": {"deny_when_not_collected": True}},
        "banned_components": [
            {"purl": "pkg:npm/event-stream@3.3.6", "reason": "malicious release (flatmap-stream)"}
        ],
        "banned_licenses": [{"id": "AGPL-*", "reason": "network copyleft"}],
    },
    "vulnerabilities": {
        "environments": {"production": {"deny_when_not_collected": True}},
        "cve_exceptions": [],
    },
}

# Reuse the moto fixtures of test_ecr_scans.
from tests.integration.test_ecr_scans import (  # noqa: E402
    aws_credentials,  # noqa: F401
    ecr,  # noqa: F401
    push_image,  # noqa: F401
)


@pytest.fixture()
def gate(tmp_path: Path, moto_url: str) -> Iterator[tuple[EvaluationService, SbomUploads]]:  # noqa: F811
    config_root = tmp_path / "opa-data"
    for key, value in SETTINGS.items():
        folder = config_root / "gatekeeper" / "config" / key
        folder.mkdir(parents=True)
        (folder / "data.json").write_text(json.dumps(value))
    opa_binary = os.environ.get("GATEKEEPER_OPA_BINARY") or str(REPO / ".tools/bin/opa")
    opa = EmbeddedOpa(opa_binary=opa_binary, policy_dir=REPO / "policies",
                      data_paths=[config_root])
    opa.start()
    validator = CycloneDxValidator()
    store = SqlSbomStore(sa.create_engine(f"sqlite:///{tmp_path / 'gatekeeper.db'}"))
    store.create_tables()
    sbom_collector = SbomEvidenceCollector(sources=[StoredSbomSource(store)], validator=validator)
    scan_collector = ScanEvidenceCollector(
        source=EcrScanSource(endpoint_url=moto_url, retry_mode="standard", max_attempts=2)
    )
    service = EvaluationService(policy_engine=opa.engine, audit_log=FakeAuditLog(),
                                collectors=[sbom_collector, scan_collector])
    try:
        yield service, SbomUploads(
            store=store,
            inspector=SbomDocumentInspector(collector=sbom_collector, validator=validator),
        )
    finally:
        opa.stop()


def _production(image: str) -> EvaluationRequest:
    return EvaluationRequest(images=(parse_image_reference(image),), source=Source.PIPELINE,
                             environment="production", namespace="shop")




def test_banned_component_and_fixable_cve_deny_then_clean_image_is_allowed(
    gate: tuple[EvaluationService, SbomUploads], moto_url: str,  # noqa: F811
    push_image: PushImage,  # noqa: F811
) -> None:
    service, uploader = gate
    reference, digest = push_image()
    inject(moto_url, reference, digest, **complete_scan(
        [enhanced_finding("CVE-2024-3094", "xz-utils", "5.6.0", "5.6.1")]
    ))
    components = [cyclonedx_component(0),
                  cyclonedx_component(1, purl="pkg:npm/event-stream@3.3.6")]
    upload = uploader.upload(encode(cyclonedx(components)), digest, ticket_id="CHG-7")
    assert upload.as_response()["state"] == "bound"

    decision = service.evaluate(_production(str(reference)))
    assert decision.verdict is Verdict.DENY
    messages = {(v.policy, v.message) for v in decision.violations}
    assert messages == {
        ("sbom", "banned component pkg:npm/event-stream@3.3.6: malicious release (flatmap-stream) "
                 "(listed by upload)"),
        ("vulnerabilities", "CVE-2024-3094 in xz-utils 5.6.0 (CRITICAL, fixed in 5.6.1) is not "
                            "allowed in production"),
    }
    assert decision.images[0].evidence["sbom"]["documents"][0]["sha256"] == upload.stored.sha256

    clean, clean_digest = push_image()
    inject(moto_url, clean, clean_digest, **complete_scan([]))
    uploader.upload(encode(cyclonedx(3)), clean_digest)
    allowed = service.evaluate(_production(str(clean)))
    assert allowed.violations == ()
    # An uploaded SBOM alone is accepted with a warning in production (issue 10.1: the proof
    # there is an attested SBOM).
    assert allowed.verdict is Verdict.WARN
    assert [(w.policy, w.message) for w in allowed.warnings] == [
        ("sbom", "no SBOM from attestation in production: accepted with a warning on the SBOM "
                 "from upload"),
    ]


def test_production_denies_without_sbom_and_with_pending_scan(
    gate: tuple[EvaluationService, SbomUploads], moto_url: str,  # noqa: F811
    push_image: PushImage,  # noqa: F811
) -> None:
    service, _ = gate
    reference, digest = push_image()
    inject(moto_url, reference, digest, imageScanStatus={"status": "IN_PROGRESS"})
    decision = service.evaluate(_production(str(reference)))
    assert {(v.policy, v.message) for v in decision.violations} == {
        ("sbom", "an SBOM is required in production: no SBOM found for the image"),
        ("vulnerabilities", "vulnerability scan is not complete (pending: ECR scan status "
                            "IN_PROGRESS); production requires a complete scan"),
    }


def test_sbom_for_another_digest_is_denied(
    gate: tuple[EvaluationService, SbomUploads], moto_url: str,  # noqa: F811
    push_image: PushImage,  # noqa: F811
) -> None:
    service, uploader = gate
    reference, digest = push_image()
    _, other_digest = push_image()
    assert other_digest != digest
    inject(moto_url, reference, digest, **complete_scan([]))
    subject = {"type": "container", "name": "app",
               "purl": f"pkg:oci/app@{str(other_digest).replace(':', '%3A')}"}
    uploader.upload(encode(cyclonedx(2, subject=subject)), digest)
    decision = service.evaluate(_production(str(reference)))
    [violation] = decision.violations
    assert violation.policy == "sbom"
    assert violation.message.startswith(
        "the SBOM must be bound to the image digest in production: SBOM for another artifact: "
        "its metadata component purl names sha256:"
    )
    assert HOST in str(violation.image)
