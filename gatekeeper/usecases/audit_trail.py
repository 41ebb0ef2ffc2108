"""The audit trail as its users ask for it: read, export, verify (online or a file), sign, prune."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from gatekeeper.domain import Decision, DecisionPage, DecisionQuery
from gatekeeper.domain.ports.audit import (
    AuditTrailStore,
    ChainVerification,
    ExportFormat,
    ExportRange,
    SignedCheckpoint,
    TrailVerification,
)
from gatekeeper.errors import ConfigurationError, InvalidInputError

__all__ = ["AuditTrail", "TrailCheck"]

_FORMATS: tuple[ExportFormat, ...] = ("jsonl", "csv", "opa")


@dataclass(frozen=True, slots=True)
class TrailCheck:
    """A passed online verification, and the spooled decisions the store refused (the trail
    is incomplete while any are kept in ``quarantine_file``)."""

    report: ChainVerification
    quarantined: int
    quarantine_file: str


class AuditTrail:
    """Use case over :class:`~gatekeeper.domain.ports.audit.AuditTrailStore` (API and CLI)."""

    def __init__(self, store: AuditTrailStore) -> None:
        self._store = store

    # -- reading ---------------------------------------------------------------------------

    def get(self, decision_id: str) -> Decision:
        """The decision with this id or unique id prefix (NotFoundError, AmbiguousIdError)."""
        return self._store.get(decision_id)

    def query(self, query: DecisionQuery) -> DecisionPage:
        return self._store.query(query)

    # -- export ----------------------------------------------------------------------------

    def plan_export(self, query: DecisionQuery) -> ExportRange:
        """Sign the head (when the key is here) and fix the range: before any byte is sent,
        so a storage error is still a clean failure."""
        return self._store.plan_export(query)

    def export(
        self, plan: ExportRange, export_format: str, *,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[str]:
        """The export of ``plan`` as text chunks, ending with its covering checkpoint."""
        return self._store.iter_export(plan, _format(export_format), progress=progress)

    # -- verification ----------------------------------------------------------------------

    def verify(self, *, since: datetime | None = None, public_key: Path | None = None,
               witness: str | None = None) -> TrailCheck:
        """Recompute the stored chain (IntegrityError names the first bad record) with the
        given or configured checkpoint key (none: the chain only), against the witness too
        when one is named, and count the quarantined decisions."""
        key = public_key or self._store.configured_public_key()
        report = self._store.verify(since=since, public_key=key, witness=witness)
        quarantined, where = self._store.quarantine()
        return TrailCheck(report, quarantined, where)

    def export_public_key(self, public_key: Path | None) -> Path:
        """The key an export is verified with: the given one, else the configured one."""
        chosen = public_key or self._store.configured_public_key()
        if chosen is None:
            raise ConfigurationError(
                "verifying an export needs the public key of its checkpoints: --public-key FILE"
            )
        return chosen

    def verify_export_file(self, path: Path, public_key: Path) -> TrailVerification:
        """Verify an export offline (IntegrityError names the first bad record)."""
        return self._store.verify_export_file(path, public_key)

    def configured_public_key(self) -> Path | None:
        return self._store.configured_public_key()

    # -- checkpoints and retention ---------------------------------------------------------

    def checkpoint(self) -> SignedCheckpoint | None:
        """Sign a checkpoint of the current head now; None when the trail is empty."""
        return self._store.write_checkpoint()

    def prune(self, older_than_days: int | None) -> int:
        """Delete records older than the retention age, up to a signed checkpoint."""
        if not older_than_days:
            raise ConfigurationError(
                "no retention age: pass --older-than-days N or set "
                "GATEKEEPER_AUDIT_RETENTION_DAYS"
            )
        return self._store.prune(timedelta(days=int(older_than_days)))

    def close(self) -> None:
        self._store.close()


def _format(name: str) -> ExportFormat:
    for known in _FORMATS:
        if name == known:
            return known
    raise InvalidInputError(f"unknown export format {name!r}: use jsonl, csv or opa",
                            field="format")
