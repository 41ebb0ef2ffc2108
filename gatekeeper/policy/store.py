"""``SqlPolicyStore``: the lifecycle's stores (revisions, event chain, exceptions) on one Engine.

SQLAlchemy Core on the engine it is given (SQLite embedded, PostgreSQL production), with tables
and a migration list of its own (:mod:`.store_schema`). The parts: :mod:`.activation_chain`
(the hash-chained event log and the active revision derived from it), :mod:`.revision_store`
(revisions and their activation) and :mod:`.exception_store` (exceptions).
"""

from __future__ import annotations

from gatekeeper.domain.policy_lifecycle import (
    ACTIVATE,
    EXCEPTION_APPROVE,
    EXCEPTION_CREATE,
    EXCEPTION_REVOKE,
    ROLLBACK,
    PolicyConflictError,
    PolicyEvent,
    RevisionRecord,
    check_actor,
)
from gatekeeper.migrations import apply_migrations
from gatekeeper.policy.exception_store import SqlExceptionStore
from gatekeeper.policy.revision_store import SqlRevisionStore
from gatekeeper.policy.store_schema import MIGRATIONS, metadata, policy_migrations

__all__ = [
    "ACTIVATE",
    "EXCEPTION_APPROVE",
    "EXCEPTION_CREATE",
    "EXCEPTION_REVOKE",
    "MIGRATIONS",
    "ROLLBACK",
    "PolicyConflictError",
    "PolicyEvent",
    "RevisionRecord",
    "SqlPolicyStore",
    "check_actor",
    "metadata",
]


class SqlPolicyStore(SqlRevisionStore, SqlExceptionStore):
    """Revisions, lifecycle events and exceptions on one SQLAlchemy Engine (the
    :class:`~gatekeeper.domain.ports.policy.PolicyStore` port)."""

    def migrate(self) -> list[int]:
        """Apply the migrations not yet applied, in order; return the versions applied."""
        with self._begin("migrate") as connection:
            return apply_migrations(
                connection, policy_migrations, MIGRATIONS, lock_key=7366207, now=self._now()
            )
