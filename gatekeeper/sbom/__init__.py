"""SBOM evidence: CycloneDX (1.2 - 1.7) and SPDX 2.3 JSON, validated, normalised and bound.

Entry points: :class:`SbomEvidenceCollector` (the ``sbom`` evidence section),
:class:`SbomDocumentInspector` (for the upload use case, ``gatekeeper.usecases``),
:class:`SqlSbomStore`, ``sbom_app`` in
:mod:`gatekeeper.cli.sbom` (``gatekeeper sbom validate``).
"""

from gatekeeper.domain.ports.sbom import (
    SbomCandidate,
    SbomSource,
    SbomSourceKind,
    SbomStore,
    SbomUpload,
    StoredSbom,
)
from gatekeeper.sbom.binding import Binding, BindingMethod, SbomState, bind_sbom
from gatekeeper.sbom.collector import SbomEvidenceCollector, StoredSbomSource
from gatekeeper.sbom.inspector import SbomDocumentInspector
from gatekeeper.sbom.normalise import NormalisationLimits, NormalisedSbom, normalise_sbom
from gatekeeper.sbom.parsing import JsonLimits, SbomDocumentError, load_bounded_json
from gatekeeper.sbom.store import SqlSbomStore
from gatekeeper.sbom.validation import (
    SUPPORTED_CYCLONEDX_VERSIONS,
    CycloneDxValidator,
    ParsedSbom,
    parse_sbom_document,
)

__all__ = [
    "SUPPORTED_CYCLONEDX_VERSIONS",
    "Binding",
    "BindingMethod",
    "CycloneDxValidator",
    "JsonLimits",
    "NormalisationLimits",
    "NormalisedSbom",
    "ParsedSbom",
    "SbomCandidate",
    "SbomDocumentError",
    "SbomDocumentInspector",
    "SbomEvidenceCollector",
    "SbomSource",
    "SbomSourceKind",
    "SbomState",
    "SbomStore",
    "SbomUpload",
    "SqlSbomStore",
    "StoredSbom",
    "StoredSbomSource",
    "bind_sbom",
    "load_bounded_json",
    "normalise_sbom",
    "parse_sbom_document",
]
