"""The one exception root of the gatekeeper.

Every error carries a *user-safe* message (``str(error)``) and a structured ``context``
for logs and the audit trail. The tree is shallow and organised by what the caller does
about it. A policy *deny* is never an exception: it is a :class:`~gatekeeper.domain.Decision`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AmbiguousIdError",
    "ConfigurationError",
    "ConflictError",
    "GatekeeperError",
    "IntegrityError",
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
        """One line with the structured context, for logs."""
        if not self.context:
            return self.message
        details = ", ".join(f"{key}={value}" for key, value in sorted(self.context.items()))
        return f"{self.message} ({details})"

    def user_message(self) -> str:
        """What a user is shown (CLI, API ``message``): safe to print, no log context."""
        return self.message

    def diagnostics(self, *, verbose: bool = False) -> str:
        """The user message and, when ``verbose``, the structured context one key a line."""
        text = self.user_message()
        if verbose and self.context:
            text += "".join(f"\n  {key}: {value}" for key, value in sorted(self.context.items()))
        return text


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

    def user_message(self) -> str:
        """``field: message``: the user learns which field or option is wrong."""
        if self.field and not self.message.startswith(f"{self.field}:"):
            return f"{self.field}: {self.message}"
        return self.message


class AmbiguousIdError(InvalidInputError):
    """An abbreviated id matches more than one record; the message lists the candidates."""

    kind = "ambiguous_id"

    def __init__(self, prefix: str, candidates: list[str], *, field: str | None = None) -> None:
        shown = ", ".join(candidates[:10]) + (", ..." if len(candidates) > 10 else "")
        super().__init__(
            f"{prefix!r} matches more than one id ({shown}); give more of the id", field=field
        )
        self.prefix = prefix
        self.candidates = list(candidates)


class NotFoundError(GatekeeperError):
    """The thing asked for does not exist."""

    kind = "not_found"


class ConflictError(GatekeeperError):
    """The request is well-formed but the current state forbids it (HTTP 409)."""

    kind = "conflict"


class VerificationError(GatekeeperError):
    """Cryptographic or binding verification failed (material is present but not trusted)."""

    kind = "verification_failed"


class IntegrityError(GatekeeperError):
    """Stored or exported records do not verify: changed, removed, inserted or cut short."""

    kind = "integrity_failed"


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
