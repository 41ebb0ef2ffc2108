"""VEX evidence: OpenVEX and CycloneDX VEX from trusted authorities and VEX publishers.

Entry points: :class:`VexEvidenceCollector` (the ``vex`` evidence section),
:class:`VexJsonInspector` (read by the ``POST /v1/vex`` use case), :class:`SqlVexStore`,
:func:`parse_vex_document`.
"""

from gatekeeper.vex.collector import (
    StoredVexSource,
    VexCandidate,
    VexEvidenceCollector,
    VexJsonInspector,
    VexSource,
    VexStore,
)
from gatekeeper.vex.documents import (
    OPENVEX_PREDICATE_TYPE,
    VexDocument,
    VexDocumentError,
    VexLimits,
    VexStatement,
    is_openvex_predicate,
    parse_vex_document,
    parse_vex_json,
)
from gatekeeper.vex.store import SqlVexStore, StoredVex, VexUpload, create_vex_tables

__all__ = [
    "OPENVEX_PREDICATE_TYPE",
    "SqlVexStore",
    "StoredVex",
    "StoredVexSource",
    "VexCandidate",
    "VexDocument",
    "VexDocumentError",
    "VexEvidenceCollector",
    "VexJsonInspector",
    "VexLimits",
    "VexSource",
    "VexStatement",
    "VexStore",
    "VexUpload",
    "create_vex_tables",
    "is_openvex_predicate",
    "parse_vex_document",
    "parse_vex_json",
]
