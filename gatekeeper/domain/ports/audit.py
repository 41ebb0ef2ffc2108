"""Port of the audit trail: the durable record of every decision, and how it is queried."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from gatekeeper.domain.decision import Decision, Verdict

__all__ = [
    "AsyncAuditLog",
    "AuditLog",
    "AuditTrailStore",
    "ChainVerification",
    "DecisionPage",
    "DecisionQuery",
    "ExportFormat",
    "ExportRange",
    "SignedCheckpoint",
    "SpooledAuditLog",
    "TrailVerification",
]

#: Formats of an export: the verifiable JSON lines and CSV, and OPA decision-log events.
ExportFormat = Literal["jsonl", "csv", "opa"]


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


class AsyncAuditLog(AuditLog, Protocol):
    """An audit log a coroutine can await: durable when the await returns, no thread hop."""

    async def record_async(self, decision: Decision) -> None:
        """:meth:`AuditLog.record` for the event loop; raises the same errors."""
        ...


class SignedCheckpoint(Protocol):
    """A signed statement that the trail up to ``seq`` ended in a given hash."""

    @property
    def seq(self) -> int: ...

    @property
    def key_id(self) -> str: ...


class ExportRange(Protocol):
    """What one export will contain, decided (and checkpointed) before its first byte."""

    @property
    def checkpoint(self) -> SignedCheckpoint: ...

    @property
    def first_seq(self) -> int | None: ...

    @property
    def end_seq(self) -> int | None: ...

    @property
    def entries(self) -> int: ...

    @property
    def created_at(self) -> str: ...


class TrailVerification(Protocol):
    """A passed verification (of an export file or the store): its one-line summary."""

    def summary(self) -> str: ...


class ChainVerification(TrailVerification, Protocol):
    """A passed verification of the stored chain: what it covered, and warnings to read."""

    @property
    def notes(self) -> Sequence[str]: ...

    @property
    def records(self) -> int: ...

    @property
    def first_seq(self) -> int | None: ...

    @property
    def last_seq(self) -> int | None: ...

    @property
    def checkpoints(self) -> int: ...

    @property
    def last_checkpoint_seq(self) -> int | None: ...

    @property
    def uncovered(self) -> int:
        """Records after the last signed checkpoint (chained, not yet signed)."""
        ...

    @property
    def pruned_through(self) -> int | None: ...


class AuditTrailStore(Protocol):
    """The stored trail as its auditors use it: read, export, verify, checkpoint, prune.

    Verification failures raise :class:`~gatekeeper.errors.IntegrityError` (``context``
    names the ``record``); an unreadable store :class:`~gatekeeper.errors.StorageError`.
    """

    def get(self, decision_id: str) -> Decision: ...

    def query(self, query: DecisionQuery) -> DecisionPage: ...

    def plan_export(self, query: DecisionQuery) -> ExportRange:
        """Sign the head (with the key), then fix the range an export will stream."""
        ...

    def iter_export(
        self, plan: ExportRange, export_format: ExportFormat, *,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[str]:
        """The export of ``plan`` as text chunks."""
        ...

    def verify(self, *, since: datetime | None = None, public_key: Path | None = None,
               witness: str | None = None) -> ChainVerification:
        """Recompute the stored chain (and check it against the witness, if named)."""
        ...

    def verify_export_file(self, path: Path, public_key: Path) -> TrailVerification:
        """Verify an exported file offline against the checkpoints' public key."""
        ...

    def configured_public_key(self) -> Path | None:
        """The checkpoint key file the settings name (or the embedded default's)."""
        ...

    def quarantine(self) -> tuple[int, str]:
        """(spooled decisions the store refused, the file they are kept in)."""
        ...

    def write_checkpoint(self) -> SignedCheckpoint | None:
        """Sign the current head now; None when the trail is empty."""
        ...

    def prune(self, older_than: timedelta) -> int:
        """Delete records older than ``older_than`` up to a signed checkpoint; the count."""
        ...

    def close(self) -> None: ...
