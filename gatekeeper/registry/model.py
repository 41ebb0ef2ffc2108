"""Typed OCI documents: manifests, indexes and descriptors, parsed at the edge with limits.

A :class:`Manifest` keeps the exact bytes the registry served (its digest is computed over them)
next to the parsed, read-only view, so verifiers can hash what they check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gatekeeper.domain.reference import Digest, parse_digest
from gatekeeper.errors import InvalidInputError, VerificationError

__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_ACCEPT",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Descriptor",
    "Manifest",
    "ReferrersIndex",
    "compute_digest",
    "parse_manifest",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
#: Every manifest type we understand, in the order we prefer them.
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))

_MAX_DESCRIPTORS = 1000
_MAX_ANNOTATIONS = 256


def compute_digest(content: bytes, algorithm: str = "sha256") -> Digest:
    """The digest of ``content`` with ``algorithm`` (sha256 or sha512)."""
    if algorithm not in ("sha256", "sha512"):
        raise VerificationError(f"unsupported digest algorithm {algorithm!r}")
    return Digest(algorithm, hashlib.new(algorithm, content).hexdigest())


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor (``mediaType``, ``digest``, ``size`` and the optional rest)."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    artifact_type: str | None = None
    platform: Mapping[str, Any] | None = None

    @classmethod
    def from_mapping(cls, raw: object, *, where: str) -> Descriptor:
        if not isinstance(raw, Mapping):
            raise InvalidInputError(f"{where} must be an object")
        media_type = raw.get("mediaType")
        digest_text = raw.get("digest")
        size = raw.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise InvalidInputError(f"{where}.mediaType must be a non-empty string")
        if not isinstance(digest_text, str):
            raise InvalidInputError(f"{where}.digest must be a string")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInputError(f"{where}.size must be a non-negative integer")
        digest = parse_digest(digest_text, field=f"{where}.digest")
        annotations = _annotations(raw.get("annotations"), where=f"{where}.annotations")
        artifact_type = raw.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise InvalidInputError(f"{where}.artifactType must be a string")
        platform = raw.get("platform")
        if platform is not None and not isinstance(platform, Mapping):
            raise InvalidInputError(f"{where}.platform must be an object")
        return cls(
            media_type,
            digest,
            size,
            annotations,
            artifact_type,
            MappingProxyType(dict(platform)) if platform is not None else None,
        )


def _annotations(raw: object, *, where: str) -> Mapping[str, str]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, Mapping) or len(raw) > _MAX_ANNOTATIONS:
        raise InvalidInputError(f"{where} must be an object of at most {_MAX_ANNOTATIONS} strings")
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidInputError(f"{where} must map strings to strings")
    return MappingProxyType(dict(raw))


def _descriptors(raw: object, *, where: str) -> tuple[Descriptor, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > _MAX_DESCRIPTORS:
        raise InvalidInputError(f"{where} must be a list of at most {_MAX_DESCRIPTORS} descriptors")
    return tuple(Descriptor.from_mapping(item, where=f"{where}[{i}]") for i, item in enumerate(raw))


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest or index exactly as served, with its verified digest and parsed fields."""

    digest: Digest
    media_type: str
    content: bytes
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str]
    subject: Descriptor | None
    artifact_type: str | None

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES


def parse_manifest(content: bytes, *, media_type: str | None, digest: Digest) -> Manifest:
    """Parse ``content`` (already verified to hash to ``digest``) into a :class:`Manifest`.

    ``media_type`` is the ``Content-Type`` the registry sent; the document's own ``mediaType``
    wins when present, and the two must not contradict each other.
    """
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"manifest {digest} is not valid JSON") from exc
    if not isinstance(document, dict):
        raise InvalidInputError(f"manifest {digest} is not a JSON object")
    if document.get("schemaVersion") != 2:
        raise InvalidInputError(f"manifest {digest} has unsupported schemaVersion")
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise InvalidInputError(f"manifest {digest}: mediaType must be a string")
    header = (media_type or "").split(";", 1)[0].strip() or None
    if (
        declared
        and header
        and header != declared
        and header in (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
    ):
        raise InvalidInputError(
            f"manifest {digest}: Content-Type {header} contradicts mediaType {declared}"
        )
    effective = declared or header
    if effective is None:
        effective = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    is_index = effective in INDEX_MEDIA_TYPES
    if is_index and "layers" in document:
        raise InvalidInputError(f"manifest {digest}: an index must not have layers")
    if not is_index and "manifests" in document:
        raise InvalidInputError(f"manifest {digest}: an image manifest must not list manifests")
    config = (
        Descriptor.from_mapping(document["config"], where="config")
        if document.get("config") is not None
        else None
    )
    subject = (
        Descriptor.from_mapping(document["subject"], where="subject")
        if document.get("subject") is not None
        else None
    )
    artifact_type = document.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise InvalidInputError(f"manifest {digest}: artifactType must be a string")
    return Manifest(
        digest=digest,
        media_type=effective,
        content=content,
        config=config,
        layers=_descriptors(document.get("layers"), where="layers"),
        manifests=_descriptors(document.get("manifests"), where="manifests"),
        annotations=_annotations(document.get("annotations"), where="annotations"),
        subject=subject,
        artifact_type=artifact_type,
    )


@dataclass(frozen=True, slots=True)
class ReferrersIndex:
    """Answer of the referrers API (or of its tag fallback); ``via`` says which one."""

    manifests: tuple[Descriptor, ...]
    via: str  # "referrers-api" | "referrers-tag" | "none"
