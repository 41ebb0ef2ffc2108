"""Registry credentials: static, docker ``config.json``, and ECR authorization tokens.

A :class:`CredentialProvider` answers the username/password for a host (or ``None`` for
anonymous). The bearer-token challenge itself (``WWW-Authenticate``) is handled by the client,
which exchanges these credentials for a token at the realm the registry names.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gatekeeper.domain.ports.registry import BasicCredentials, CredentialProvider
from gatekeeper.errors import ConfigurationError, UpstreamUnavailableError

__all__ = [
    "BasicCredentials",
    "ChainedCredentials",
    "CredentialProvider",
    "DockerConfigCredentials",
    "EcrCredentials",
    "StaticCredentials",
    "is_ecr_host",
    "parse_www_authenticate",
]

log = logging.getLogger(__name__)

_ECR_HOST_RE = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$"
)


class StaticCredentials:
    """Fixed username/password per host, from the gatekeeper's own settings."""

    def __init__(self, by_host: Mapping[str, BasicCredentials]) -> None:
        self._by_host = {host.lower(): creds for host, creds in by_host.items()}

    def credentials_for(self, host: str) -> BasicCredentials | None:
        return self._by_host.get(host.lower())


class DockerConfigCredentials:
    """Credentials from a docker ``config.json`` document (``auths.<host>.auth`` or
    ``username``/``password``, ``identitytoken`` is ignored). Credential helpers are not run:
    the gatekeeper does not execute programs named by a mounted file."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        auths = document.get("auths", {})
        if not isinstance(auths, Mapping):
            raise ConfigurationError("docker config: auths must be an object")
        self._by_host: dict[str, BasicCredentials] = {}
        for key, entry in auths.items():
            if not isinstance(entry, Mapping):
                raise ConfigurationError(f"docker config: auths[{key!r}] must be an object")
            creds = self._entry_credentials(str(key), entry)
            if creds is not None:
                self._by_host[_normalise_config_host(str(key))] = creds

    @classmethod
    def from_json(cls, text: str | bytes) -> DockerConfigCredentials:
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError("docker config is not valid JSON") from exc
        if not isinstance(document, Mapping):
            raise ConfigurationError("docker config must be a JSON object")
        return cls(document)

    @staticmethod
    def _entry_credentials(key: str, entry: Mapping[str, Any]) -> BasicCredentials | None:
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                decoded = base64.b64decode(auth, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ConfigurationError(
                    f"docker config: auths[{key!r}].auth is not base64"
                ) from exc
            username, sep, password = decoded.partition(":")
            if not sep:
                raise ConfigurationError(f"docker config: auths[{key!r}].auth lacks ':'")
            return BasicCredentials(username, password)
        user, secret = entry.get("username"), entry.get("password")
        if isinstance(user, str) and isinstance(secret, str) and user:
            return BasicCredentials(user, secret)
        return None

    def credentials_for(self, host: str) -> BasicCredentials | None:
        host = host.lower()
        if host == "docker.io":
            return self._by_host.get("docker.io") or self._by_host.get("index.docker.io")
        return self._by_host.get(host)


def _normalise_config_host(key: str) -> str:
    # docker config keys may be URLs ("https://index.docker.io/v1/").
    host = re.sub(r"^https?://", "", key).split("/", 1)[0].lower()
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


def is_ecr_host(host: str) -> bool:
    return _ECR_HOST_RE.match(host.lower()) is not None


@dataclass(frozen=True, slots=True)
class _EcrToken:
    credentials: BasicCredentials
    expires_at: float  # time.time()


class EcrCredentials:
    """ECR authorization tokens from boto3 for ``<account>.dkr.ecr.<region>.amazonaws.com``.

    Tokens live 12 hours; one is cached per (account, region) until ``refresh_margin`` seconds
    before it expires. ``client_factory(region)`` returns a boto3 ``ecr`` client; it is
    injectable so tests can point it at ``moto_server``.
    """

    def __init__(
        self,
        client_factory: Callable[[str], Any],
        *,
        refresh_margin: float = 300.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_factory = client_factory
        self._margin = refresh_margin
        self._now = wall_clock
        self._tokens: dict[tuple[str, str], _EcrToken] = {}
        self._lock = threading.Lock()

    def credentials_for(self, host: str) -> BasicCredentials | None:
        match = _ECR_HOST_RE.match(host.lower())
        if match is None:
            return None
        key = (match["account"], match["region"])
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and cached.expires_at - self._margin > self._now():
                return cached.credentials
            token = self._fetch(*key, host=host)
            self._tokens[key] = token
            return token.credentials

    def _fetch(self, account: str, region: str, *, host: str) -> _EcrToken:
        # botocore is imported lazily so the package imports without AWS libraries at hand.
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            client = self._client_factory(region)
            answer = client.get_authorization_token(registryIds=[account])
        except (BotoCoreError, ClientError) as exc:
            raise UpstreamUnavailableError(
                f"registry {host}: could not get an ECR authorization token",
                context={"registry": host, "error": type(exc).__name__},
            ) from exc
        data: Sequence[Mapping[str, Any]] = answer.get("authorizationData") or ()
        if not data:
            raise UpstreamUnavailableError(f"registry {host}: ECR returned no authorization data")
        try:
            decoded = base64.b64decode(data[0]["authorizationToken"]).decode()
        except (KeyError, binascii.Error, UnicodeDecodeError) as exc:
            raise UpstreamUnavailableError(
                f"registry {host}: ECR returned a malformed authorization token"
            ) from exc
        username, _, password = decoded.partition(":")
        expires = data[0].get("expiresAt")
        if isinstance(expires, datetime):
            expires_at = (expires if expires.tzinfo else expires.replace(tzinfo=UTC)).timestamp()
        else:
            expires_at = self._now() + 3600.0
        log.info("fetched ECR authorization token for %s (expires %.0f)", host, expires_at)
        return _EcrToken(BasicCredentials(username, password), expires_at)


class ChainedCredentials:
    """The first provider that knows the host wins (settings, then docker config, then ECR)."""

    def __init__(self, providers: Sequence[CredentialProvider]) -> None:
        self._providers = tuple(providers)

    def credentials_for(self, host: str) -> BasicCredentials | None:
        for provider in self._providers:
            creds = provider.credentials_for(host)
            if creds is not None:
                return creds
        return None


_CHALLENGE_PARAM_RE = re.compile(
    r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?'
)


def parse_www_authenticate(header: str) -> tuple[str, dict[str, str]]:
    """Parse ``Bearer realm="...",service="...",scope="..."`` into ``("bearer", {...})``."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _CHALLENGE_PARAM_RE.match(rest, position)
        if match is None or match.end() == position:
            break
        params[match.group(1).lower()] = (
            match.group(2).replace('\\"', '"') if match.group(2) is not None else match.group(3)
        )
        position = match.end()
    return scheme.lower(), params
