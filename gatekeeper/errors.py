"""The one exception root of the gatekeeper.

Every error carries a *user-safe* message (``str(error)``) and a structured ``context``
for logs and the audit trail. The tree is shallow and organised by what the caller does
about it. A policy *deny* is never an exception: it is a :class:`~gatekeeper.domain.Decision`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ConfigurationError",
    "GatekeeperError",
    "InvalidInputError",
    "NotFoundError",
    "PolicyEngineError",
    "StorageError",
    "UpstreamUnavailableError",
    "VerificationError",
]


class GatekeeperError(Exception):
    """Root of every error raised by the gatekeeper."""

    #: Short machine-readable category, stable across releases (used in API error bodies).
    kind = "error"

    def __init__(self, message: str, *, context: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = dict(context or {})

    def render(self) -> str:
        """A one-line rendering for humans (CLI, logs)."""
        if not self.context:
            return self.message
        details = ", ".join(f"{key}={value}" for key, value in sorted(self.context.items()))
        return f"{self.message} ({details})"


class InvalidInputError(GatekeeperError):
    """The caller sent something malformed; fix the request and retry."""

    kind = "invalid_input"

    def __init__(
        self, message: str, *, field: str | None = None, context: Mapping[str, Any] | None = None
    ) -> None:
        merged = dict(context or {})
        if field is not None:
            merged["field"] = field
        super().__init__(message, context=merged)
        self.field = field


class NotFoundError(GatekeeperError):
    """The thing asked for does not exist."""

    kind = "not_found"


class VerificationError(GatekeeperError):
    """Cryptographic or binding verification failed (material is present but not trusted)."""

    kind = "verification_failed"


class PolicyEngineError(GatekeeperError):
    """The policy engine could not evaluate (unreachable, crashed, returned garbage)."""

    kind = "policy_engine"


class UpstreamUnavailableError(GatekeeperError):
    """A dependency (registry, AWS API ...) could not be reached: transient, never cached."""

    kind = "upstream_unavailable"


class StorageError(GatekeeperError):
    """The audit store could not be read or written."""

    kind = "storage"


class ConfigurationError(GatekeeperError):
    """The gatekeeper is configured wrongly; an operator must act."""

    kind = "configuration"
