"""An OCI distribution client over httpx: manifests, blobs, tags and referrers.

Every network step first checks the caller's deadline (a ``time.monotonic()`` value) and caps
its own timeout by the time that is left, so a registry that hangs ends the evaluation inside
the webhook's budget with a reason that names the registry and the reference.

Spec: https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from urllib.parse import urlencode

import httpx

from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import Digest, ImageReference, parse_digest
from gatekeeper.errors import (
    InvalidInputError,
    NotFoundError,
    UpstreamUnavailableError,
    VerificationError,
)
from gatekeeper.registry._http import Answer, json_object, next_link
from gatekeeper.registry._lean import LeanHost
from gatekeeper.registry.auth import CredentialProvider
from gatekeeper.registry.hosts import HostCapabilities, HostSlots
from gatekeeper.registry.model import (
    MANIFEST_ACCEPT,
    OCI_INDEX,
    Descriptor,
    Manifest,
    ReferrersIndex,
    compute_digest,
    parse_manifest,
)
from gatekeeper.registry.session import RegistrySession, _Token
from gatekeeper.registry.settings import RegistryClientSettings

__all__ = ["OciRegistryClient"]

_MAX_TAG_PAGES = 20


class OciRegistryClient(RegistrySession):
    """Reads from OCI registries; implements the ``DigestResolver`` port.

    Thread-safe: one pooled ``httpx.Client`` per registry host (keep-alive connections reused),
    at most ``max_concurrent_requests`` requests in flight per host (the others wait for a
    slot within their deadline), tokens cached per repository, and what each host supports
    (the referrers API) remembered for ``capability_ttl_seconds``.
    ``transport`` lets tests route requests to an in-process app; production leaves it ``None``.
    """

    def __init__(
        self,
        settings: RegistryClientSettings | None = None,
        *,
        credentials: CredentialProvider | None = None,
        transport: httpx.BaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_request: Callable[[str, str], None] | None = None,
        on_client: Callable[[httpx.Client], None] | None = None,
    ) -> None:
        self._settings = settings or RegistryClientSettings()
        #: Told ``(operation, outcome)`` after every registry round trip (metrics).
        self._on_request = on_request
        #: Called with each new per-host HTTP client (tracing instruments it).
        self._on_client = on_client
        self._credentials = credentials
        self._transport = transport
        self._monotonic = monotonic
        self._sleep = sleep
        self._clients: dict[str, httpx.Client] = {}
        self._lean: dict[str, LeanHost] = {}
        self._tls: dict[str, ssl.SSLContext] = {}
        self._tls_lock = threading.Lock()
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._basic_hosts: set[str] = set()
        self._lock = threading.Lock()
        self._slots = HostSlots(self._settings.max_concurrent_requests, monotonic)
        self._capabilities = HostCapabilities(self._settings.capability_ttl_seconds, monotonic)

    # -- public API --------------------------------------------------------------------------

    def resolve(self, reference: ImageReference, context: EvidenceContext) -> Digest:
        """``DigestResolver`` port: the digest the reference names (its own, or its tag's)."""
        if reference.digest is not None:
            return reference.digest
        return self.resolve_digest(reference, deadline=context.deadline)

    def resolve_digest(self, reference: ImageReference, *, deadline: float | None = None) -> Digest:
        """Resolve the tag of ``reference`` with a manifest ``HEAD``, falling back to ``GET``.

        For a multi-arch image this is the digest of the index the tag points to: the digest
        the workload names is the one that gets verified and pinned.
        """
        if reference.digest is not None:
            return reference.digest
        tag = reference.tag or "latest"
        what = f"resolving {reference.repository}:{tag}"
        answer = self._request(
            "HEAD",
            reference.registry,
            f"/v2/{reference.repository}/manifests/{tag}",
            repository=reference.repository,
            what=what,
            deadline=deadline,
            headers={"Accept": MANIFEST_ACCEPT},
            max_bytes=0,
            accept_statuses=(200, 404, 405),
        )
        if answer.status == 404:
            raise NotFoundError(
                f"registry {reference.registry}: image {reference.repository}:{tag} not found",
                context={"registry": reference.registry, "reference": reference.original},
            )
        header = answer.headers.get("Docker-Content-Digest")
        if answer.status == 200 and header:
            try:
                return parse_digest(header.strip(), field="Docker-Content-Digest")
            except InvalidInputError as exc:
                raise UpstreamUnavailableError(
                    f"registry {reference.registry}: invalid Docker-Content-Digest {what}"
                ) from exc
        # HEAD not allowed or no digest header: GET the manifest and hash what we received.
        return self.get_manifest(reference, tag, deadline=deadline).digest

    def get_manifest(
        self, reference: ImageReference, target: str | Digest, *, deadline: float | None = None
    ) -> Manifest:
        """Fetch a manifest or index by tag or digest; its digest is checked against the bytes."""
        target_text = str(target)
        what = (
            f"fetching manifest {reference.repository}@{target_text}"
            if isinstance(target, Digest)
            else f"fetching manifest {reference.repository}:{target_text}"
        )
        answer = self._request(
            "GET",
            reference.registry,
            f"/v2/{reference.repository}/manifests/{target_text}",
            repository=reference.repository,
            what=what,
            deadline=deadline,
            headers={"Accept": MANIFEST_ACCEPT},
            max_bytes=self._settings.max_manifest_bytes,
            accept_statuses=(200, 404),
        )
        if answer.status == 404:
            raise NotFoundError(
                f"registry {reference.registry}: manifest {reference.repository}"
                f"{'@' if isinstance(target, Digest) else ':'}{target_text} not found",
                context={"registry": reference.registry, "reference": reference.original},
            )
        digest = self._check_manifest_digest(reference, target, answer, what)
        try:
            return parse_manifest(
                answer.content, media_type=answer.headers.get("Content-Type"), digest=digest
            )
        except InvalidInputError as exc:
            raise VerificationError(
                f"registry {reference.registry}: malformed manifest {what}: {exc.message}",
                context={"registry": reference.registry, "reference": reference.original},
            ) from exc

    def find_manifest(
        self, reference: ImageReference, target: str | Digest, *, deadline: float | None = None
    ) -> Manifest | None:
        """Like :meth:`get_manifest`, but ``None`` when the registry says it does not exist."""
        try:
            return self.get_manifest(reference, target, deadline=deadline)
        except NotFoundError:
            return None

    def get_blob(
        self,
        reference: ImageReference,
        digest: Digest,
        *,
        size: int | None = None,
        max_bytes: int | None = None,
        deadline: float | None = None,
    ) -> bytes:
        """Fetch a blob, refusing more than ``max_bytes``; the bytes must hash to ``digest``
        and, when the descriptor's ``size`` is given, have exactly that length."""
        limit = min(max_bytes or self._settings.max_blob_bytes, self._settings.max_blob_bytes)
        what = f"fetching blob {reference.repository}@{digest}"
        if size is not None and size > limit:
            raise VerificationError(
                f"registry {reference.registry}: blob {digest} is {size} bytes, "
                f"more than the limit of {limit}",
                context={"registry": reference.registry, "reference": reference.original},
            )
        answer = self._request(
            "GET",
            reference.registry,
            f"/v2/{reference.repository}/blobs/{digest}",
            repository=reference.repository,
            what=what,
            deadline=deadline,
            headers={},
            max_bytes=limit,
            accept_statuses=(200, 404),
        )
        if answer.status == 404:
            raise NotFoundError(f"registry {reference.registry}: blob {digest} not found")
        actual = compute_digest(answer.content, digest.algorithm)
        if actual != digest:
            raise VerificationError(
                f"registry {reference.registry}: blob {digest} content hashes to {actual}",
                context={"registry": reference.registry, "reference": reference.original},
            )
        if size is not None and len(answer.content) != size:
            raise VerificationError(
                f"registry {reference.registry}: blob {digest} size differs from its descriptor"
            )
        return answer.content

    def list_tags(
        self, reference: ImageReference, *, deadline: float | None = None, page_size: int = 1000
    ) -> tuple[str, ...]:
        """All tags of the repository, following ``Link`` pagination (bounded)."""
        tags: list[str] = []
        path = f"/v2/{reference.repository}/tags/list?{urlencode({'n': page_size})}"
        for _ in range(_MAX_TAG_PAGES):
            answer = self._request(
                "GET",
                reference.registry,
                path,
                repository=reference.repository,
                what=f"listing tags of {reference.repository}",
                deadline=deadline,
                headers={},
                max_bytes=self._settings.max_manifest_bytes,
                accept_statuses=(200, 404),
            )
            if answer.status == 404:
                return ()
            document = json_object(answer.content, f"tag list of {reference.repository}")
            page = document.get("tags") or []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise UpstreamUnavailableError(
                    f"registry {reference.registry}: malformed tag list of {reference.repository}"
                )
            tags.extend(page)
            next_path = next_link(answer.headers.get("Link"))
            if next_path is None:
                return tuple(tags)
            path = next_path
        return tuple(tags)

    def get_referrers(
        self,
        reference: ImageReference,
        digest: Digest,
        *,
        artifact_type: str | None = None,
        deadline: float | None = None,
    ) -> ReferrersIndex:
        """Artifacts whose ``subject`` is ``digest``: OCI 1.1 referrers API, else the referrers
        tag fallback (an index tagged ``sha256-<hex>``), filtered by ``artifact_type``. Whether
        the host has the API is remembered (``capability_ttl_seconds``): a host without it is
        asked for the tag only."""
        query = f"?{urlencode({'artifactType': artifact_type})}" if artifact_type else ""
        what = f"listing referrers of {reference.repository}@{digest}"
        host = reference.registry.lower()
        # A host known to lack the API costs one tag lookup, not a 404 and then the tag.
        if self._capabilities.has_referrers_api(host) is not False:
            answer = self._request(
                "GET",
                reference.registry,
                f"/v2/{reference.repository}/referrers/{digest}{query}",
                repository=reference.repository,
                what=what,
                deadline=deadline,
                headers={"Accept": OCI_INDEX},
                max_bytes=self._settings.max_manifest_bytes,
                accept_statuses=(200, 400, 404, 405),
            )
            content_type = answer.headers.get("Content-Type", "").split(";", 1)[0].strip()
            if answer.status == 200 and content_type == OCI_INDEX:
                self._capabilities.remember_referrers_api(host, True)
                index = _parse_index(answer.content, digest, reference, what)
                return ReferrersIndex(_filter(index.manifests, artifact_type), "referrers-api")
            self._capabilities.remember_referrers_api(host, False)
        fallback = self.find_manifest(reference, digest.cosign_tag_prefix, deadline=deadline)
        if fallback is None:
            return ReferrersIndex((), "none")
        if not fallback.is_index:
            raise VerificationError(
                f"registry {reference.registry}: referrers tag {digest.cosign_tag_prefix} "
                "is not an index"
            )
        return ReferrersIndex(_filter(fallback.manifests, artifact_type), "referrers-tag")

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
            for lean in self._lean.values():
                lean.close()
            self._lean.clear()

    # -- internals ---------------------------------------------------------------------------

    def _check_manifest_digest(
        self, reference: ImageReference, target: str | Digest, answer: Answer, what: str
    ) -> Digest:
        header = answer.headers.get("Docker-Content-Digest")
        if isinstance(target, Digest):
            expected = target
        elif header:
            try:
                expected = parse_digest(header.strip(), field="Docker-Content-Digest")
            except InvalidInputError as exc:
                raise VerificationError(
                    f"registry {reference.registry}: invalid Docker-Content-Digest {what}"
                ) from exc
        else:
            return compute_digest(answer.content)
        actual = compute_digest(answer.content, expected.algorithm)
        if actual != expected:
            raise VerificationError(
                f"registry {reference.registry}: manifest {what} hashes to {actual}, "
                f"not to {expected}",
                context={"registry": reference.registry, "reference": reference.original},
            )
        return actual


def _parse_index(content: bytes, digest: Digest, reference: ImageReference, what: str) -> Manifest:
    try:
        return parse_manifest(content, media_type=OCI_INDEX, digest=compute_digest(content))
    except InvalidInputError as exc:
        raise VerificationError(
            f"registry {reference.registry}: malformed referrers index {what}: {exc.message}"
        ) from exc


def _filter(
    descriptors: tuple[Descriptor, ...], artifact_type: str | None
) -> tuple[Descriptor, ...]:
    if artifact_type is None:
        return descriptors
    return tuple(d for d in descriptors if d.artifact_type == artifact_type)
