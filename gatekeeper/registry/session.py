"""Round trips to a registry host: pooled clients, deadlines, retries, 401 challenges, tokens."""

from __future__ import annotations

import functools
import logging
import random
import ssl
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import httpx

from gatekeeper.domain.credentials import WorkloadRegistryLogins, current_workload_logins
from gatekeeper.errors import ConfigurationError, UpstreamUnavailableError
from gatekeeper.registry._http import (
    Answer,
    basic_header,
    json_object,
    retry_after_seconds,
    send_limited,
    status_error,
)
from gatekeeper.registry._lean import LeanHost
from gatekeeper.registry.auth import BasicCredentials, CredentialProvider, parse_www_authenticate
from gatekeeper.registry.hosts import HostSlots
from gatekeeper.registry.settings import RegistryClientSettings, RegistryHostSettings

# The client's logger: records keep the name they had before the split.
log = logging.getLogger("gatekeeper.registry.client")

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_TOKEN_BYTES = 64 * 1024


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float  # monotonic


class RegistrySession:
    """The transport part of :class:`gatekeeper.registry.client.OciRegistryClient`; its
    attributes are set by the client's ``__init__``."""

    _settings: RegistryClientSettings
    _on_request: Callable[[str, str], None] | None
    _on_client: Callable[[httpx.Client], None] | None
    _credentials: CredentialProvider | None
    _transport: httpx.BaseTransport | None
    _monotonic: Callable[[], float]
    _sleep: Callable[[float], None]
    _clients: dict[str, httpx.Client]
    _lean: dict[str, LeanHost]
    _tls: dict[str, ssl.SSLContext]
    _tls_lock: threading.Lock
    _tokens: dict[tuple[str, str], _Token]
    _basic_hosts: set[str]
    _lock: threading.Lock
    _slots: HostSlots

    def _client_for(self, host_settings: RegistryHostSettings) -> httpx.Client:
        """The host's ``httpx`` client, built on first use; TLS with the host's one context."""
        with self._lock:
            client = self._clients.get(host_settings.host)
            if client is None:
                client = httpx.Client(
                    verify=self._tls_context(host_settings),
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

    def _clients_for(
        self, host_settings: RegistryHostSettings
    ) -> tuple[Callable[[], httpx.Client], LeanHost | None]:
        """The host's ``httpx`` client (a getter), and its lean path where that behaves the
        same (see :mod:`gatekeeper.registry._lean`): no proxy in the environment (the ``httpx``
        client honours it), no tracing instrumentation, no injected transport. With the lean
        path, the ``httpx`` client is only built when needed (a redirect, a token request), and
        a plain-HTTP host never loads a CA bundle."""
        host = host_settings.host
        with self._lock:
            lean = self._lean.get(host)
            if (lean is None and host not in self._clients and self._transport is None
                    and self._on_client is None and not urllib.request.getproxies()):  # fmt: skip
                lean = self._lean[host] = self._lean_host(host_settings)
        if lean is None:
            client = self._client_for(host_settings)
            return (lambda: client), None
        return (lambda: self._client_for(host_settings)), lean

    def _lean_host(self, host_settings: RegistryHostSettings) -> LeanHost:
        url = httpx.URL(self._base_url(host_settings))
        tls = functools.partial(self._tls_context, host_settings) if url.scheme == "https" else None
        return LeanHost(url.scheme, url.host, url.port, tls, self._settings.user_agent)

    def _tls_context(self, host_settings: RegistryHostSettings) -> ssl.SSLContext:
        """The host's TLS context, built on its first https connection and kept (one per host,
        shared by the lean path and the ``httpx`` client): the context httpx builds for the
        same ``verify`` setting (certifi roots, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), the
        host's ``ca_bundle``, or no verification with ``insecure_skip_tls_verify``."""
        with self._tls_lock:
            context = self._tls.get(host_settings.host)
            if context is None:
                if host_settings.insecure_skip_tls_verify:
                    context = httpx.create_ssl_context(verify=False)
                elif host_settings.ca_bundle:
                    try:
                        context = ssl.create_default_context(cafile=host_settings.ca_bundle)
                    except (OSError, ssl.SSLError) as exc:
                        raise ConfigurationError(
                            f"registry {host_settings.host}: CA bundle "
                            f"{host_settings.ca_bundle} cannot be loaded"
                        ) from exc
                else:
                    context = httpx.create_ssl_context(verify=True)
                self._tls[host_settings.host] = context
            return context

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
                raise _exhausted_before(registry, what)
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
        client_of, lean = self._clients_for(host_settings)
        url = self._base_url(host_settings) + path
        attempts = self._settings.max_retries + 1
        authorised_once = False
        attempt = 0
        retrying: str | None = None  # why the previous attempt failed
        error: Exception | None = None
        while True:
            if deadline is not None and self._monotonic() >= deadline:
                # Checked before waiting for a slot: a budget spent before this attempt (by
                # the caller, or in an overrun back-off sleep) is not a busy host.
                if retrying is None:
                    raise _exhausted_before(registry, what)
                raise _no_time_to_retry(registry, what, retrying, attempt) from error
            request_headers = dict(headers)
            auth_header = self._cached_authorization(registry, repository)
            if auth_header:
                request_headers["Authorization"] = auth_header
            answer: Answer | None = None
            error = None
            try:
                with self._slots.slot(
                    host_settings.host, deadline=deadline,
                    default_wait=self._settings.connect_timeout, what=what,
                ):  # fmt: skip
                    timeout = self._timeout(deadline, registry, what)
                    if lean is None:
                        answer = send_limited(client_of(), method, url, request_headers, max_bytes,
                                              timeout, registry, what)  # fmt: skip
                    else:
                        answer = self._lean_send(lean, client_of, method, url, path,
                                                 request_headers, max_bytes, timeout,
                                                 registry, what)  # fmt: skip
            except httpx.TimeoutException as exc:
                failure, error = "timed out", exc
            except httpx.TransportError as exc:
                failure, error = f"unreachable ({type(exc).__name__})", exc
            self._observe(method.lower(), answer, error)
            if answer is not None:
                if answer.status == 401 and not authorised_once:
                    authorised_once = True
                    self._authorise(client_of(), registry, repository, answer, deadline, what)
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
            self._back_off(attempt, answer, deadline, registry, what, failure, error)
            retrying = failure

    def _lean_send(
        self,
        lean: LeanHost,
        client_of: Callable[[], httpx.Client],
        method: str,
        url: str,
        path: str,
        headers: dict[str, str],
        max_bytes: int,
        timeout: httpx.Timeout,
        registry: str,
        what: str,
    ) -> Answer:
        """The lean path; a redirect is followed by the ``httpx`` client, which drops the
        ``Authorization`` header when the target is another origin (and follows further)."""
        answer = lean.send(method, path, headers, max_bytes, timeout, registry, what)
        if answer.redirect is None:
            return Answer(answer.status, answer.headers, answer.content)
        target = httpx.URL(answer.redirect)
        if target.scheme not in ("http", "https"):
            raise UpstreamUnavailableError(
                f"registry {registry} redirected to a {target.scheme or 'relative'} URL {what}",
                context={"registry": registry, "step": what},
            )
        origin = httpx.URL(url)
        if (target.scheme, target.host, target.port) != (origin.scheme, origin.host, origin.port):
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        return send_limited(client_of(), method, answer.redirect, headers, max_bytes, timeout,
                            registry, what)  # fmt: skip

    def _back_off(
        self,
        attempt: int,
        answer: Answer | None,
        deadline: float | None,
        registry: str,
        what: str,
        failure: str,
        error: Exception | None,
    ) -> None:
        delay = min(self._settings.backoff_max, self._settings.backoff_initial * 2 ** (attempt - 1))
        delay *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not cryptography
        if answer is not None:
            retry_after = retry_after_seconds(answer.headers.get("Retry-After"))
            if retry_after is not None:
                delay = min(max(delay, retry_after), self._settings.backoff_max)
        if deadline is not None and self._monotonic() + delay >= deadline:
            raise _no_time_to_retry(registry, what, failure, attempt) from error
        # The sleep may overrun (a loaded machine): the loop checks the deadline again.
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


def _exhausted_before(registry: str, what: str) -> UpstreamUnavailableError:
    """The budget ran out before this request was sent: nothing was asked of the registry."""
    return UpstreamUnavailableError(
        f"registry {registry}: time budget exhausted before {what}",
        context={"registry": registry, "step": what},
    )


def _no_time_to_retry(
    registry: str, what: str, failure: str, attempts: int
) -> UpstreamUnavailableError:
    """The budget ran out after a failed attempt (``failure``: ``timed out``, ``answered
    503``...), before the next one: the user is told what the registry did."""
    return UpstreamUnavailableError(
        f"registry {registry} {failure} {what}; no time left in the budget to retry",
        context={"registry": registry, "step": what, "attempts": attempts},
    )
