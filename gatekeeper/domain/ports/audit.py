"""Port of the audit trail: the durable record of every decision, and how it is queried."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gatekeeper.domain.decision import Decision, Verdict

__all__ = ["AuditLog", "DecisionPage", "DecisionQuery", "SpooledAuditLog"]


@dataclass(frozen=True, slots=True)
class DecisionQuery:
    intent_id: str | None = None
    plan_id: str | None = None
    ticket_id: str | None = None
    deploy_id: str | None = None
    image_digest: str | None = None
    verdict: Verdict | None = None
    namespace: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class DecisionPage:
    items: tuple[Decision, ...]
    next_cursor: str | None


class AuditLog(Protocol):
    """Durable store of every decision."""

    def record(self, decision: Decision) -> None:
        """Persist ``decision``; raise :class:`~gatekeeper.errors.StorageError` on failure."""
        ...

    def get(self, decision_id: str) -> Decision:
        """Raise :class:`~gatekeeper.errors.NotFoundError` for an unknown id."""
        ...

    def query(self, query: DecisionQuery) -> DecisionPage: ...

    def check_health(self) -> None: ...


class SpooledAuditLog(AuditLog, Protocol):
    """An audit log that keeps decisions in a local durable spool while its database is away."""

    @property
    def spool_depth(self) -> int:
        """Decisions waiting in the spool for the database (``/readyz`` reports it)."""
        ...

    def spool_blocked(self) -> str | None:
        """Why the spool cannot drain now (None when it is empty or draining)."""
        ...

    @property
    def spool_quarantined(self) -> int:
        """Spooled decisions the store refused (kept in the spool's quarantine file)."""
        ...

    @property
    def spool_quarantine_path(self) -> str | None:
        """Where the quarantined decisions are kept (None without a spool)."""
        ...

    @property
    def signing_key_info(self) -> Mapping[str, str]:
        """Where the checkpoint signing key came from (``/readyz`` reports it)."""
        ...
