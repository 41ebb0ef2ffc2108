"""The ``vex`` evidence collector and the inspector of VEX uploads.

Only VEX from a source that may speak for the image is ever read:

* ``attestation`` - an OpenVEX or CycloneDX-with-``vulnerabilities`` in-toto statement the
  ``signatures`` collector verified for an authority of the image policy (the bridge
  ``AttestedVexSource`` in :mod:`gatekeeper.bridges`); an attestation by an unknown key is
  never verified, so never read;
* ``upload`` - ``POST /v1/vex`` by a token with the ``vex-publisher`` or ``policy-admin`` role
  (:class:`StoredVexSource`). VEX inside an SBOM upload, a referrer or anything else a pipeline
  can write is never read as VEX.

Its section, ``input.images[].evidence.vex``::

    {"statement_count": 1,
     "statements": [{"vulnerability": "CVE-2024-3094", "aliases": [], "status": "not_affected",
                     "justification": "vulnerable_code_not_in_execute_path",
                     "impact_statement": null, "products": ["sha256:..."],
                     "packages": ["xz-utils"], "timestamp": "...",
                     "source": "upload", "authority": null, "supplied_by": "sec-team",
                     "origin": "vex upload 3f2a...", "format": "openvex",
                     "document_sha256": "..."}],
     "documents": [{"source": "upload", "origin": "...", "format": "openvex", "sha256": "...",
                    "statement_count": 3, "problem": null, ...}]}

Only statements whose products name the image digest are listed; ``policies/vulnerabilities.rego``
checks that again and decides which statuses waive a finding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gatekeeper.domain.concurrency import ask_last_first
from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.ports.vex import (
    VexCandidate,
    VexDocument,
    VexSource,
    VexStore,
)
from gatekeeper.domain.reference import Digest, ImageReference
from gatekeeper.vex.documents import (
    VexDocumentError,
    VexLimits,
    parse_vex_json,
)

__all__ = [
    "StoredVexSource",
    "VexCandidate",
    "VexEvidenceCollector",
    "VexSource",
    "VexStore",
    "VexJsonInspector",
]


class StoredVexSource:
    """VEX documents uploaded with ``POST /v1/vex`` that name the digest."""

    name = "upload"

    def __init__(self, store: VexStore, *, limits: VexLimits | None = None) -> None:
        self._store = store
        self._limits = limits or VexLimits()

    def find(
        self, reference: ImageReference, digest: Digest, context: EvidenceContext
    ) -> Sequence[VexCandidate]:
        candidates: list[VexCandidate] = []
        for stored in self._store.find_for_digest(str(digest)):
            origin = f"vex upload {stored.id}" + (
                f" (ticket {stored.ticket_id})" if stored.ticket_id else ""
            )
            try:
                document: VexDocument | None = parse_vex_json(stored.content, self._limits)
                problem = None
            except VexDocumentError as exc:  # stored under other limits
                document, problem = None, exc.message
            candidates.append(
                VexCandidate(document, "upload", origin, supplied_by=stored.uploaded_by,
                             problem=problem)  # fmt: skip
            )
        return candidates


class VexEvidenceCollector:
    """Implements :class:`~gatekeeper.domain.ports.EvidenceCollector` under the name ``vex``."""

    name = "vex"

    def __init__(self, sources: Sequence[VexSource]) -> None:
        self._sources = tuple(sources)

    def collect(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Mapping[str, Any]:
        if digest is None:
            return {"statement_count": 0, "statements": [], "documents": [],
                    "reason": "image digest unknown: no VEX statement can name it"}  # fmt: skip
        documents: list[dict[str, Any]] = []
        statements: list[dict[str, Any]] = []
        wanted = str(digest)
        for found in ask_last_first(self._sources, lambda s: s.find(reference, digest, context)):
            for candidate in found:
                described = {
                    "source": candidate.source, "authority": candidate.authority,
                    "supplied_by": candidate.supplied_by, "origin": candidate.origin,
                }  # fmt: skip
                document = candidate.document
                documents.append(
                    described | {
                        "format": document.format if document else None,
                        "sha256": document.sha256 if document else None,
                        "statement_count": len(document.statements) if document else 0,
                        "problem": candidate.problem,
                    }
                )  # fmt: skip
                if document is None:
                    continue
                statements += [
                    statement.as_input() | described
                    | {"format": document.format, "document_sha256": document.sha256}
                    for statement in document.statements
                    if wanted in statement.products
                ]  # fmt: skip
        return {
            "statement_count": len(statements), "statements": statements,
            "documents": documents, "reason": f"{len(documents)} VEX document(s) read",
        }  # fmt: skip


class VexJsonInspector:
    """Implements :class:`~gatekeeper.domain.ports.VexInspector` for the upload use case."""

    def __init__(self, limits: VexLimits | None = None) -> None:
        self._limits = limits or VexLimits()

    def inspect(self, content: bytes) -> VexDocument:
        """Raise :class:`VexDocumentError` (422) for a document that is not VEX or names no
        image digest (it could never apply to anything)."""
        document = parse_vex_json(content, self._limits)
        if not document.product_digests:
            raise VexDocumentError(
                "no statement names an image digest as its product (pkg:oci/...@sha256:..., "
                "a sha256:... @id, or a sha-256 hash): it could never waive anything",
                "$.statements" if document.format == "openvex" else "$.vulnerabilities",
            )
        return document
