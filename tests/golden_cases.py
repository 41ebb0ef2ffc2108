"""Golden policy inputs: requests whose input documents are pinned in rego-tests/golden/.

The Rego suites test against these exact documents, so Rego tests cannot drift from what the
Python input builder really sends. ``UPDATE_GOLDEN=1 pytest tests/unit/test_golden_inputs.py``
rewrites them after an intended change of the input schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gatekeeper.domain import (
    Digest,
    EvaluationRequest,
    EvidenceContext,
    ImageReference,
    Source,
    Ticket,
    build_policy_input,
    parse_image_reference,
)
from gatekeeper.domain.evidence_documents import EvidenceExternaliser, build_evidence_index
from gatekeeper.sbom import BindingMethod, SbomCandidate, SbomEvidenceCollector
from gatekeeper.vex import VexCandidate, VexEvidenceCollector, parse_vex_document
from tests.fakes import FixedSbomSource, FixedVexSource

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "rego-tests" / "golden"
EVALUATED_AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def _input(request: EvaluationRequest) -> dict[str, Any]:
    images: list[tuple[ImageReference, Digest | None, Mapping[str, Any]]] = [
        (ref, ref.digest, {}) for ref in request.images
    ]
    return build_policy_input(request, images, EVALUATED_AT)


def _cyclonedx(*purls: str) -> bytes:
    components = [{"type": "library", "name": purl.rsplit("/", 1)[-1].split("@")[0],
                   "version": purl.rsplit("@", 1)[-1], "purl": purl} for purl in purls]
    return json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
                       "components": components}).encode()  # fmt: skip


def _sources_input(request: EvaluationRequest) -> dict[str, Any]:
    """Every SBOM of the digest with its source (issue 10.1) and a VEX statement (14.4)."""
    [reference] = request.images
    sbom = SbomEvidenceCollector(sources=[FixedSbomSource(
        SbomCandidate(_cyclonedx("pkg:npm/event-stream@3.3.6", "pkg:npm/left-pad@1.3.0"),
                      BindingMethod.ATTESTATION, (DIGEST,),
                      "attestation verified by release (att-tag)", source="attestation",
                      authority="release"),
        SbomCandidate(_cyclonedx("pkg:npm/left-pad@1.3.0"), BindingMethod.UPLOAD, (DIGEST,),
                      "upload 1 by ci-bot", source="upload", supplied_by="ci-bot"),
        name="golden",
    )])  # fmt: skip
    vex_document = parse_vex_document({
        "@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.com/vex/1",
        "author": "security@example.com", "timestamp": "2026-11-20T00:00:00Z", "version": 1,
        "statements": [{
            "vulnerability": {"name": "CVE-2024-3094"},
            "products": [{"@id": f"pkg:oci/api@{DIGEST.replace(':', '%3A')}",
                          "subcomponents": [{"@id": "pkg:deb/debian/xz-utils@5.6.0"}]}],
            "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path",
        }],
    })  # fmt: skip
    vex = VexEvidenceCollector([FixedVexSource(
        VexCandidate(vex_document, "upload", "vex upload 1", supplied_by="sec-team"),
        name="golden",
    )])  # fmt: skip
    context = EvidenceContext(environment=request.environment, namespace=request.namespace)
    evidence = {
        "sbom": dict(sbom.collect(reference, reference.digest, context)),
        "vex": dict(vex.collect(reference, reference.digest, context)),
    }
    return build_policy_input(request, [(reference, reference.digest, evidence)], EVALUATED_AT)


ASSETS = Path(__file__).resolve().parent / "assets" / "admission"


def _admission_input(name: str, environment: str) -> dict[str, Any]:
    """The input the validating webhook builds for a real AdmissionReview (input.review)."""
    from gatekeeper.webhook import AdmissionSettings
    from gatekeeper.webhook.prepare import Prepared, prepare_review
    from gatekeeper.webhook.review import parse_admission_review

    review = parse_admission_review((ASSETS / f"{name}.json").read_bytes())
    prepared = prepare_review(review, "validate", None,
                              AdmissionSettings(environment=environment))
    assert isinstance(prepared, Prepared), prepared
    return _input(prepared.request)


def _by_reference(policy_input: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every component list by reference (issue 17.2), and the evidence data OPA is given."""
    externalised = EvidenceExternaliser(inline_max_bytes=0).externalise(policy_input)
    evidence = {digest: build_evidence_index(document)
                for digest, document in externalised.documents.items()}
    return externalised.policy_input, evidence


def golden_inputs() -> dict[str, dict[str, Any]]:
    ticket = Ticket(intent_id="INT-7", plan_id="PLAN-3", ticket_id="CHG-1042", deploy_id=None)
    sources_request = EvaluationRequest(
        images=(parse_image_reference(f"registry.example.com/payments/api@{DIGEST}"),),
        source=Source.PIPELINE,
        environment="production",
        namespace="payments",
        ticket=ticket,
    )
    by_reference, evidence = _by_reference(_sources_input(sources_request))
    return {
        "pipeline_production_sbom_by_reference": by_reference,
        # not an input: data.gatekeeper.evidence for the input above
        "evidence_by_reference": evidence,
        "admission_production_deployment": _admission_input("deployment-create", "production"),
        "admission_production_cronjob": _admission_input("cronjob-create", "production"),
        "pipeline_production_pinned": _input(
            EvaluationRequest(
                images=(
                    parse_image_reference(f"registry.example.com/payments/api:1.4@{DIGEST}"),
                    parse_image_reference(f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/web@{DIGEST}"),
                ),
                source=Source.PIPELINE,
                environment="production",
                namespace="payments",
                ticket=ticket,
            )
        ),
        "pipeline_production_unpinned": _input(
            EvaluationRequest(
                images=(
                    parse_image_reference("registry.example.com/payments/api:1.4"),
                    parse_image_reference("registry.example.com.evil.io/payments/api:1.4"),
                    parse_image_reference("nginx"),
                ),
                source=Source.PIPELINE,
                environment="production",
                namespace="payments",
                ticket=ticket,
            )
        ),
        "pipeline_production_sbom_sources": _sources_input(
            EvaluationRequest(
                images=(parse_image_reference(f"registry.example.com/payments/api@{DIGEST}"),),
                source=Source.PIPELINE,
                environment="production",
                namespace="payments",
                ticket=ticket,
            )
        ),
        "pipeline_development_hub": _input(
            EvaluationRequest(
                images=(
                    parse_image_reference("nginx:1.27"),
                    parse_image_reference("localhost:5000/team/tool:dev"),
                ),
                source=Source.PIPELINE,
                environment="development",
            )
        ),
    }
