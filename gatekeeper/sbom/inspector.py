"""The :class:`~gatekeeper.domain.ports.SbomInspector` of this package: schema validation,
normalisation and the ``sbom`` collector's verdict on one uploaded document."""

from __future__ import annotations

from typing import Any

from gatekeeper.domain.ports.sbom import BindingMethod, SbomFacts, StoredSbom
from gatekeeper.domain.reference import Digest
from gatekeeper.sbom.collector import SbomEvidenceCollector, upload_candidate
from gatekeeper.sbom.normalise import normalise_sbom
from gatekeeper.sbom.parsing import JsonLimits
from gatekeeper.sbom.validation import CycloneDxValidator, parse_sbom_document

__all__ = ["SbomDocumentInspector"]


class SbomDocumentInspector:
    def __init__(
        self,
        *,
        collector: SbomEvidenceCollector,
        validator: CycloneDxValidator,
        json_limits: JsonLimits | None = None,
    ) -> None:
        self._collector = collector
        self._validator = validator
        self._json_limits = json_limits or JsonLimits()

    def inspect(self, content: bytes) -> SbomFacts:
        """Raise :class:`~gatekeeper.sbom.parsing.SbomDocumentError` for an invalid document."""
        parsed = parse_sbom_document(content, validator=self._validator, limits=self._json_limits)
        normalised = normalise_sbom(parsed)
        return SbomFacts(
            sha256=parsed.sha256,
            format=parsed.format,
            spec_version=parsed.spec_version,
            component_count=normalised.component_count,
        )

    def evidence_for(self, stored: StoredSbom, image_digest: Digest) -> dict[str, Any]:
        return self._collector.evaluate_candidate(
            upload_candidate(stored, BindingMethod.UPLOAD), image_digest
        )
