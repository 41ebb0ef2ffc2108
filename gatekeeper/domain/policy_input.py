"""The ONE function that builds the versioned Rego input document.

The shape is a contract with the security team (documented in the README, pinned by the
golden documents in ``rego-tests/golden/``). Change it only together with ``SCHEMA_VERSION``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gatekeeper.domain.decision import EvaluationRequest
from gatekeeper.domain.reference import Digest, ImageReference

__all__ = ["SCHEMA_VERSION", "build_image_input", "build_policy_input"]

SCHEMA_VERSION = "4"


def build_image_input(
    reference: ImageReference, digest: Digest | None, evidence: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "reference": reference.original,
        "registry": reference.registry,
        "repository": reference.repository,
        "tag": reference.tag,
        "digest": str(digest) if digest is not None else None,
        "evidence": {key: evidence[key] for key in sorted(evidence)},
    }


def build_policy_input(
    request: EvaluationRequest,
    images: Sequence[tuple[ImageReference, Digest | None, Mapping[str, Any]]],
    evaluated_at: datetime,
) -> dict[str, Any]:
    """Build the input document for ``request`` from the evidence gathered per image."""
    return {
        "schema_version": SCHEMA_VERSION,
        "source": request.source.value,
        "environment": request.environment,
        "namespace": request.namespace,
        "mode": request.mode.value,
        "dry_run": request.dry_run,
        "ticket": request.ticket.as_dict(),
        "evaluated_at": evaluated_at.isoformat().replace("+00:00", "Z"),
        "context": dict(request.context),
        "images": [build_image_input(ref, digest, ev) for ref, digest, ev in images],
        "review": dict(request.review) if request.review is not None else None,
    }
