"""The repository a simple-signing payload names (``critical.identity.docker-reference``).

cosign writes the repository it signed in (``registry/repository``, no tag); containers/image
writes the reference it signed. A signature is portable: anyone may copy the ``.sig`` manifest
next to the same digest in another repository. Comparing the signed repository with the image's
is containers/image's ``matchRepository`` policy: the tag is not compared (a digest-verified
image does not depend on it), the registry and repository are, after the usual normalisation
(``docker.io``, ``library/``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatekeeper.domain.reference import parse_image_reference
from gatekeeper.errors import InvalidInputError

__all__ = ["docker_reference_problem"]


def docker_reference_problem(critical: Mapping[str, Any], repository: str) -> str | None:
    """``None`` when the payload names ``repository``; otherwise what is wrong, for people."""
    identity = critical.get("identity")
    signed = identity.get("docker-reference") if isinstance(identity, Mapping) else None
    if not isinstance(signed, str) or not signed:
        return "simple-signing payload names no critical.identity.docker-reference"
    try:
        signed_name = parse_image_reference(signed, field="docker-reference").name
    except InvalidInputError:
        return f"simple-signing docker-reference {signed[:256]!r} is not an image reference"
    if signed_name != repository:
        return f"signature is for repository {signed_name}, not {repository}"
    return None
