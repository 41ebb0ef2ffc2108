"""Ports of VEX evidence: where VEX documents come from and where uploads are kept, with the
parsed document types both sides share (``gatekeeper.vex`` parses, ``bridges`` and the SQL store
adapt)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gatekeeper.domain.ports.evaluation import EvidenceContext
from gatekeeper.domain.reference import Digest, ImageReference

__all__ = [
    "StoredVex",
    "VexCandidate",
    "VexDocument",
    "VexInspector",
    "VexSource",
    "VexStatement",
    "VexStore",
    "VexUpload",
]


@dataclass(frozen=True, slots=True)
class VexStatement:
    vulnerability: str
    aliases: tuple[str, ...]
    status: str
    justification: str | None
    impact_statement: str | None
    #: Image digests (``sha256:<hex>``) the statement names as its products.
    products: tuple[str, ...]
    #: Package names of the subcomponents it is about (empty: the whole product).
    packages: tuple[str, ...]
    timestamp: str | None

    def as_input(self) -> dict[str, Any]:
        return {
            "vulnerability": self.vulnerability,
            "aliases": list(self.aliases),
            "status": self.status,
            "justification": self.justification,
            "impact_statement": self.impact_statement,
            "products": list(self.products),
            "packages": list(self.packages),
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True, slots=True)
class VexDocument:
    format: str  # "openvex" | "cyclonedx"
    sha256: str
    author: str | None
    statements: tuple[VexStatement, ...]

    @property
    def product_digests(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d for s in self.statements for d in s.products))


@dataclass(frozen=True, slots=True)
class VexUpload:
    content: bytes
    sha256: str
    format: str
    statement_count: int
    product_digests: tuple[str, ...]
    uploaded_by: str | None
    ticket_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredVex:
    id: str
    sha256: str
    format: str
    statement_count: int
    uploaded_at: datetime
    uploaded_by: str | None
    ticket_id: str | None
    content: bytes


@dataclass(frozen=True, slots=True)
class VexCandidate:
    """A VEX document found for an image (or why it could not be read)."""

    document: VexDocument | None
    source: str  # "attestation" | "upload"
    origin: str
    authority: str | None = None
    supplied_by: str | None = None
    problem: str | None = None


class VexSource(Protocol):
    name: str

    def find(
        self, reference: ImageReference, digest: Digest, context: EvidenceContext
    ) -> Sequence[VexCandidate]: ...


class VexStore(Protocol):
    def save(self, upload: VexUpload) -> StoredVex: ...

    def find_for_digest(self, image_digest: str, *, limit: int = 32) -> Sequence[StoredVex]: ...


class VexInspector(Protocol):
    """Reads an uploaded VEX document (OpenVEX or CycloneDX VEX) before it is stored."""

    def inspect(self, content: bytes) -> VexDocument:
        """Raise :class:`~gatekeeper.errors.InvalidInputError` whose ``field`` is the JSON
        path of the problem for a document that is not VEX or names no image digest (it
        could never waive anything)."""
        ...
