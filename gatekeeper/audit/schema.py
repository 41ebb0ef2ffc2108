"""Audit store schema and its migrations (SQLite and PostgreSQL, one definition).

Append-only by construction: step 1 installs triggers that refuse UPDATE and DELETE (and, on
PostgreSQL, TRUNCATE) of decisions, their images and checkpoints. The one exception is
retention (:meth:`SqlAuditLog.prune`): inside its own transaction it writes a *prune permit*
naming the last record it may delete (always a signed checkpoint), deletes, and removes the
permit before committing, so no other session ever sees one. None of this stops a database
superuser (who can drop triggers); the hash chain and the signed checkpoints are what prove
that nothing was changed, removed or inserted (``gatekeeper audit verify``).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gatekeeper.audit.chain import GENESIS_HASH
from gatekeeper.storage.migrations import Migration, apply_migrations, migration_table

__all__ = [
    "MIGRATIONS",
    "chain_head",
    "checkpoints",
    "decision_evidence",
    "decision_images",
    "decisions",
    "evidence_documents",
    "drop_append_only_triggers",
    "install_append_only_triggers",
    "metadata",
    "migrate",
    "prune_permits",
]

metadata = sa.MetaData()

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Hash = sa.String(64)

schema_migrations = migration_table("gatekeeper_schema_migrations", metadata)

#: One row per decision. ``seq`` is the position in the chain, assigned under the chain-head
#: lock (never by a sequence, which would leave gaps on rollback).
decisions = sa.Table(
    "gatekeeper_decisions",
    metadata,
    sa.Column("seq", _BigId, primary_key=True, autoincrement=False),
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
    #: RFC 8785 canonical JSON of Decision.as_dict(); its sha256 is ``decision_sha256``.
    sa.Column("document", sa.Text, nullable=False),
    #: RFC 8785 canonical JSON of the Rego input document; its sha256 is ``policy_input_sha256``.
    sa.Column("policy_input", sa.Text),
    sa.Column("decision_sha256", _Hash, nullable=False),
    sa.Column("policy_input_sha256", _Hash),
    sa.Column("prev_hash", _Hash, nullable=False),
    sa.Column("record_hash", _Hash, nullable=False),
    sa.Index("ix_gatekeeper_decisions_ticket_id", "ticket_id"),
    sa.Index("ix_gatekeeper_decisions_plan_id", "plan_id"),
    sa.Index("ix_gatekeeper_decisions_intent_id", "intent_id"),
    sa.Index("ix_gatekeeper_decisions_deploy_id", "deploy_id"),
    sa.Index("ix_gatekeeper_decisions_created_at", "created_at"),
    sa.Index("ix_gatekeeper_decisions_namespace", "namespace"),
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

#: The single row every writer locks (``SELECT ... FOR UPDATE``) to append: the last ``seq``
#: and ``record_hash``, and when the last checkpoint was signed.
chain_head = sa.Table(
    "gatekeeper_audit_chain_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", _BigId, nullable=False),
    sa.Column("record_hash", _Hash, nullable=False),
    sa.Column("checkpoint_seq", _BigId, nullable=False),
    sa.Column("checkpoint_at", sa.DateTime(timezone=True)),
)

checkpoints = sa.Table(
    "gatekeeper_audit_checkpoints",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("seq", _BigId, nullable=False, index=True),
    sa.Column("record_hash", _Hash, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("pruned_through", _BigId),
    sa.Column("signature", sa.Text, nullable=False),
)

#: Evidence documents: each stored once, keyed by the sha256 of its RFC 8785
#: canonical JSON (``document`` is that text), shared by every decision that references it.
evidence_documents = sa.Table(
    "gatekeeper_evidence_documents",
    metadata,
    sa.Column("sha256", _Hash, primary_key=True, autoincrement=False),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("size_bytes", sa.Integer, nullable=False),
)

#: Which decision references which evidence document (derived from its policy input, which
#: the chain covers; verify re-derives it). Retention keeps every document a row here names.
decision_evidence = sa.Table(
    "gatekeeper_decision_evidence",
    metadata,
    sa.Column("decision_seq", _BigId, sa.ForeignKey("gatekeeper_decisions.seq"), nullable=False),
    sa.Column("sha256", _Hash, nullable=False),
    sa.PrimaryKeyConstraint("decision_seq", "sha256"),
    sa.Index("ix_gatekeeper_decision_evidence_sha256", "sha256"),
)

prune_permits = sa.Table(
    "gatekeeper_audit_prune_permits",
    metadata,
    sa.Column("through_seq", _BigId, primary_key=True, autoincrement=False),
)

_REFUSED = "gatekeeper audit records are append-only"

_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
        BEGIN SELECT RAISE(ABORT, '{_REFUSED}: UPDATE of {table} refused'); END"""
    for table in ("gatekeeper_decisions", "gatekeeper_decision_images",
                  "gatekeeper_audit_checkpoints")
] + [
    f"""CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
        WHEN NOT EXISTS (SELECT 1 FROM gatekeeper_audit_prune_permits p
                         WHERE OLD.{column} <= p.through_seq)
        BEGIN SELECT RAISE(ABORT, '{_REFUSED}: DELETE of {table} refused'); END"""  # noqa: S608
    for table, column in (("gatekeeper_decisions", "seq"),
                          ("gatekeeper_decision_images", "decision_seq"))
] + [
    f"""CREATE TRIGGER IF NOT EXISTS gatekeeper_audit_checkpoints_no_delete
        BEFORE DELETE ON gatekeeper_audit_checkpoints
        BEGIN SELECT RAISE(ABORT, '{_REFUSED}: DELETE of gatekeeper_audit_checkpoints refused');
        END""",  # noqa: S608
]

_POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION gatekeeper_refuse_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND TG_NARGS > 0 THEN
    IF EXISTS (SELECT 1 FROM gatekeeper_audit_prune_permits p
               WHERE p.through_seq >= (to_jsonb(OLD) ->> TG_ARGV[0])::bigint) THEN
      RETURN OLD;
    END IF;
  END IF;
  RAISE EXCEPTION '{_REFUSED}: % of % refused', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$"""  # noqa: S608 (constant text, no input)


def _postgres_triggers() -> list[str]:
    statements = [_POSTGRES_FUNCTION]
    for table, column in (("gatekeeper_decisions", "'seq'"),
                          ("gatekeeper_decision_images", "'decision_seq'"),
                          ("gatekeeper_audit_checkpoints", "")):
        statements += [
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
                FOR EACH ROW EXECUTE FUNCTION gatekeeper_refuse_audit_change({column})""",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
            f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
                FOR EACH STATEMENT EXECUTE FUNCTION gatekeeper_refuse_audit_change()""",
        ]
    return statements


def install_append_only_triggers(connection: Connection) -> None:
    """(Re)install the triggers; idempotent. Tests drop them to play an attacker."""
    statements = (
        _postgres_triggers() if connection.dialect.name == "postgresql" else _SQLITE_TRIGGERS
    )
    for statement in statements:
        connection.execute(sa.text(statement))


def drop_append_only_triggers(connection: Connection) -> None:
    """What an attacker with database access does first (tests use it to tamper)."""
    tables = ("gatekeeper_decisions", "gatekeeper_decision_images", "gatekeeper_audit_checkpoints",
              "gatekeeper_evidence_documents", "gatekeeper_decision_evidence")
    for table in tables:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
            connection.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}"))
        else:
            connection.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_no_update"))
            connection.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_no_delete"))


def _v1_initial(connection: Connection) -> None:
    for table in (decisions, decision_images, chain_head, checkpoints, prune_permits):
        table.create(connection, checkfirst=True)
    if connection.execute(sa.select(chain_head.c.id)).first() is None:
        connection.execute(
            chain_head.insert().values(
                id=1, seq=0, record_hash=GENESIS_HASH, checkpoint_seq=0, checkpoint_at=None
            )
        )
    install_append_only_triggers(connection)


_EVIDENCE_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
        BEGIN SELECT RAISE(ABORT, '{_REFUSED}: UPDATE of {table} refused'); END"""
    for table in ("gatekeeper_evidence_documents", "gatekeeper_decision_evidence")
] + [
    f"""CREATE TRIGGER IF NOT EXISTS gatekeeper_decision_evidence_no_delete
        BEFORE DELETE ON gatekeeper_decision_evidence
        WHEN NOT EXISTS (SELECT 1 FROM gatekeeper_audit_prune_permits p
                         WHERE OLD.decision_seq <= p.through_seq)
        BEGIN SELECT RAISE(ABORT, '{_REFUSED}: DELETE of gatekeeper_decision_evidence refused');
        END""",  # noqa: S608
    # a document goes only during retention, and only when no decision references it
    f"""CREATE TRIGGER IF NOT EXISTS gatekeeper_evidence_documents_no_delete
        BEFORE DELETE ON gatekeeper_evidence_documents
        WHEN NOT EXISTS (SELECT 1 FROM gatekeeper_audit_prune_permits)
          OR EXISTS (SELECT 1 FROM gatekeeper_decision_evidence e WHERE e.sha256 = OLD.sha256)
        BEGIN SELECT RAISE(ABORT, '{_REFUSED}: DELETE of gatekeeper_evidence_documents refused');
        END""",  # noqa: S608
]

_EVIDENCE_POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION gatekeeper_refuse_evidence_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM gatekeeper_audit_prune_permits)
     AND NOT EXISTS (SELECT 1 FROM gatekeeper_decision_evidence e
                     WHERE e.sha256 = OLD.sha256) THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION '{_REFUSED}: % of % refused', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$"""  # noqa: S608 (constant text, no input)


def _evidence_postgres_triggers() -> list[str]:
    statements = [_POSTGRES_FUNCTION, _EVIDENCE_POSTGRES_FUNCTION]
    for table, function in (
        ("gatekeeper_decision_evidence", "gatekeeper_refuse_audit_change('decision_seq')"),
        ("gatekeeper_evidence_documents", "gatekeeper_refuse_evidence_delete()"),
    ):
        statements += [
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
                FOR EACH ROW EXECUTE FUNCTION {function}""",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
            f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
                FOR EACH STATEMENT EXECUTE FUNCTION gatekeeper_refuse_audit_change()""",
        ]
    return statements


def _v2_evidence_documents(connection: Connection) -> None:
    for table in (evidence_documents, decision_evidence):
        table.create(connection, checkfirst=True)
    statements = (
        _evidence_postgres_triggers() if connection.dialect.name == "postgresql"
        else _EVIDENCE_SQLITE_TRIGGERS
    )
    for statement in statements:
        connection.execute(sa.text(statement))


#: Ordered, append-only list of (version, description, step). Never edit a released step.
MIGRATIONS: list[Migration] = [
    (1, "hash-chained append-only decisions, images, chain head, signed checkpoints", _v1_initial),
    (2, "content-addressed evidence documents and the decisions referencing them",
     _v2_evidence_documents),
]


def migrate(connection: Connection) -> list[int]:
    """Apply the migrations not yet applied, in order; return the versions applied."""
    from datetime import UTC, datetime

    return apply_migrations(
        connection, schema_migrations, MIGRATIONS, lock_key=7366201, now=datetime.now(UTC)
    )
