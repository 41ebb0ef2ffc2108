"""Registry client configuration: plain frozen dataclasses with validating ``from_mapping``.

``config.py`` reads files and env vars and calls :meth:`RegistryClientSettings.from_mapping`;
nothing here reads the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.errors import ConfigurationError

__all__ = ["RegistryClientSettings", "RegistryHostSettings"]

_HOST_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]+$")


def _bool(raw: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigurationError(f"{where}.{key} must be true or false")
    return value


def _number(
    raw: Mapping[str, Any], key: str, default: float, where: str, *, minimum: float
) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigurationError(f"{where}.{key} must be a number >= {minimum}")
    return float(value)


def _int(raw: Mapping[str, Any], key: str, default: int, where: str, *, minimum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{where}.{key} must be an integer >= {minimum}")
    return value


def _optional_str(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError(f"{where}.{key} must be a non-empty string")
    return value


@dataclass(frozen=True, slots=True)
class RegistryHostSettings:
    """Settings for one registry host (``host`` may carry a port: ``127.0.0.1:5000``).

    ``plain_http`` talks HTTP without TLS: only for hosts named here (a loopback test registry).
    ``insecure_skip_tls_verify`` disables certificate checks; the name says what it does, and the
    client logs a warning on every use.
    """

    host: str
    plain_http: bool = False
    ca_bundle: str | None = None
    insecure_skip_tls_verify: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_mapping(
        cls, raw: Mapping[str, Any], *, where: str = "registries[]"
    ) -> RegistryHostSettings:
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"{where} must be an object")
        unknown = set(raw) - {
            "host",
            "plain_http",
            "ca_bundle",
            "insecure_skip_tls_verify",
            "username",
            "password",
        }
        if unknown:
            raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
        host = raw.get("host")
        if not isinstance(host, str) or not _HOST_RE.match(host):
            raise ConfigurationError(f"{where}.host must be a registry host such as ghcr.io")
        username = _optional_str(raw, "username", where)
        password = _optional_str(raw, "password", where)
        if (username is None) != (password is None):
            raise ConfigurationError(f"{where}: username and password go together")
        plain_http = _bool(raw, "plain_http", False, where)
        insecure = _bool(raw, "insecure_skip_tls_verify", False, where)
        ca_bundle = _optional_str(raw, "ca_bundle", where)
        if plain_http and (insecure or ca_bundle):
            raise ConfigurationError(f"{where}: plain_http excludes TLS settings")
        return cls(host.lower(), plain_http, ca_bundle, insecure, username, password)


@dataclass(frozen=True, slots=True)
class RegistryClientSettings:
    """How the gatekeeper talks to registries.

    Timeouts are per request; the caller's deadline (``EvidenceContext.deadline``) caps them.
    ``max_manifest_bytes`` bounds every manifest/index read, ``max_blob_bytes`` every blob read.
    ``max_concurrent_requests`` bounds the requests in flight to one registry host (across all
    evaluations; also the size of its keep-alive connection pool). ``capability_ttl_seconds``
    is how long what a host supports (the OCI referrers API) is remembered.
    """

    hosts: tuple[RegistryHostSettings, ...] = ()
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_retries: int = 2
    backoff_initial: float = 0.05
    backoff_max: float = 1.0
    max_manifest_bytes: int = 4 * 1024 * 1024
    max_blob_bytes: int = 16 * 1024 * 1024
    user_agent: str = "forge-gatekeeper/0.1"
    max_concurrent_requests: int = 8
    capability_ttl_seconds: float = 3600.0

    def for_host(self, host: str) -> RegistryHostSettings:
        host = host.lower()
        for settings in self.hosts:
            if settings.host == host:
                return settings
        return RegistryHostSettings(host)

    @classmethod
    def from_mapping(
        cls, raw: Mapping[str, Any], *, where: str = "registry"
    ) -> RegistryClientSettings:
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"{where} must be an object")
        unknown = set(raw) - {
            "hosts",
            "connect_timeout",
            "read_timeout",
            "max_retries",
            "backoff_initial",
            "backoff_max",
            "max_manifest_bytes",
            "max_blob_bytes",
            "user_agent",
            "max_concurrent_requests",
            "capability_ttl_seconds",
        }
        if unknown:
            raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
        defaults = cls()
        hosts_raw = raw.get("hosts", [])
        if not isinstance(hosts_raw, list):
            raise ConfigurationError(f"{where}.hosts must be a list")
        hosts = tuple(
            RegistryHostSettings.from_mapping(item, where=f"{where}.hosts[{i}]")
            for i, item in enumerate(hosts_raw)
        )
        names = [h.host for h in hosts]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"{where}.hosts names a host twice")
        user_agent = raw.get("user_agent", defaults.user_agent)
        if not isinstance(user_agent, str) or not user_agent:
            raise ConfigurationError(f"{where}.user_agent must be a non-empty string")
        return cls(
            hosts=hosts,
            connect_timeout=_number(
                raw, "connect_timeout", defaults.connect_timeout, where, minimum=0.01
            ),
            read_timeout=_number(raw, "read_timeout", defaults.read_timeout, where, minimum=0.01),
            max_retries=_int(raw, "max_retries", defaults.max_retries, where, minimum=0),
            backoff_initial=_number(
                raw, "backoff_initial", defaults.backoff_initial, where, minimum=0
            ),
            backoff_max=_number(raw, "backoff_max", defaults.backoff_max, where, minimum=0),
            max_manifest_bytes=_int(
                raw, "max_manifest_bytes", defaults.max_manifest_bytes, where, minimum=1024
            ),
            max_blob_bytes=_int(
                raw, "max_blob_bytes", defaults.max_blob_bytes, where, minimum=1024
            ),
            user_agent=user_agent,
            max_concurrent_requests=_int(
                raw, "max_concurrent_requests", defaults.max_concurrent_requests, where,
                minimum=1,
            ),
            capability_ttl_seconds=_number(
                raw, "capability_ttl_seconds", defaults.capability_ttl_seconds, where, minimum=0
            ),
        )
