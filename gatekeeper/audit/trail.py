"""``SqlAuditTrailStore``: the audit-trail port over ``SqlAuditLog`` (export, verify, keys)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from gatekeeper.audit.chain import Checkpoint, load_public_key
from gatekeeper.audit.embedded_key import embedded_key_path
from gatekeeper.audit.export import (
    ExportPlan,
    ExportReport,
    iter_export,
    plan_export,
    verify_export_file,
)
from gatekeeper.audit.spool import DurableSpool, count_quarantined
from gatekeeper.audit.sql import SqlAuditLog
from gatekeeper.audit.verify import VerificationReport, verify_database
from gatekeeper.domain import Decision, DecisionPage, DecisionQuery
from gatekeeper.domain.ports.audit import ExportFormat, ExportRange
from gatekeeper.errors import InvalidInputError

__all__ = ["SqlAuditTrailStore", "TrailSettings"]


@dataclass(frozen=True, slots=True)
class TrailSettings:
    """What verification needs beyond the store (the composition root fills it)."""

    database_url: str
    spool_dir: Path
    public_key_file: Path | None = None
    signing_key_file: Path | None = None
    checkpoint_every: int | None = None
    checkpoint_interval_seconds: float | None = None
    witness_endpoint_url: str | None = None
    witness_retention_days: int = 400
    version: str = ""


class SqlAuditTrailStore:
    """Implements :class:`~gatekeeper.domain.ports.audit.AuditTrailStore` on one trail."""

    def __init__(
        self, audit: SqlAuditLog | Callable[[], SqlAuditLog], settings: TrailSettings
    ) -> None:
        """``audit``: the server's running trail (closed by its owner), or a factory opening
        one on first use (a command's own, closed by :meth:`close`; offline verification of
        a file never opens it)."""
        self._given = audit if isinstance(audit, SqlAuditLog) else None
        self._open = None if isinstance(audit, SqlAuditLog) else audit
        self._opened: SqlAuditLog | None = None
        self._settings = settings

    @property
    def _audit(self) -> SqlAuditLog:
        if self._given is not None:
            return self._given
        if self._opened is None:
            assert self._open is not None
            self._opened = self._open()
        return self._opened

    def get(self, decision_id: str) -> Decision:
        return self._audit.get(decision_id)

    def query(self, query: DecisionQuery) -> DecisionPage:
        return self._audit.query(query)

    def plan_export(self, query: DecisionQuery) -> ExportPlan:
        return plan_export(self._audit, query)

    def iter_export(
        self, plan: ExportRange, export_format: ExportFormat, *,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[str]:
        if not isinstance(plan, ExportPlan):
            raise TypeError("an export range of this store comes from its plan_export")
        if export_format == "opa":  # matching records only, as OPA decision-log events
            from gatekeeper.audit.opa_log import iter_opa_export

            return iter_opa_export(self._audit, plan, version=self._settings.version,
                                   progress=progress)
        return iter_export(self._audit, plan, export_format, progress=progress)

    def verify(self, *, since: datetime | None = None, public_key: Path | None = None,
               witness: str | None = None) -> VerificationReport:
        settings = self._settings
        key = load_public_key(public_key) if public_key is not None else self._audit.verify_key
        witnessed: list[Checkpoint] | None = None
        if witness:
            from gatekeeper.audit.witness import open_witness

            witnessed = open_witness(
                witness, endpoint_url=settings.witness_endpoint_url,
                retention_days=settings.witness_retention_days,
            ).read()
        return verify_database(
            self._audit.engine, key, since=since, witnessed=witnessed,
            witness_name=witness or "the witness",
            checkpoint_every=settings.checkpoint_every,
            checkpoint_interval=settings.checkpoint_interval_seconds,
        )

    def verify_export_file(self, path: Path, public_key: Path) -> ExportReport:
        key = load_public_key(public_key)
        try:
            return verify_export_file(path, key)
        except OSError as exc:
            raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from exc

    def configured_public_key(self) -> Path | None:
        settings = self._settings
        embedded = embedded_key_path(settings.database_url)
        candidates = [settings.public_key_file, settings.signing_key_file,
                      embedded if embedded is not None and embedded.exists() else None]
        chosen = next((candidate for candidate in candidates if candidate), None)
        return Path(chosen) if chosen else None

    def quarantine(self) -> tuple[int, str]:
        where = self._settings.spool_dir
        return count_quarantined(where), str(where / DurableSpool.QUARANTINE_NAME)

    def write_checkpoint(self) -> Checkpoint | None:
        return self._audit.write_checkpoint()

    def prune(self, older_than: timedelta) -> int:
        return self._audit.prune(older_than)

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()
            self._opened = None
