"""Audit store schema and its migrations (SQLite and PostgreSQL, one definition)."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = ["MIGRATIONS", "decision_images", "decisions", "metadata", "migrate"]

metadata = sa.MetaData()

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

schema_migrations = sa.Table(
    "gatekeeper_schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

decisions = sa.Table(
    "gatekeeper_decisions",
    metadata,
    sa.Column("seq", _BigId, primary_key=True, autoincrement=True),
    sa.Column("decision_id", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("verdict", sa.String(8), nullable=False),
    sa.Column("mode", sa.String(8), nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False),
    sa.Column("environment", sa.String(128), nullable=False),
    sa.Column("namespace", sa.String(253)),
    sa.Column("intent_id", sa.String(256)),
    sa.Column("plan_id", sa.String(256)),
    sa.Column("ticket_id", sa.String(256)),
    sa.Column("deploy_id", sa.String(256)),
    sa.Column("policy_revision", sa.String(80)),
    sa.Column("caller", sa.String(256)),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("policy_input", sa.Text),
    sa.Index("ix_gatekeeper_decisions_ticket_id", "ticket_id"),
    sa.Index("ix_gatekeeper_decisions_plan_id", "plan_id"),
    sa.Index("ix_gatekeeper_decisions_intent_id", "intent_id"),
    sa.Index("ix_gatekeeper_decisions_deploy_id", "deploy_id"),
    sa.Index("ix_gatekeeper_decisions_created_at", "created_at"),
)

decision_images = sa.Table(
    "gatekeeper_decision_images",
    metadata,
    sa.Column("decision_seq", _BigId, sa.ForeignKey("gatekeeper_decisions.seq"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("reference", sa.Text, nullable=False),
    sa.Column("digest", sa.String(160)),
    sa.PrimaryKeyConstraint("decision_seq", "position"),
    sa.Index("ix_gatekeeper_decision_images_digest", "digest"),
)


def _v1_initial(connection: Connection) -> None:
    for table in (decisions, decision_images):
        table.create(connection, checkfirst=True)


#: Ordered, append-only list of (version, description, step). Never edit a released step.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "decisions and their images", _v1_initial),
]


def migrate(connection: Connection) -> list[int]:
    """Apply the migrations not yet applied, in order; return the versions applied."""
    from datetime import UTC, datetime

    schema_migrations.create(connection, checkfirst=True)
    if connection.dialect.name == "postgresql":
        # Several replicas may start at once: serialise migrations on a transaction lock.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(7366201)"))
    applied = set(connection.execute(sa.select(schema_migrations.c.version)).scalars())
    done: list[int] = []
    for version, description, step in MIGRATIONS:
        if version in applied:
            continue
        step(connection)
        connection.execute(
            schema_migrations.insert().values(
                version=version, description=description, applied_at=datetime.now(UTC)
            )
        )
        done.append(version)
    return done
