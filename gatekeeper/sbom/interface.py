"""Moved to :mod:`gatekeeper.domain.ports.sbom`; this path re-exports it for one release."""

from gatekeeper.domain.ports.sbom import (
    BindingMethod,
    SbomCandidate,
    SbomSource,
    SbomSourceKind,
    SbomStore,
    SbomUpload,
    StoredSbom,
)

__all__ = [
    "BindingMethod",
    "SbomCandidate",
    "SbomSource",
    "SbomSourceKind",
    "SbomStore",
    "SbomUpload",
    "StoredSbom",
]
