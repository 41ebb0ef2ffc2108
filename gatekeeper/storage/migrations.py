"""Versioned schema migrations shared by the SQL adapters (audit, policy, SBOM, VEX stores).

Each adapter keeps its own ordered, append-only list of ``(version, description, step)`` and
its own version table; this module only runs them: under a PostgreSQL transaction-scoped
advisory lock (several replicas may start at once), each missing step once, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = ["Migration", "apply_migrations", "migration_table"]

Migration = tuple[int, str, Callable[[Connection], None]]


def migration_table(name: str, metadata: sa.MetaData) -> sa.Table:
    """The version table: one row per applied migration."""
    return sa.Table(
        name,
        metadata,
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )


def apply_migrations(
    connection: Connection,
    table: sa.Table,
    migrations: Sequence[Migration],
    *,
    lock_key: int,
    now: datetime,
) -> list[int]:
    """Apply the migrations not yet recorded in ``table``; return the versions applied."""
    table.create(connection, checkfirst=True)
    if connection.dialect.name == "postgresql":
        # Several replicas may start at once: serialise migrations on a transaction lock.
        connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({int(lock_key)})"))
    applied = set(connection.execute(sa.select(table.c.version)).scalars())
    done: list[int] = []
    for version, description, step in migrations:
        if version in applied:
            continue
        step(connection)
        connection.execute(
            table.insert().values(version=version, description=description, applied_at=now)
        )
        done.append(version)
    return done
