"""The maintenance thread (spool replay, due checkpoints, retention) and retention pruning."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.audit.evidence import prune_unreferenced_evidence
from gatekeeper.audit.schema import (
    chain_head,
    checkpoints,
    decision_images,
    decisions,
    prune_permits,
)
from gatekeeper.audit.writer import WriterMixin
from gatekeeper.errors import GatekeeperError, StorageError

__all__ = ["MaintenanceMixin"]

log = logging.getLogger(__name__)


class MaintenanceMixin(WriterMixin):
    """Background upkeep of the trail and the retention prune."""

    def start(self) -> None:
        """Start the maintenance thread: spool replay and time-based checkpoints."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._maintain, name="gatekeeper-audit-maintenance", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._stop_writer()
        self._engine.dispose()
        self._close_turns()

    def _maybe_prune(self) -> None:
        days = self.settings.retention_days
        if not days or self.signer is None:
            return
        if time.monotonic() - self._last_retention < self.settings.retention_interval_seconds:
            return
        self._last_retention = time.monotonic()
        deleted = self._as_writer(lambda: self.prune(timedelta(days=days)))
        if deleted:
            log.info("audit retention: pruned %d records older than %d days", deleted, days)

    def _maintain(self) -> None:
        while not self._stop.wait(self.settings.maintenance_interval_seconds):
            try:
                if self.spool_depth:
                    self._as_writer(self._try_replay)
                elif self.signer is not None:
                    self._as_writer(lambda: self.write_checkpoint(only_if_due=True))
                self._maybe_prune()
            except GatekeeperError as exc:
                log.warning("audit maintenance: %s", exc.render())
            except Exception:  # the thread must survive anything; the next tick retries
                log.exception("audit maintenance failed")

    # -- retention -------------------------------------------------------------------------

    def prune(self, older_than: timedelta, *, now: datetime | None = None) -> int:
        """Delete the records older than ``older_than`` that lie behind a signed checkpoint.

        Only a prefix ending exactly at a checkpoint is removed, so the first remaining record
        still chains to signed state; a fresh checkpoint records ``pruned_through``. Returns
        the number of records deleted.
        """
        if self.signer is None:
            raise StorageError("retention needs the audit signing key: nothing was pruned")
        cutoff = (now or datetime.now(UTC)) - older_than
        try:
            with self._engine.begin() as connection:
                head = self._lock_head(connection)
                through = connection.execute(
                    sa.select(sa.func.max(checkpoints.c.seq)).where(
                        checkpoints.c.seq.in_(
                            sa.select(decisions.c.seq).where(decisions.c.created_at < cutoff)
                        )
                    )
                ).scalar()
                if through is None:
                    return 0
                # every record up to the checkpoint must be older than the cutoff
                younger = connection.execute(
                    sa.select(sa.func.max(decisions.c.seq)).where(
                        decisions.c.seq <= through, decisions.c.created_at >= cutoff
                    )
                ).scalar()
                if younger is not None:
                    through = connection.execute(
                        sa.select(sa.func.max(checkpoints.c.seq)).where(
                            checkpoints.c.seq < younger
                        )
                    ).scalar()
                    if through is None:
                        return 0
                connection.execute(prune_permits.insert().values(through_seq=through))
                connection.execute(
                    decision_images.delete().where(decision_images.c.decision_seq <= through)
                )
                # evidence documents go with the last decision that references them
                dropped = prune_unreferenced_evidence(connection, int(through))
                if dropped:
                    log.info("audit retention: %d evidence documents no longer referenced",
                             dropped)
                deleted = connection.execute(
                    decisions.delete().where(decisions.c.seq <= through)
                ).rowcount
                connection.execute(prune_permits.delete())
                # a signed statement that records 1..through were pruned on purpose
                checkpoint = self.signer.sign(
                    int(head.seq), str(head.record_hash), pruned_through=int(through)
                )
                connection.execute(checkpoints.insert().values(**checkpoint.as_dict()))
                connection.execute(
                    chain_head.update().where(chain_head.c.id == 1).values(
                        checkpoint_seq=int(head.seq), checkpoint_at=datetime.now(UTC)
                    )
                )
                return int(deleted or 0)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot prune audit store {self._where}: {exc}") from exc
