"""Ports of the registry: what the verifier reads from a registry, and where credentials come from.

``gatekeeper.verify`` and ``gatekeeper.registry`` are independent siblings in the layer
contract (pyproject ``[tool.importlinter]``), so the verifier names the shape it reads and
``wiring`` hands it an :class:`~gatekeeper.registry.OciRegistryClient`, which fits it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gatekeeper.domain.reference import Digest, ImageReference

__all__ = [
    "BasicCredentials",
    "CredentialProvider",
    "DescriptorView",
    "ManifestView",
    "ReferrersView",
    "RegistryReader",
]


class DescriptorView(Protocol):
    @property
    def media_type(self) -> str: ...

    @property
    def digest(self) -> Digest: ...

    @property
    def size(self) -> int: ...

    @property
    def annotations(self) -> Mapping[str, str]: ...

    @property
    def artifact_type(self) -> str | None: ...


class ManifestView(Protocol):
    @property
    def digest(self) -> Digest: ...

    @property
    def media_type(self) -> str: ...

    @property
    def content(self) -> bytes:
        """The exact bytes served (they hash to ``digest``)."""
        ...

    @property
    def config(self) -> DescriptorView | None: ...

    @property
    def layers(self) -> Sequence[DescriptorView]: ...

    @property
    def manifests(self) -> Sequence[DescriptorView]: ...

    @property
    def annotations(self) -> Mapping[str, str]: ...

    @property
    def artifact_type(self) -> str | None: ...

    @property
    def subject(self) -> DescriptorView | None: ...


class ReferrersView(Protocol):
    @property
    def manifests(self) -> Sequence[DescriptorView]: ...

    @property
    def via(self) -> str: ...


class RegistryReader(Protocol):
    """Raises ``UpstreamUnavailableError`` for transient trouble, ``VerificationError`` for
    content that breaks its digest or size limits, ``NotFoundError`` for a missing image.

    Thread-safe: the cosign discovery calls it from several threads at once; the implementation
    bounds the requests in flight per host and keeps connections alive. ``get_referrers``
    remembers per host whether the OCI referrers API exists (with an expiry), so a host without
    it costs the ``sha256-<hex>`` tag lookup only. Callers within one evaluation share one
    referrers listing per digest through ``EvidenceContext.memo`` (``verify.discovery``)."""

    def resolve_digest(
        self, reference: ImageReference, *, deadline: float | None = None
    ) -> Digest: ...

    def get_manifest(
        self, reference: ImageReference, target: str | Digest, *, deadline: float | None = None
    ) -> ManifestView: ...

    def find_manifest(
        self, reference: ImageReference, target: str | Digest, *, deadline: float | None = None
    ) -> ManifestView | None: ...

    def get_blob(
        self,
        reference: ImageReference,
        digest: Digest,
        *,
        size: int | None = None,
        max_bytes: int | None = None,
        deadline: float | None = None,
    ) -> bytes: ...

    def get_referrers(
        self,
        reference: ImageReference,
        digest: Digest,
        *,
        artifact_type: str | None = None,
        deadline: float | None = None,
    ) -> ReferrersView: ...


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    username: str
    password: str = field(repr=False)


class CredentialProvider(Protocol):
    def credentials_for(self, host: str) -> BasicCredentials | None:
        """Credentials for ``host``, ``None`` for anonymous; raise
        :class:`~gatekeeper.errors.UpstreamUnavailableError` when a token service cannot be
        reached."""
        ...
