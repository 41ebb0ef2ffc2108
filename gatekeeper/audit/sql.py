"""``SqlAuditLog``: the hash-chained audit trail on SQLAlchemy Core (SQLite, PostgreSQL).

The class is composed of one mixin per job: :mod:`~gatekeeper.audit.core` (state),
:mod:`~gatekeeper.audit.writer` (record, group commit, spool), :mod:`~gatekeeper.audit.append`
(the append transaction, replay), :mod:`~gatekeeper.audit.checkpoints`,
:mod:`~gatekeeper.audit.maintenance` (thread, retention) and :mod:`~gatekeeper.audit.queries`.

How several replicas append to one PostgreSQL without gaps or forks
--------------------------------------------------------------------
Every append transaction first locks the single chain-head row
(``SELECT ... FROM gatekeeper_audit_chain_head WHERE id = 1 FOR UPDATE``; on SQLite a no-op
``UPDATE`` of it, which takes the database write lock before anything is read). Holding that
row lock it reads the last ``(seq, record_hash)``, gives the batch the next sequence numbers,
computes each record's hash from its predecessor's, inserts the rows, signs a checkpoint if one
is due, and moves the head, all in one transaction. A second replica blocks on the head row
until the first commits, then reads the new head, so every record has exactly one predecessor
(no fork). Sequence numbers come from the head row, not from a database sequence, so a rolled
back transaction leaves no gap. We chose the head row over ``pg_advisory_xact_lock``: it works
the same on SQLite, it keeps the head readable for verification (a truncated tail is visible
against it), and it puts the lock and the data it protects in one place.

The lock is held for one short transaction per *batch*: one writer thread per process collects
the decisions of all concurrent callers (after a bounded wait) and commits them together, each
caller waiting for its own outcome (see :mod:`gatekeeper.audit.writer`); canonical JSON and
document digests are computed before the lock is taken.

Never lost: when the database cannot be reached, the batch goes to the local
:class:`~gatekeeper.audit.spool.DurableSpool` (fsync) before anyone is answered, and the spool
is replayed in order (at start, before the next write, and by the maintenance thread). If the
spool cannot be written either, :meth:`record` raises :class:`StorageError` saying both why.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.audit.core import AuditSettings
from gatekeeper.audit.maintenance import MaintenanceMixin
from gatekeeper.audit.queries import MAX_PAGE_SIZE, QueriesMixin
from gatekeeper.audit.rows import checkpoint_from_row, filter_conditions, indexed_columns, prepare
from gatekeeper.audit.schema import migrate
from gatekeeper.errors import GatekeeperError, StorageError
from gatekeeper.storage.engine import create_database_engine, describe_url

__all__ = [
    "MAX_PAGE_SIZE",
    "AuditSettings",
    "SqlAuditLog",
    "checkpoint_from_row",
    "create_database_engine",
    "describe_url",
    "filter_conditions",
    "indexed_columns",
    "prepare",
]

log = logging.getLogger(__name__)


class SqlAuditLog(MaintenanceMixin, QueriesMixin):
    """Stores every decision in the hash chain; reads, queries, checkpoints, prunes."""

    # -- lifecycle -------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Create or upgrade the schema, then replay what a previous run left in the spool."""
        try:
            with self._engine.begin() as connection:
                applied = migrate(connection)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot migrate audit store {self._where}: {exc}") from exc
        if self.witness is not None:
            try:
                witnessed = self.witness.read()
            except GatekeeperError as exc:
                log.error("audit witness unreadable at start: %s", exc.render())
                witnessed = []
            if witnessed:
                self._trusted = max(witnessed, key=lambda c: c.seq)
        if self.spool_depth:
            self._as_writer(self._try_replay)
        return applied
