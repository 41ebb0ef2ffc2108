"""SBOM candidates from verified in-toto attestations and from OCI referrers.

The verifier (``gatekeeper/verify``) checks the signature of a cosign attestation and hands the
*verified* in-toto statement here; the registry client (``gatekeeper/registry``) hands the
blob of an OCI referrer / attached artifact and the manifest digest its ``subject`` names.
Neither is trusted for more than it proves: the binding is decided later, against the image
digest, by :func:`~gatekeeper.sbom.binding.bind_sbom`.

Predicate types (cosign ``--type cyclonedx`` / ``--type spdxjson`` and the in-toto registry):
``https://cyclonedx.org/bom`` (also with a ``/v1.x`` suffix) and ``https://spdx.dev/Document``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gatekeeper.domain.ports.sbom import SbomCandidate
from gatekeeper.domain.reference import Digest
from gatekeeper.sbom.binding import BindingMethod
from gatekeeper.sbom.parsing import SbomDocumentError

__all__ = [
    "SBOM_ARTIFACT_TYPES",
    "SBOM_PREDICATE_TYPES",
    "candidate_from_referrer",
    "candidate_from_statement",
    "is_sbom_predicate",
]

SBOM_PREDICATE_TYPES = ("https://cyclonedx.org/bom", "https://spdx.dev/Document")
#: OCI ``artifactType`` / media types of SBOM referrers.
SBOM_ARTIFACT_TYPES = (
    "application/vnd.cyclonedx+json",
    "application/spdx+json",
)


def is_sbom_predicate(predicate_type: str) -> bool:
    return any(
        predicate_type == known or predicate_type.startswith(known + "/")
        for known in SBOM_PREDICATE_TYPES
    )


def _subject_digests(statement: Mapping[str, Any]) -> tuple[str, ...]:
    digests: list[str] = []
    for subject in statement.get("subject") or ():
        if not isinstance(subject, Mapping):
            continue
        for algorithm, value in (subject.get("digest") or {}).items():
            if algorithm in ("sha256", "sha512") and isinstance(value, str):
                digests.append(f"{algorithm}:{value.lower()}")
    return tuple(dict.fromkeys(digests))


def candidate_from_statement(
    statement: Mapping[str, Any], *, origin: str = "attestation"
) -> SbomCandidate | None:
    """An SBOM candidate from a *verified* in-toto statement, or None for other predicates.

    The predicate is re-encoded to bytes so it takes the same bounded path (size, depth,
    schema) as any other SBOM; its sha256 is therefore that of the canonical re-encoding.
    """
    predicate_type = statement.get("predicateType")
    if not isinstance(predicate_type, str) or not is_sbom_predicate(predicate_type):
        return None
    predicate = statement.get("predicate")
    # cosign before 2.x wrapped some predicates as {"Data": ..., "Timestamp": ...}.
    if isinstance(predicate, Mapping) and set(predicate) <= {"Data", "Timestamp"}:
        predicate = predicate.get("Data")
        if isinstance(predicate, str):
            try:
                predicate = json.loads(predicate)
            except ValueError as exc:
                raise SbomDocumentError(f"attestation predicate is not JSON: {exc}") from exc
    content = json.dumps(predicate, separators=(",", ":"), sort_keys=True).encode()
    return SbomCandidate(
        content=content,
        method=BindingMethod.ATTESTATION,
        subjects=_subject_digests(statement),
        origin=f"{origin} ({predicate_type})",
    )


def candidate_from_referrer(
    content: bytes, subject: Digest, *, referrer_digest: str | None = None
) -> SbomCandidate:
    """An SBOM candidate from an OCI referrer's blob whose manifest ``subject`` is ``subject``."""
    origin = f"referrer {referrer_digest}" if referrer_digest else "referrer"
    return SbomCandidate(
        content=content, method=BindingMethod.REFERRER, subjects=(str(subject),), origin=origin
    )
