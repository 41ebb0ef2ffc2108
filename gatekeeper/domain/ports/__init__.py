"""Ports: every interface an adapter implements, one module per variation point.

Adapters (``registry``, ``verify``, ``scans``, ``sbom``, ``vex``, ``policy``, ``audit``)
implement these Protocols; the service and the use cases depend on them only; ``wiring`` plugs
the concrete classes in; the fakes in ``tests/fakes.py`` are checked against them.
"""

import importlib
from typing import TYPE_CHECKING

from gatekeeper.domain.ports.attestations import (
    OversizedAttestation,
    VerifiedAttestations,
    VerifiedStatement,
)
from gatekeeper.domain.ports.audit import (
    AsyncAuditLog,
    AuditLog,
    AuditTrailStore,
    ChainVerification,
    DecisionPage,
    DecisionQuery,
    ExportFormat,
    ExportRange,
    SignedCheckpoint,
    SpooledAuditLog,
    TrailVerification,
)
from gatekeeper.domain.ports.evaluation import (
    AsyncPolicyEngine,
    Clock,
    DigestResolver,
    EvaluationObserver,
    EvidenceCollector,
    EvidenceContext,
    HealthCheck,
    PolicyEngine,
    PolicyPrefilter,
)
from gatekeeper.domain.ports.registry import (
    BasicCredentials,
    CredentialProvider,
    DescriptorView,
    ManifestView,
    ReferrersView,
    RegistryReader,
)

# The SBOM, scan and VEX ports load on first use (``__getattr__`` below): ``gatekeeper verify``
# needs none of them, and their Protocols and dataclasses cost it ~10 ms.
if TYPE_CHECKING:
    from gatekeeper.domain.ports.sbom import (
        BindingMethod,
        SbomCandidate,
        SbomFacts,
        SbomInspector,
        SbomSource,
        SbomSourceKind,
        SbomStore,
        SbomUpload,
        StoredSbom,
    )
    from gatekeeper.domain.ports.scans import ScanReport, ScanSource
    from gatekeeper.domain.ports.vex import (
        StoredVex,
        VexCandidate,
        VexDocument,
        VexInspector,
        VexSource,
        VexStatement,
        VexStore,
        VexUpload,
    )

__all__ = [
    "TrailVerification",
    "SignedCheckpoint",
    "ExportRange",
    "ExportFormat",
    "AsyncAuditLog",
    "AsyncPolicyEngine",
    "AuditLog",
    "AuditTrailStore",
    "ChainVerification",
    "BasicCredentials",
    "BindingMethod",
    "Clock",
    "CredentialProvider",
    "DecisionPage",
    "DecisionQuery",
    "DescriptorView",
    "DigestResolver",
    "EvaluationObserver",
    "EvidenceCollector",
    "EvidenceContext",
    "HealthCheck",
    "ManifestView",
    "OversizedAttestation",
    "PolicyEngine",
    "PolicyPrefilter",
    "ReferrersView",
    "RegistryReader",
    "SbomCandidate",
    "SbomFacts",
    "SbomInspector",
    "SbomSource",
    "SbomSourceKind",
    "SbomStore",
    "SbomUpload",
    "ScanReport",
    "ScanSource",
    "SpooledAuditLog",
    "StoredSbom",
    "StoredVex",
    "VerifiedAttestations",
    "VerifiedStatement",
    "VexCandidate",
    "VexDocument",
    "VexInspector",
    "VexSource",
    "VexStatement",
    "VexStore",
    "VexUpload",
]

#: Where a name of ``__all__`` not imported above is defined (searched in this order).
_LAZY_MODULES = (
    "gatekeeper.domain.ports.sbom",
    "gatekeeper.domain.ports.scans",
    "gatekeeper.domain.ports.vex",
)


def __getattr__(name: str) -> object:
    if name in __all__:
        for module in _LAZY_MODULES:
            value = getattr(importlib.import_module(module), name, None)
            if value is not None:
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
