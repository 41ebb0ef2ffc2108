"""SBOM upload use case: ``POST /v1/sboms``, ``gatekeeper sbom upload`` and the SBOMs inline in
``POST /v1/evaluations``, over the :class:`~gatekeeper.domain.ports.SbomStore` and
:class:`~gatekeeper.domain.ports.SbomInspector` ports.

An upload is validated before it is stored (an invalid document is refused with the JSON path
of its first problem), then kept with its sha256; the ``sbom`` collector finds it again through
its stored-SBOM source, beside (never instead of) every other SBOM of the image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gatekeeper.domain.decision import EvaluationRequest
from gatekeeper.domain.ports.sbom import (
    SbomInspector,
    SbomSourceKind,
    SbomStore,
    SbomUpload,
    StoredSbom,
)
from gatekeeper.domain.reference import Digest
from gatekeeper.errors import InvalidInputError

__all__ = ["SbomUploadResult", "SbomUploads"]


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


class SbomUploads:
    def __init__(self, *, store: SbomStore, inspector: SbomInspector) -> None:
        self._store = store
        self._inspector = inspector

    @property
    def store(self) -> SbomStore:
        return self._store

    def get(self, sbom_id: str) -> StoredSbom:
        """Raise :class:`~gatekeeper.errors.NotFoundError` for an unknown id."""
        return self._store.get(sbom_id)

    def upload(
        self,
        content: bytes,
        image_digest: Digest,
        *,
        ticket_id: str | None = None,
        uploaded_by: str | None = None,
        source: SbomSourceKind = SbomSourceKind.UPLOAD,
    ) -> SbomUploadResult:
        """Validate and store; raise :class:`~gatekeeper.errors.InvalidInputError` (the
        JSON path of the first problem as ``field``) for a document that is not valid,
        :class:`~gatekeeper.errors.StorageError` when it cannot be kept."""
        facts = self._inspector.inspect(content)
        stored = self._store.save(
            SbomUpload(
                image_digest=image_digest,
                content=content,
                sha256=facts.sha256,
                format=facts.format,
                spec_version=facts.spec_version,
                component_count=facts.component_count,
                ticket_id=ticket_id,
                uploaded_by=uploaded_by,
                source=source.value,
            )
        )
        return SbomUploadResult(stored, self._inspector.evidence_for(stored, image_digest))

    def upload_inline(
        self, sboms: Sequence[tuple[int, Mapping[str, Any]]], evaluation: EvaluationRequest
    ) -> None:
        """Store the SBOMs sent inline (``(image index, document)``), bound to the digest of
        the image they name, as ``inline`` documents of the caller; errors name
        ``sboms[i].image`` or the JSON path under ``sboms[i].document``."""
        for index, (image, document) in enumerate(sboms):
            field = f"sboms[{index}]"
            if image >= len(evaluation.images):
                raise InvalidInputError(
                    f"image index {image} is out of range (images has "
                    f"{len(evaluation.images)})",
                    field=f"{field}.image",
                )
            digest = evaluation.images[image].digest
            if digest is None:
                raise InvalidInputError(
                    "an inline SBOM needs a digest-pinned image (upload it with POST /v1/sboms "
                    "after resolving the tag)",
                    field=f"{field}.image",
                )
            content = json.dumps(document, separators=(",", ":")).encode()
            try:
                self.upload(
                    content,
                    digest,
                    ticket_id=evaluation.ticket.ticket_id,
                    uploaded_by=evaluation.caller,
                    source=SbomSourceKind.INLINE,
                )
            except InvalidInputError as exc:
                path = exc.field or "$"
                raise InvalidInputError(
                    exc.message, field=f"{field}.document{path[1:]}"
                ) from exc
