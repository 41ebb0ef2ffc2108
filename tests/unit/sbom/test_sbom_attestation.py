"""SBOM candidates from in-toto statements and OCI referrers, through the collector."""

from __future__ import annotations

import json
from typing import Any

from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import parse_digest, parse_image_reference
from gatekeeper.sbom import CycloneDxValidator, SbomEvidenceCollector
from gatekeeper.sbom.attestation import candidate_from_referrer, candidate_from_statement
from tests.unit.sbom.factory import IMAGE_DIGEST, OTHER_DIGEST, cyclonedx, encode, spdx

DIGEST = parse_digest(IMAGE_DIGEST)
IMAGE = parse_image_reference(f"registry.example.com/app@{IMAGE_DIGEST}")
CONTEXT = EvidenceContext(environment="production", namespace=None)


def statement(predicate_type: str, predicate: object, digest: str = IMAGE_DIGEST) -> dict[str, Any]:
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "registry.example.com/app",
                     "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }


def evidence_for(candidate: object) -> dict[str, Any]:
    collector = SbomEvidenceCollector(sources=(), validator=CycloneDxValidator())
    return collector.evaluate_candidate(candidate, DIGEST)  # type: ignore[arg-type]


def test_cyclonedx_attestation_binds_by_subject() -> None:
    candidate = candidate_from_statement(statement("https://cyclonedx.org/bom", cyclonedx(2)))
    assert candidate is not None
    assert candidate.subjects == (IMAGE_DIGEST,)
    evidence = evidence_for(candidate)
    assert (evidence["state"], evidence["binding"]["method"]) == ("bound", "attestation")
    assert evidence["origin"] == "attestation (https://cyclonedx.org/bom)"


def test_versioned_predicate_type_and_legacy_cosign_wrapper() -> None:
    wrapped = {"Data": json.dumps(cyclonedx(1)), "Timestamp": "2026-01-01T00:00:00Z"}
    candidate = candidate_from_statement(statement("https://cyclonedx.org/bom/v1.6", wrapped))
    assert candidate is not None
    assert evidence_for(candidate)["state"] == "bound"


def test_spdx_attestation() -> None:
    candidate = candidate_from_statement(statement("https://spdx.dev/Document", spdx(2)))
    assert candidate is not None
    evidence = evidence_for(candidate)
    assert (evidence["format"], evidence["state"]) == ("spdx", "bound")


def test_attestation_for_another_digest() -> None:
    candidate = candidate_from_statement(
        statement("https://cyclonedx.org/bom", cyclonedx(1), OTHER_DIGEST)
    )
    assert candidate is not None
    assert evidence_for(candidate)["state"] == "another_artifact"


def test_other_predicates_are_not_sboms() -> None:
    assert candidate_from_statement(statement("https://slsa.dev/provenance/v1", {})) is None
    assert candidate_from_statement(statement("https://cyclonedx.org/bomb", {})) is None


def test_referrer_binds_by_its_subject() -> None:
    candidate = candidate_from_referrer(encode(cyclonedx(1)), DIGEST, referrer_digest="sha256:1")
    evidence = evidence_for(candidate)
    assert (evidence["state"], evidence["origin"]) == ("bound", "referrer sha256:1")
