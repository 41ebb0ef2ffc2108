"""Exception values: an exception request parsed at the edge, a stored exception, its Rego form.

Pure values (no I/O): :mod:`gatekeeper.policy.exceptions` hands them to OPA, the SQL store keeps
them, and :mod:`gatekeeper.usecases.exceptions` creates, approves and revokes them. The rules an
exception obeys (four eyes, tags pinned to digests at approval, globs only with ``any_digest``)
are described in :mod:`gatekeeper.policy.exceptions`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gatekeeper.domain.reference import parse_digest, parse_image_reference
from gatekeeper.errors import InvalidInputError

__all__ = [
    "MAX_EXCEPTION_LIFETIME",
    "ExceptionRequest",
    "PolicyException",
    "as_utc",
    "exceptions_document",
    "format_instant",
    "normalise_subject",
    "parse_instant",
    "pattern_kind",
]

#: Longest an exception may live: break-glass, not a permanent allow-list.
MAX_EXCEPTION_LIFETIME = timedelta(days=90)

_POLICY_ID_RE = re.compile(r"^[a-z0-9_]{1,64}$")
_IMAGE_PATTERN_RE = re.compile(r"^[A-Za-z0-9._\-:/*?\[\]@]{1,255}$")
_GLOB_CHARS = frozenset("*?[]")
_MAX_ITEMS = 50


def format_instant(instant: datetime) -> str:
    """RFC 3339 in UTC with ``Z``, the form Rego's ``time.parse_rfc3339_ns`` reads."""
    return as_utc(instant).isoformat().replace("+00:00", "Z")


def as_utc(instant: datetime) -> datetime:
    """Aware UTC datetime; a naive one (SQLite returns those) is taken as UTC."""
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


def parse_instant(text: str, *, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInputError(f"{text!r} is not an RFC 3339 instant", field=field) from exc
    if parsed.tzinfo is None:
        raise InvalidInputError(
            f"{text!r} has no time zone (write Z or +hh:mm)", field=field
        )
    return parsed.astimezone(UTC)


def normalise_subject(subject: str) -> str:
    """The form in which two token subjects are compared (creator against approver).

    Unicode NFKC (so full-width and compatibility forms fold to one), case folding, and the
    removal of invisible characters: format characters (category Cf: zero-width space and
    joiners, bidi marks, soft hyphen...), other control characters and surrounding or repeated
    white space. ``"Alice\u200b"`` and ``"ＡＬＩＣＥ"`` are both ``"alice"``.
    """
    folded = unicodedata.normalize("NFKC", subject).casefold()
    visible = "".join(
        ch for ch in folded if unicodedata.category(ch) not in ("Cf", "Cc", "Cs", "Co", "Cn")
    )
    return " ".join(unicodedata.normalize("NFKC", visible).split())


def pattern_kind(pattern: str) -> str:
    """``digest``, ``pinned`` (name@digest), ``tag`` (resolved at approval) or ``glob``."""
    if pattern.startswith(("sha256:", "sha512:")):
        return "digest"
    if "@" in pattern:
        return "pinned"
    last = pattern.rsplit("/", 1)[-1]
    if _GLOB_CHARS.isdisjoint(pattern) and ":" in last:
        return "tag"
    return "glob"


def _check_image_pattern(pattern: str, field: str, *, any_digest: bool) -> str:
    if not isinstance(pattern, str):
        raise InvalidInputError("image pattern must be a string", field=field)
    kind = pattern_kind(pattern)
    if kind == "digest":
        return str(parse_digest(pattern, field=field))
    if not _IMAGE_PATTERN_RE.match(pattern) or "/" not in pattern:
        raise InvalidInputError(
            f"image pattern {pattern!r} must be a digest (sha256:...), a reference "
            "registry/repository:tag or registry/repository@sha256:..., or (with any_digest) a "
            "glob over registry/repository[:tag] (* stays inside one path segment)",
            field=field,
        )
    if kind in ("pinned", "tag"):
        reference = parse_image_reference(pattern, field=field)
        if kind == "pinned":
            assert reference.digest is not None
            return f"{reference.name}@{reference.digest}"
        if any_digest:
            return pattern
        return f"{reference.name}:{reference.tag}"
    if not any_digest:
        raise InvalidInputError(
            f"image pattern {pattern!r} would waive any digest of the repository: name a "
            "digest, a tag (resolved to its digest when the exception is approved), or set "
            "any_digest: true to say that any digest is meant",
            field=field,
        )
    host = pattern.split("/", 1)[0]
    if not re.search(r"[A-Za-z0-9]", host):
        # A pattern like "*/*" or "**" would waive the policy for every image.
        raise InvalidInputError(
            f"image pattern {pattern!r} must name a registry host, not only wildcards",
            field=field,
        )
    return pattern


@dataclass(frozen=True, slots=True)
class ExceptionRequest:
    """A validated request for a new exception (what ``POST /v1/exceptions`` accepts)."""

    images: tuple[str, ...]
    policies: tuple[str, ...]
    environment: str | None
    namespace: str | None
    reason: str
    ticket_id: str
    expires_at: datetime
    any_digest: bool = False

    @classmethod
    def parse(cls, body: Mapping[str, Any], *, now: datetime) -> ExceptionRequest:
        """Validate a JSON body; errors name the field (``images[1]``, ``expires_at``)."""

        def text(name: str, *, required: bool, limit: int) -> str | None:
            value = body.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                if required:
                    raise InvalidInputError(f"{name} is required", field=name)
                return None
            if not isinstance(value, str) or len(value) > limit:
                raise InvalidInputError(
                    f"{name} must be a string of at most {limit} characters", field=name
                )
            return value.strip()

        def items(name: str) -> list[str]:
            value = body.get(name)
            if not isinstance(value, list) or not value:
                raise InvalidInputError(f"{name} must be a non-empty list", field=name)
            if len(value) > _MAX_ITEMS:
                raise InvalidInputError(f"{name}: at most {_MAX_ITEMS} entries", field=name)
            if not all(isinstance(v, str) for v in value):
                raise InvalidInputError(f"{name} must hold strings", field=name)
            return value

        if "approver" in body:
            raise InvalidInputError(
                "the approver is not named at creation: a second principal approves the "
                "pending exception with POST /v1/exceptions/{id}/approve",
                field="approver",
            )
        unknown = set(body) - {
            "images", "policies", "environment", "namespace", "reason", "ticket_id",
            "expires_at", "any_digest",
        }
        if unknown:
            raise InvalidInputError(
                f"unknown fields: {', '.join(sorted(unknown))}", field=sorted(unknown)[0]
            )
        any_digest = body.get("any_digest", False)
        if not isinstance(any_digest, bool):
            raise InvalidInputError("any_digest must be true or false", field="any_digest")
        images = tuple(
            _check_image_pattern(p, f"images[{i}]", any_digest=any_digest)
            for i, p in enumerate(items("images"))
        )
        policies = tuple(items("policies"))
        for index, policy in enumerate(policies):
            if not _POLICY_ID_RE.match(policy):
                raise InvalidInputError(
                    f"policy id {policy!r} must be a rule package name such as registries "
                    "(no wildcards)",
                    field=f"policies[{index}]",
                )
        environment = text("environment", required=False, limit=128)
        namespace = text("namespace", required=False, limit=253)
        if environment is None and namespace is None:
            raise InvalidInputError(
                "an exception must be scoped to an environment or a namespace",
                field="environment",
            )
        raw_expiry = body.get("expires_at")
        if not isinstance(raw_expiry, str):
            raise InvalidInputError("expires_at is required (RFC 3339)", field="expires_at")
        expires_at = parse_instant(raw_expiry, field="expires_at")
        if expires_at <= now:
            raise InvalidInputError(
                f"expires_at {format_instant(expires_at)} is not in the future", field="expires_at"
            )
        if expires_at - now > MAX_EXCEPTION_LIFETIME:
            raise InvalidInputError(
                f"expires_at is more than {MAX_EXCEPTION_LIFETIME.days} days away",
                field="expires_at",
            )
        reason = text("reason", required=True, limit=2000)
        ticket_id = text("ticket_id", required=True, limit=256)
        assert reason is not None and ticket_id is not None
        return cls(
            images=tuple(dict.fromkeys(images)),
            policies=tuple(dict.fromkeys(policies)),
            environment=environment,
            namespace=namespace,
            reason=reason,
            ticket_id=ticket_id,
            expires_at=expires_at,
            any_digest=any_digest,
        )


@dataclass(frozen=True, slots=True)
class PolicyException:
    """A stored exception (``approved_at`` is ``None`` while it is pending)."""

    exception_id: str
    images: tuple[str, ...]
    policies: tuple[str, ...]
    environment: str | None
    namespace: str | None
    reason: str
    ticket_id: str
    expires_at: datetime
    created_at: datetime
    created_by: str
    any_digest: bool = False
    digests: tuple[tuple[str, str], ...] = ()
    approved_at: datetime | None = None
    approved_by: str | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None

    def status(self, now: datetime) -> str:
        """``pending``, ``active``, ``expired`` or ``revoked`` at ``now`` (Rego decides)."""
        if self.revoked_at is not None and as_utc(self.revoked_at) <= now:
            return "revoked"
        if as_utc(self.expires_at) <= now:
            return "expired"
        if self.approved_at is None or as_utc(self.approved_at) > now:
            return "pending"
        return "active"

    def tags_to_resolve(self) -> tuple[str, ...]:
        """The tagged references approval must pin to a digest (none with ``any_digest``)."""
        if self.any_digest:
            return ()
        return tuple(p for p in self.images if pattern_kind(p) == "tag")

    def unresolvable(self) -> tuple[str, ...]:
        """Patterns that can never match without ``any_digest`` (rows from before v2)."""
        if self.any_digest:
            return ()
        return tuple(p for p in self.images if pattern_kind(p) == "glob")

    def as_rego(self) -> dict[str, Any]:
        """The document Rego sees (``approved_at`` once approved, ``revoked_at`` once revoked)."""
        document: dict[str, Any] = {
            "id": self.exception_id,
            "images": list(self.images),
            "policies": list(self.policies),
            "environment": self.environment,
            "namespace": self.namespace,
            "reason": self.reason,
            "ticket_id": self.ticket_id,
            "created_at": format_instant(self.created_at),
            "created_by": self.created_by,
            "expires_at": format_instant(self.expires_at),
            "any_digest": self.any_digest,
            "digests": dict(self.digests),
        }
        if self.approved_at is not None:
            document["approved_at"] = format_instant(self.approved_at)
            document["approved_by"] = self.approved_by
        if self.revoked_at is not None:
            document["revoked_at"] = format_instant(self.revoked_at)
        return document

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """The public JSON document (API, CLI, export)."""
        return {
            **self.as_rego(),
            "approved_at": format_instant(self.approved_at) if self.approved_at else None,
            "approved_by": self.approved_by,
            "revoked_at": format_instant(self.revoked_at) if self.revoked_at else None,
            "revoked_by": self.revoked_by,
            "revoke_reason": self.revoke_reason,
            "status": self.status(now),
        }


def exceptions_document(exceptions: Sequence[PolicyException]) -> list[dict[str, Any]]:
    """``data.gatekeeper.exceptions``: every exception that could matter, sorted by id.

    Expired and revoked ones stay in, so Rego can say "expired" and replays of the past see
    them; their time fields keep them from applying.
    """
    return [e.as_rego() for e in sorted(exceptions, key=lambda e: _id_key(e.exception_id))]


def _id_key(exception_id: str) -> tuple[int, str]:
    number = exception_id.removeprefix("EXC-")
    return (int(number), "") if number.isdigit() else (0, exception_id)
