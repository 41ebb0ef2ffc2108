"""The light composition root of the one-shot tool commands: ``gatekeeper sbom validate|evidence``
(the SBOM adapters, offline) and ``gatekeeper webhooks|certs`` (the Kubernetes adapters the
chart's hook Jobs run).

Kept apart from :mod:`gatekeeper.wiring` so these commands import only the adapters they use,
never the server's stack (SQLAlchemy, FastAPI, the policy engine); the CLI imports the concrete
adapters only through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gatekeeper.domain.ports.sbom import BindingMethod, SbomCandidate
from gatekeeper.domain.reference import Digest
from gatekeeper.kube.certs import CertificatePlan
from gatekeeper.kube.certs import ensure as ensure_certificate
from gatekeeper.kube.client import KubeClient
from gatekeeper.kube.webhooks import register, unregister, wait_ready, webhook_documents
from gatekeeper.sbom.collector import SbomEvidenceCollector
from gatekeeper.sbom.parsing import JsonLimits
from gatekeeper.sbom.validation import CycloneDxValidator, ParsedSbom, parse_sbom_document

__all__ = [
    "CertificatePlan",
    "KubeClient",
    "ParsedSbom",
    "build_kube_client",
    "ensure_certificate",
    "register",
    "sbom_file_evidence",
    "unregister",
    "validate_sbom",
    "wait_ready",
    "webhook_documents",
]


def validate_sbom(data: bytes, *, max_bytes: int, max_depth: int) -> ParsedSbom:
    """Parse and validate an SBOM document; raise
    :class:`~gatekeeper.errors.InvalidInputError` naming its first problem."""
    return parse_sbom_document(
        data, validator=CycloneDxValidator(), limits=JsonLimits(max_bytes, max_depth)
    )


def sbom_file_evidence(
    data: bytes, image_digest: Digest | None, origin: str, *, max_bytes: int, max_depth: int
) -> dict[str, Any]:
    """The ``evidence.sbom.documents`` entry this document would give an image (bound by an
    upload for ``image_digest``, unbound without one)."""
    collector = SbomEvidenceCollector(
        sources=(), validator=CycloneDxValidator(), json_limits=JsonLimits(max_bytes, max_depth)
    )
    candidate = SbomCandidate(
        data,
        BindingMethod.UPLOAD if image_digest is not None else None,
        (str(image_digest),) if image_digest is not None else (),
        origin,
    )
    return collector.evaluate_candidate(candidate, image_digest)


def build_kube_client(api_server: str, *, token_file: Path, ca_file: Path) -> KubeClient:
    """A client of the Kubernetes API server with a bearer token file and its CA."""
    return KubeClient(api_server, token_file=token_file, ca_file=ca_file)
