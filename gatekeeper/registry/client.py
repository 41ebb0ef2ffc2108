"""An OCI distribution client over httpx: manifests, blobs, tags and referrers.

Every network step first checks the caller's deadline (a ``time.monotonic()`` value) and caps
its own timeout by the time that is left, so a registry that hangs ends the evaluation inside
the webhook's budget with a reason that names the registry and the reference.

Spec: https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import httpx

from gatekeeper.domain.credentials import WorkloadRegistryLogins, current_workload_logins
from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import Digest, ImageReference, parse_digest
from gatekeeper.errors import (
    ConfigurationError,
    InvalidInputError,
    NotFoundError,
    UpstreamUnavailableError,
    VerificationError,
)
from gatekeeper.registry._http import (
    Answer,
    basic_header,
    json_object,
    next_link,
    retry_after_seconds,
    send_limited,
    status_error,
)
from gatekeeper.registry.auth import BasicCredentials, CredentialProvider, parse_www_authenticate
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
from gatekeeper.registry.settings import RegistryClientSettings, RegistryHostSettings

__all__ = ["OciRegistryClient"]

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_TAG_PAGES = 20
_MAX_TOKEN_BYTES = 64 * 1024


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float  # monotonic


class OciRegistryClient:
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

    def _client_for(self, host_settings: RegistryHostSettings) -> httpx.Client:
        with self._lock:
            client = self._clients.get(host_settings.host)
            if client is None:
                verify: ssl.SSLContext | bool = True
                if host_settings.insecure_skip_tls_verify:
                    verify = False
                elif host_settings.ca_bundle:
                    try:
                        verify = ssl.create_default_context(cafile=host_settings.ca_bundle)
                    except (OSError, ssl.SSLError) as exc:
                        raise ConfigurationError(
                            f"registry {host_settings.host}: CA bundle "
                            f"{host_settings.ca_bundle} cannot be loaded"
                        ) from exc
                client = httpx.Client(
                    verify=verify,
                    transport=self._transport,
                    follow_redirects=True,
                    headers={"User-Agent": self._settings.user_agent},
                    limits=httpx.Limits(
                        max_connections=self._settings.max_concurrent_requests,
                        max_keepalive_connections=self._settings.max_concurrent_requests,
                    ),
                )
                if self._on_client is not None:
                    self._on_client(client)
                self._clients[host_settings.host] = client
            return client

    def _observe(self, operation: str, answer: Answer | None, error: Exception | None) -> None:
        if self._on_request is None:
            return
        if answer is not None:
            status = answer.status
            outcome = str(status) if status in (401, 403, 404, 429) else f"{status // 100}xx"
        elif isinstance(error, httpx.TimeoutException):
            outcome = "timeout"
        else:
            outcome = "unreachable"
        self._on_request(operation, outcome)

    def _base_url(self, host_settings: RegistryHostSettings) -> str:
        host = "registry-1.docker.io" if host_settings.host == "docker.io" else host_settings.host
        return f"{'http' if host_settings.plain_http else 'https'}://{host}"

    def _timeout(self, deadline: float | None, registry: str, what: str) -> httpx.Timeout:
        connect, read = self._settings.connect_timeout, self._settings.read_timeout
        if deadline is not None:
            left = deadline - self._monotonic()
            if left <= 0:
                raise UpstreamUnavailableError(
                    f"registry {registry}: time budget exhausted before {what}",
                    context={"registry": registry, "step": what},
                )
            connect, read = min(connect, left), min(read, left)
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)

    def _request(
        self,
        method: str,
        registry: str,
        path: str,
        *,
        repository: str,
        what: str,
        deadline: float | None,
        headers: Mapping[str, str],
        max_bytes: int,
        accept_statuses: tuple[int, ...],
    ) -> Answer:
        host_settings = self._settings.for_host(registry)
        if host_settings.insecure_skip_tls_verify:
            log.warning(
                "registry %s: TLS verification is DISABLED (insecure_skip_tls_verify)", registry
            )
        client = self._client_for(host_settings)
        url = self._base_url(host_settings) + path
        attempts = self._settings.max_retries + 1
        authorised_once = False
        attempt = 0
        while True:
            request_headers = dict(headers)
            auth_header = self._cached_authorization(registry, repository)
            if auth_header:
                request_headers["Authorization"] = auth_header
            answer: Answer | None = None
            error: Exception | None = None
            try:
                with self._slots.slot(
                    host_settings.host, deadline=deadline,
                    default_wait=self._settings.connect_timeout, what=what,
                ):  # fmt: skip
                    answer = send_limited(
                        client,
                        method,
                        url,
                        request_headers,
                        max_bytes,
                        self._timeout(deadline, registry, what),
                        registry,
                        what,
                    )
            except httpx.TimeoutException as exc:
                failure, error = "timed out", exc
            except httpx.TransportError as exc:
                failure, error = f"unreachable ({type(exc).__name__})", exc
            self._observe(method.lower(), answer, error)
            if answer is not None:
                if answer.status == 401 and not authorised_once:
                    authorised_once = True
                    self._authorise(client, registry, repository, answer, deadline, what)
                    continue
                if answer.status in accept_statuses:
                    return answer
                if answer.status not in _RETRY_STATUSES:
                    raise status_error(registry, what, answer.status)
                failure = f"answered {answer.status}"
            attempt += 1
            if attempt >= attempts:
                message = f"registry {registry} {failure} {what} (after {attempt} attempts)"
                context = {"registry": registry, "step": what, "attempts": attempt}
                if error is not None:
                    raise UpstreamUnavailableError(message, context=context) from error
                raise UpstreamUnavailableError(message, context=context)
            self._back_off(attempt, answer, deadline, registry, what, failure)

    def _back_off(
        self,
        attempt: int,
        answer: Answer | None,
        deadline: float | None,
        registry: str,
        what: str,
        failure: str,
    ) -> None:
        delay = min(self._settings.backoff_max, self._settings.backoff_initial * 2 ** (attempt - 1))
        delay *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not cryptography
        if answer is not None:
            retry_after = retry_after_seconds(answer.headers.get("Retry-After"))
            if retry_after is not None:
                delay = min(max(delay, retry_after), self._settings.backoff_max)
        if deadline is not None and self._monotonic() + delay >= deadline:
            raise UpstreamUnavailableError(
                f"registry {registry} {failure} {what}; no time left in the budget to retry",
                context={"registry": registry, "step": what, "attempts": attempt},
            )
        self._sleep(delay)

    def _cached_authorization(self, registry: str, repository: str) -> str | None:
        overlay = _workload_overlay(registry)
        if overlay is not None:  # the workload's own logins: its own tokens only
            held = overlay.tokens.get((registry, repository))
            if held is not None and held[1] > self._monotonic():
                return f"Bearer {held[0]}"
            token = None
        else:
            token = self._tokens.get((registry, repository))
        if token is not None and token.expires_at > self._monotonic():
            return f"Bearer {token.value}"
        if registry in self._basic_hosts:
            creds = self._credentials_for(registry)
            if creds is not None:
                return basic_header(creds)
        return None

    def _credentials_for(self, registry: str) -> BasicCredentials | None:
        overlay = _workload_overlay(registry)
        if overlay is not None:
            login = overlay.login_for(registry)
            assert login is not None
            return BasicCredentials(*login)
        if self._credentials is None:
            return None
        return self._credentials.credentials_for(registry)

    def _authorise(
        self,
        client: httpx.Client,
        registry: str,
        repository: str,
        answer: Answer,
        deadline: float | None,
        what: str,
    ) -> None:
        """Answer a ``401`` challenge: basic credentials, or a bearer token from the realm."""
        challenge = answer.headers.get("WWW-Authenticate", "")
        scheme, params = parse_www_authenticate(challenge)
        creds = self._credentials_for(registry)
        if scheme == "basic":
            if creds is None:
                raise status_error(registry, what, 401)
            self._basic_hosts.add(registry)
            return
        if scheme != "bearer" or "realm" not in params:
            raise UpstreamUnavailableError(
                f"registry {registry}: unsupported authentication challenge {what}",
                context={"registry": registry, "challenge": challenge[:200]},
            )
        realm = params["realm"]
        realm_url = urlsplit(realm)
        host_settings = self._settings.for_host(registry)
        if realm_url.scheme != "https" and not (
            realm_url.scheme == "http" and host_settings.plain_http
        ):
            raise UpstreamUnavailableError(
                f"registry {registry}: refusing token realm {realm!r} without TLS",
                context={"registry": registry},
            )
        query = {
            "service": params.get("service", registry),
            "scope": params.get("scope", f"repository:{repository}:pull"),
        }
        headers = {}
        if creds is not None:
            headers["Authorization"] = basic_header(creds)
        token_what = f"getting a token {what}"
        try:
            token_answer = send_limited(
                client,
                "GET",
                f"{realm}?{urlencode(query)}",
                headers,
                _MAX_TOKEN_BYTES,
                self._timeout(deadline, registry, token_what),
                registry,
                token_what,
            )
        except httpx.TimeoutException as exc:
            self._observe("token", None, exc)
            raise UpstreamUnavailableError(
                f"registry {registry} token service timed out {what}",
                context={"registry": registry},
            ) from exc
        except httpx.TransportError as exc:
            self._observe("token", None, exc)
            raise UpstreamUnavailableError(
                f"registry {registry} token service unreachable {what}",
                context={"registry": registry},
            ) from exc
        self._observe("token", token_answer, None)
        if token_answer.status != 200:
            raise UpstreamUnavailableError(
                f"registry {registry} token service answered {token_answer.status} {what}",
                context={"registry": registry, "status": token_answer.status},
            )
        document = json_object(token_answer.content, f"token answer of {registry}")
        value = document.get("token") or document.get("access_token")
        if not isinstance(value, str) or not value:
            raise UpstreamUnavailableError(f"registry {registry}: token answer has no token")
        expires_in = document.get("expires_in", 60)
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 60.0
        # Refresh a little early so a token never expires between check and use.
        expires_at = self._monotonic() + max(lifetime - 5.0, 1.0)
        overlay = _workload_overlay(registry)
        if overlay is not None:  # obtained with a workload's logins: kept for it alone
            overlay.tokens[(registry, repository)] = (value, expires_at)
            return
        self._tokens[(registry, repository)] = _Token(value, expires_at)


def _workload_overlay(registry: str) -> WorkloadRegistryLogins | None:
    """The current workload logins when they hold a login for ``registry``."""
    overlay = current_workload_logins()
    if overlay is not None and overlay.login_for(registry) is not None:
        return overlay
    return None


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
