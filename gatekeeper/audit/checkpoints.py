"""Signed checkpoints of the chain head: when one is due, signing, trust, witness publishing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.audit.chain import Checkpoint
from gatekeeper.audit.core import AuditCore
from gatekeeper.audit.rows import checkpoint_from_row
from gatekeeper.audit.schema import chain_head, checkpoints
from gatekeeper.audit.witness import check_head_against_checkpoint
from gatekeeper.errors import GatekeeperError, StorageError

__all__ = ["CheckpointsMixin"]

log = logging.getLogger(__name__)


class CheckpointsMixin(AuditCore):
    """Checkpoint signing and the newest trusted checkpoint."""

    def _trusted_checkpoint(self, connection: Connection) -> Checkpoint | None:
        """The newest checkpoint known good: the database's, or ours if newer (or the
        database's was deleted)."""
        stored = self._latest_checkpoint(connection)
        if self._trusted is None or (stored is not None and stored.seq > self._trusted.seq):
            return stored
        return self._trusted

    def _signed(self, checkpoint: Checkpoint) -> None:
        """After the commit: remember the checkpoint and publish it to the witness."""
        self._trusted = checkpoint
        if self.witness is not None:
            try:
                self.witness.publish(checkpoint)
            except GatekeeperError as exc:
                # the checkpoint is committed; `audit verify --witness` will name the gap
                log.error("checkpoint at record %d not witnessed: %s", checkpoint.seq,
                          exc.render())

    def _checkpoint_due(self, head: sa.Row[Any], new_seq: int) -> bool:
        if self.signer is None or new_seq <= int(head.checkpoint_seq):
            return False
        if new_seq - int(head.checkpoint_seq) >= self.settings.checkpoint_every:
            return True
        last = head.checkpoint_at
        if last is None:
            return False  # the clock starts with the first append (see _append)
        if last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        age = (datetime.now(UTC) - last).total_seconds()
        return bool(age >= self.settings.checkpoint_interval_seconds)

    def write_checkpoint(self, *, only_if_due: bool = False) -> Checkpoint | None:
        """Sign the current head (if it moved since the last checkpoint); return the latest."""
        if self.signer is None:
            raise StorageError("no audit signing key is configured: checkpoints cannot be signed")
        try:
            if only_if_due:
                # Every writer (each worker of each replica) asks this every maintenance tick:
                # look before taking the chain-head lock, so the writers do not queue on it
                # once a second for nothing.
                with self._engine.connect() as connection:
                    peek = connection.execute(
                        sa.select(chain_head).where(chain_head.c.id == 1)
                    ).first()
                    if peek is not None and not self._checkpoint_due(peek, int(peek.seq)):
                        return self._latest_checkpoint(connection)
            with self._engine.begin() as connection:
                head = self._lock_head(connection)
                seq = int(head.seq)
                due = self._checkpoint_due(head, seq) if only_if_due else seq > int(
                    head.checkpoint_seq
                )
                if due:
                    try:
                        check_head_against_checkpoint(
                            connection, head, self._trusted_checkpoint(connection),
                            self._verified,
                        )
                    except StorageError as exc:
                        self.chain_error = exc.message
                        raise
                    checkpoint = self.signer.sign(seq, str(head.record_hash))
                    connection.execute(checkpoints.insert().values(**checkpoint.as_dict()))
                    connection.execute(
                        chain_head.update().where(chain_head.c.id == 1).values(
                            checkpoint_seq=seq, checkpoint_at=datetime.now(UTC)
                        )
                    )
                else:
                    return self._latest_checkpoint(connection)
            self._signed(checkpoint)
            return checkpoint
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot write a checkpoint in {self._where}: {exc}") from exc

    def _latest_checkpoint(self, connection: Connection) -> Checkpoint | None:
        row = connection.execute(
            sa.select(checkpoints)
            .order_by(checkpoints.c.seq.desc(), checkpoints.c.id.desc())
            .limit(1)
        ).first()
        return checkpoint_from_row(row) if row is not None else None

    def checkpoint_status(self) -> tuple[float | None, int]:
        """(epoch seconds of the newest signed checkpoint or None, records not yet covered by
        one); read at each metrics scrape. An unreachable store reads as (None, 0)."""
        try:
            with self._engine.connect() as connection:
                head = connection.execute(
                    sa.select(chain_head).where(chain_head.c.id == 1)
                ).first()
        except SQLAlchemyError:
            return None, 0
        if head is None:
            return None, 0
        uncovered = int(head.seq) - int(head.checkpoint_seq)
        if int(head.checkpoint_seq) == 0 or head.checkpoint_at is None:
            return None, uncovered
        at = head.checkpoint_at
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp(), uncovered
