"""The light composition root of the one-shot tool commands: ``gatekeeper sbom validate|evidence``
(the SBOM adapters, offline) and ``gatekeeper webhooks|certs`` (the Kubernetes adapters the
chart's hook Jobs run).

Kept apart from :mod:`gatekeeper.wiring` so these commands import only the adapters they use,
never the server's stack (SQLAlchemy, FastAPI, the policy engine); the CLI imports the concrete
adapters only through here.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.domain.ports.sbom import BindingMethod, SbomCandidate
from gatekeeper.domain.reference import Digest
from gatekeeper.kube.client import KubeClient
from gatekeeper.kube.webhooks import register, unregister, wait_ready, webhook_documents

if TYPE_CHECKING:
    from gatekeeper.kube.certs import CertificatePlan, EnsureResult
    from gatekeeper.sbom.validation import ParsedSbom

__all__ = [
    "KubeClient",
    "build_kube_client",
    "certificate_plan",
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
    from gatekeeper.sbom.parsing import JsonLimits  # the SBOM stack only for sbom commands
    from gatekeeper.sbom.validation import CycloneDxValidator, parse_sbom_document

    return parse_sbom_document(
        data, validator=CycloneDxValidator(), limits=JsonLimits(max_bytes, max_depth)
    )


def sbom_file_evidence(
    data: bytes, image_digest: Digest | None, origin: str, *, max_bytes: int, max_depth: int
) -> dict[str, Any]:
    """The ``evidence.sbom.documents`` entry this document would give an image (bound by an
    upload for ``image_digest``, unbound without one)."""
    from gatekeeper.sbom.collector import SbomEvidenceCollector
    from gatekeeper.sbom.parsing import JsonLimits
    from gatekeeper.sbom.validation import CycloneDxValidator

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


def certificate_plan(
    namespace: str, tls_secret: str, ca_secret: str, dns_names: tuple[str, ...], ca_days: int,
    certificate_days: int, renew_before_days: int, webhook_name: str | None,
) -> CertificatePlan:
    """What ``gatekeeper certs ensure`` keeps in the cluster (checked by its ``check()``)."""
    from gatekeeper.kube.certs import CertificatePlan  # cryptography only for certs ensure

    return CertificatePlan(namespace, tls_secret, ca_secret, dns_names, ca_days,
                           certificate_days, renew_before_days, webhook_name)  # fmt: skip


def ensure_certificate(client: KubeClient, plan: CertificatePlan, now: datetime) -> EnsureResult:
    """Create the CA and serving certificate Secrets when missing; renew before expiry."""
    from gatekeeper.kube.certs import ensure

    return ensure(client, plan, now)
