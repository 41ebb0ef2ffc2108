"""VEX upload use case: ``POST /v1/vex`` by a VEX publisher, over the
:class:`~gatekeeper.domain.ports.VexStore` and :class:`~gatekeeper.domain.ports.VexInspector`
ports.

A document is read before it is stored (one that is not VEX, or names no image digest, is
refused with the JSON path of the problem), then kept once per sha256; the ``vex`` collector
finds it again for every image digest its statements name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatekeeper.domain.ports.vex import StoredVex, VexDocument, VexInspector, VexStore, VexUpload

__all__ = ["VexUploadResult", "VexUploads"]


@dataclass(frozen=True, slots=True)
class VexUploadResult:
    stored: StoredVex
    document: VexDocument

    def as_response(self) -> dict[str, Any]:
        """The body of the ``201`` answer to ``POST /v1/vex``."""
        return {
            "id": self.stored.id,
            "sha256": self.stored.sha256,
            "format": self.stored.format,
            "statement_count": self.stored.statement_count,
            "image_digests": list(self.document.product_digests),
            "uploaded_at": self.stored.uploaded_at.isoformat().replace("+00:00", "Z"),
            "uploaded_by": self.stored.uploaded_by,
        }


class VexUploads:
    def __init__(self, *, store: VexStore, inspector: VexInspector) -> None:
        self._store = store
        self._inspector = inspector

    def upload(
        self, content: bytes, *, uploaded_by: str | None, ticket_id: str | None = None
    ) -> VexUploadResult:
        """Read and store; raise :class:`~gatekeeper.errors.InvalidInputError` (422, the JSON
        path as ``field``) for a document that is not VEX or names no image digest."""
        document = self._inspector.inspect(content)
        stored = self._store.save(
            VexUpload(
                content=content, sha256=document.sha256, format=document.format,
                statement_count=len(document.statements),
                product_digests=document.product_digests, uploaded_by=uploaded_by,
                ticket_id=ticket_id,
            )
        )  # fmt: skip
        return VexUploadResult(stored, document)
