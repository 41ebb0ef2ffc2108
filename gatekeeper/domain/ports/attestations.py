"""Port of verified attestations: what the signature verifier proved about an image that other
evidence (SBOM, VEX) may consume without verifying again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gatekeeper.domain.ports.evaluation import EvidenceContext
from gatekeeper.domain.reference import Digest, ImageReference

__all__ = ["OversizedAttestation", "VerifiedAttestations", "VerifiedStatement"]


@dataclass(frozen=True, slots=True)
class VerifiedStatement:
    """An in-toto statement whose signature verified for ``authority`` and whose subject names
    the image digest: what other packages (SBOMs) may consume without verifying again."""

    authority: str
    predicate_type: str
    statement: Mapping[str, Any]
    source: str
    signer: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class OversizedAttestation:
    """An attestation left unread because it is larger than ``max_payload_bytes``: never
    verified; its predicate type is the unsigned annotation, i.e. what it claims to be."""

    predicate_type: str | None
    size: int
    limit: int
    source: str


class VerifiedAttestations(Protocol):
    """Implemented by the ``signatures`` collector. Both methods and its ``collect`` answer
    from ONE discovery and verification per image per evaluation, shared through
    ``context.memo`` (the evaluation's single-flight memo, independent of the TTL cache, which
    stores nothing at TTL 0): whichever of them runs first fetches and verifies, the others
    (concurrent or later in the same evaluation) wait for and reuse its result. No registry
    lookup is repeated, nothing is verified twice."""

    def verified_statements(
        self, reference: ImageReference, digest: Digest, context: EvidenceContext
    ) -> tuple[VerifiedStatement, ...]:
        """In-toto statements verified for ``digest`` by an authority of its image policy."""
        ...

    def oversized_attestations(
        self, reference: ImageReference, digest: Digest, context: EvidenceContext
    ) -> tuple[OversizedAttestation, ...]:
        """Attestations left unread (so unverified) because they exceed the size limit."""
        ...
