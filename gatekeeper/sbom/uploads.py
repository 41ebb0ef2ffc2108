"""Uploads: ``POST /v1/sboms`` and SBOMs inline in ``POST /v1/evaluations`` end up here.

An upload is validated before it is stored (an invalid document is refused with the JSON path
of its first problem, as a 400/422), then kept with its sha256; the ``sbom`` collector finds
it again through :class:`~gatekeeper.sbom.collector.StoredSbomSource`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatekeeper.domain.ports.sbom import SbomSourceKind, SbomStore, SbomUpload, StoredSbom
from gatekeeper.domain.reference import Digest
from gatekeeper.sbom.binding import BindingMethod
from gatekeeper.sbom.collector import SbomEvidenceCollector, upload_candidate
from gatekeeper.sbom.normalise import normalise_sbom
from gatekeeper.sbom.parsing import JsonLimits
from gatekeeper.sbom.validation import CycloneDxValidator, parse_sbom_document

__all__ = ["SbomUploadResult", "SbomUploader"]


@dataclass(frozen=True, slots=True)
class SbomUploadResult:
    stored: StoredSbom
    #: The evidence section this SBOM yields for the digest it was uploaded for.
    evidence: dict[str, Any]

    def as_response(self) -> dict[str, Any]:
        """The body of the ``201`` answer to ``POST /v1/sboms``."""
        return {
            "id": self.stored.id,
            "image_digest": self.stored.image_digest,
            "sha256": self.stored.sha256,
            "format": self.stored.format,
            "spec_version": self.stored.spec_version,
            "component_count": self.stored.component_count,
            "uploaded_at": self.stored.uploaded_at.isoformat().replace("+00:00", "Z"),
            "state": self.evidence["state"],
            "reason": self.evidence["reason"],
        }


class SbomUploader:
    def __init__(
        self,
        *,
        store: SbomStore,
        collector: SbomEvidenceCollector,
        validator: CycloneDxValidator,
        json_limits: JsonLimits | None = None,
    ) -> None:
        self._store = store
        self._collector = collector
        self._validator = validator
        self._json_limits = json_limits or JsonLimits()

    @property
    def store(self) -> SbomStore:
        return self._store

    def upload(
        self,
        content: bytes,
        image_digest: Digest,
        *,
        ticket_id: str | None = None,
        uploaded_by: str | None = None,
        source: SbomSourceKind = SbomSourceKind.UPLOAD,
    ) -> SbomUploadResult:
        """Validate and store; raise :class:`~gatekeeper.sbom.parsing.SbomDocumentError`
        (an :class:`~gatekeeper.errors.InvalidInputError`) for a document that is not valid,
        :class:`~gatekeeper.errors.StorageError` when it cannot be kept."""
        parsed = parse_sbom_document(content, validator=self._validator, limits=self._json_limits)
        normalised = normalise_sbom(parsed)
        stored = self._store.save(
            SbomUpload(
                image_digest=image_digest,
                content=content,
                sha256=parsed.sha256,
                format=parsed.format,
                spec_version=parsed.spec_version,
                component_count=normalised.component_count,
                ticket_id=ticket_id,
                uploaded_by=uploaded_by,
                source=source.value,
            )
        )
        evidence = self._collector.evaluate_candidate(
            upload_candidate(stored, BindingMethod.UPLOAD), image_digest
        )
        return SbomUploadResult(stored, evidence)
