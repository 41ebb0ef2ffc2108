"""Tables and migrations of the policy store (version table ``gatekeeper_policy_migrations``)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gatekeeper.migrations import Migration, migration_table

__all__ = [
    "MIGRATIONS", "events", "metadata", "policy_exceptions", "policy_migrations", "revisions",
]

metadata = sa.MetaData()
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

policy_migrations = migration_table("gatekeeper_policy_migrations", metadata)

revisions = sa.Table(
    "gatekeeper_policy_revisions",
    metadata,
    sa.Column("revision_id", sa.String(80), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("policies", sa.Text, nullable=False),
    sa.Column("tests", sa.Text, nullable=False),
    sa.Column("check_report", sa.Text, nullable=False),
    # v2: the .signatures.json an uploaded OPA bundle came with, kept as it came
    sa.Column("uploaded_signatures", sa.Text),
)

events = sa.Table(
    "gatekeeper_policy_events",
    metadata,
    sa.Column("seq", _BigId, primary_key=True, autoincrement=True),
    sa.Column("prev_seq", _BigId, nullable=False, unique=True),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("from_revision", sa.String(80)),
    sa.Column("to_revision", sa.String(80)),
    sa.Column("subject", sa.String(64)),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(80), nullable=False),
    sa.Column("entry_hash", sa.String(80), nullable=False),
    sa.Index("ix_gatekeeper_policy_events_action", "action"),
)

policy_exceptions = sa.Table(
    "gatekeeper_policy_exceptions",
    metadata,
    sa.Column("seq", _BigId, primary_key=True, autoincrement=True),
    sa.Column("exception_id", sa.String(32), unique=True),
    sa.Column("images", sa.Text, nullable=False),
    sa.Column("policies", sa.Text, nullable=False),
    sa.Column("environment", sa.String(128)),
    sa.Column("namespace", sa.String(253)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("approver", sa.String(256), nullable=False),
    sa.Column("ticket_id", sa.String(256), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_by", sa.String(256)),
    sa.Column("revoke_reason", sa.Text),
    # v2: pending until a second principal approves; tags pinned to digests at approval.
    # ("approver" above is the v1 free-text field: written empty, never trusted.)
    sa.Column("approved_at", sa.DateTime(timezone=True)),
    sa.Column("approved_by", sa.String(256)),
    sa.Column("any_digest", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("digests", sa.Text, nullable=False, server_default="{}"),
)

_V3_COLUMNS = ("approved_at", "approved_by", "any_digest", "digests")


def _v1_initial(connection: Connection) -> None:
    for table in (revisions, events, policy_exceptions):
        table.create(connection, checkfirst=True)


def _v2_uploaded_signatures(connection: Connection) -> None:
    # v1 creates the table from the current definition, which already has the column
    columns = {c["name"] for c in sa.inspect(connection).get_columns(revisions.name)}
    if "uploaded_signatures" not in columns:
        connection.execute(sa.text(
            f"ALTER TABLE {revisions.name} ADD COLUMN uploaded_signatures TEXT"))


def _v3_exception_approval(connection: Connection) -> None:
    """Add the approval columns; v1 exceptions become pending (they named no real approver)."""
    present = {c["name"] for c in sa.inspect(connection).get_columns(policy_exceptions.name)}
    for name in _V3_COLUMNS:
        if name in present:
            continue
        column = policy_exceptions.c[name]
        ddl_type = column.type.compile(dialect=connection.dialect)
        default = ""
        if column.server_default is not None:
            default = " NOT NULL DEFAULT " + (
                "false" if name == "any_digest" else "'{}'"
            )
        connection.execute(sa.text(
            f"ALTER TABLE {policy_exceptions.name} ADD COLUMN {name} {ddl_type}{default}"
        ))


#: Ordered, append-only list of (version, description, step). Never edit a released step.
MIGRATIONS: list[Migration] = [
    (1, "policy revisions, lifecycle events, exceptions", _v1_initial),
    (2, "keep the .signatures.json of uploaded bundles", _v2_uploaded_signatures),
    (3, "exceptions: pending until a second principal approves; digests", _v3_exception_approval),
]
