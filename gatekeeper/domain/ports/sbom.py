"""Ports of SBOM evidence: where SBOM documents come from, and where uploads are kept.

Adapters: :class:`~gatekeeper.sbom.store.SqlSbomStore` (uploads), and
:class:`~gatekeeper.sbom.collector.StoredSbomSource` (uploads as candidates). Verified cosign
attestations and OCI referrers plug in from :mod:`gatekeeper.bridges` (``AttestedSbomSource``,
``ReferrerSbomSource``): they implement :class:`SbomSource` and return the *verified* subjects
of what they found.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gatekeeper.domain.ports.evaluation import EvidenceContext
from gatekeeper.domain.reference import Digest, ImageReference

__all__ = [
    "BindingMethod",
    "SbomCandidate",
    "SbomFacts",
    "SbomInspector",
    "SbomSource",
    "SbomSourceKind",
    "SbomStore",
    "SbomUpload",
    "StoredSbom",
]


class BindingMethod(enum.StrEnum):
    """What binds an SBOM document to the image digest."""

    ATTESTATION = "attestation"
    REFERRER = "referrer"
    UPLOAD = "upload"
    METADATA = "metadata"


@dataclass(frozen=True, slots=True)
class SbomCandidate:
    """An SBOM document found for an image, with the statement that binds it (if any)."""

    content: bytes
    method: BindingMethod | None
    #: Digests the binding statement names (attestation subjects, referrer subject, upload).
    subjects: tuple[str, ...]
    #: Where it came from, for humans and the audit trail ("upload 3f2a... (ticket CHG-1)").
    origin: str
    #: Why the document itself could not be read (too large to fetch, corrupt blob): the
    #: candidate is then reported as an invalid SBOM, never raised.
    problem: str | None = None
    #: Which kind of source found it (:class:`SbomSourceKind`); ``None``: the binding method.
    source: str | None = None
    #: The authority whose signature verified it (attestations only).
    authority: str | None = None
    #: Who supplied it: the token subject of an upload or inline SBOM.
    supplied_by: str | None = None


class SbomSourceKind(enum.StrEnum):
    """Where an SBOM came from; ``policies/`` decides per environment which kinds are proof."""

    ATTESTATION = "attestation"  # a cosign attestation verified for an authority
    REFERRER = "referrer"  # an OCI referrer / ``cosign attach sbom`` (anyone who can push)
    UPLOAD = "upload"  # ``POST /v1/sboms`` (a token with the pipeline role)
    INLINE = "inline"  # ``"sboms": [...]`` in ``POST /v1/evaluations``


class SbomSource(Protocol):
    """Finds SBOM candidates for an image.

    Raise :class:`~gatekeeper.errors.UpstreamUnavailableError` for transient failures only;
    "nothing found" is an empty sequence.
    """

    name: str

    def find(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Sequence[SbomCandidate]: ...


@dataclass(frozen=True, slots=True)
class SbomUpload:
    """An SBOM a pipeline uploads for an image digest (already validated by the caller)."""

    image_digest: Digest
    content: bytes
    sha256: str
    format: str
    spec_version: str
    component_count: int
    ticket_id: str | None = None
    uploaded_by: str | None = None
    #: ``upload`` (``POST /v1/sboms``) or ``inline`` (in ``POST /v1/evaluations``).
    source: str = "upload"


@dataclass(frozen=True, slots=True)
class StoredSbom:
    id: str
    image_digest: str
    sha256: str
    format: str
    spec_version: str
    component_count: int
    size: int
    uploaded_at: datetime
    ticket_id: str | None
    uploaded_by: str | None
    content: bytes
    source: str = "upload"


class SbomStore(Protocol):
    """Durable store of uploaded SBOMs (the audit trail refers to them by sha256)."""

    def save(self, upload: SbomUpload) -> StoredSbom:
        """Store ``upload``; uploading the same document for the same digest again is a no-op
        returning the stored row. Raise :class:`~gatekeeper.errors.StorageError` on failure."""
        ...

    def find_for_digest(self, image_digest: Digest, *, limit: int = 5) -> Sequence[StoredSbom]:
        """Newest first, at most ``limit``."""
        ...

    def get(self, sbom_id: str) -> StoredSbom:
        """Raise :class:`~gatekeeper.errors.NotFoundError` for an unknown id."""
        ...

    def check_health(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SbomFacts:
    """What validating an SBOM document established, before it is stored."""

    sha256: str
    format: str
    spec_version: str
    component_count: int


class SbomInspector(Protocol):
    """Validates SBOM documents, and says what a stored one proves for an image digest."""

    def inspect(self, content: bytes) -> SbomFacts:
        """Raise :class:`~gatekeeper.errors.InvalidInputError` whose ``field`` is the JSON
        path of the document's first problem."""
        ...

    def evidence_for(self, stored: StoredSbom, image_digest: Digest) -> dict[str, Any]:
        """The ``sbom`` evidence section this upload alone yields for ``image_digest``."""
        ...
