"""``SqlPolicyStore``: policy revisions, the active pointer, exceptions, and their audit chain.

SQLAlchemy Core on the audit store's Engine (SQLite embedded, PostgreSQL production), with
tables and a migration list of its own (version table ``gatekeeper_policy_migrations``).

The active revision is not a mutable pointer: it is derived from ``gatekeeper_policy_events``,
an append-only, hash-chained log of every activation, rollback and exception change (who, when,
from which revision to which). So the record of an activation and the activation itself are one
row and cannot disagree. Each event names the previous one (``prev_seq``, unique): two replicas
activating at once cannot both append after the same event; the loser retries on the new head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError as UniqueViolation
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.errors import (
    ConflictError,
    GatekeeperError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)
from gatekeeper.migrations import Migration, apply_migrations, migration_table
from gatekeeper.policy.bundle import PolicyFiles
from gatekeeper.policy.checks import CheckReport
from gatekeeper.policy.exceptions import (
    ExceptionRequest,
    PolicyException,
    as_utc,
    format_instant,
)

__all__ = [
    "MIGRATIONS",
    "PolicyConflictError",
    "PolicyEvent",
    "RevisionRecord",
    "SqlPolicyStore",
    "metadata",
]

metadata = sa.MetaData()
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_GENESIS_HASH = "sha256:" + "0" * 64

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

ACTIVATE, ROLLBACK = "activate", "rollback"
EXCEPTION_CREATE, EXCEPTION_REVOKE = "exception.create", "exception.revoke"
EXCEPTION_APPROVE = "exception.approve"


class PolicyConflictError(ConflictError):
    """The request is well-formed but the lifecycle state forbids it (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class RevisionRecord:
    revision_id: str
    created_at: datetime
    created_by: str
    source: str
    status: str
    description: str | None
    files: PolicyFiles
    report: CheckReport

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"

    def as_dict(
        self, *, active_revision: str | None = None, contents: bool = False
    ) -> dict[str, Any]:
        document: dict[str, Any] = {
            "revision_id": self.revision_id,
            "status": self.status,
            "active": self.revision_id == active_revision,
            "created_at": format_instant(self.created_at),
            "created_by": self.created_by,
            "source": self.source,
            "description": self.description,
            "checks": self.report.as_dict(),
            "files": self.files.file_listing(),
        }
        if self.files.uploaded_signatures is not None:
            document["uploaded_signatures"] = json.loads(self.files.uploaded_signatures)
        if contents:
            document["contents"] = self.files.as_text()
        return document


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    seq: int
    occurred_at: datetime
    actor: str
    action: str
    from_revision: str | None
    to_revision: str | None
    subject: str | None
    detail: dict[str, Any]
    entry_hash: str
    prev_hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "occurred_at": format_instant(self.occurred_at),
            "actor": self.actor,
            "action": self.action,
            "from_revision": self.from_revision,
            "to_revision": self.to_revision,
            "subject": self.subject,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "entry_hash": self.entry_hash,
        }


def _event_hash(prev_hash: str, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def _event_body(
    prev_seq: int, occurred_at: datetime, actor: str, action: str, from_revision: str | None,
    to_revision: str | None, subject: str | None, detail: dict[str, Any],
) -> dict[str, Any]:
    return {
        "prev_seq": prev_seq,
        "occurred_at": format_instant(occurred_at),
        "actor": actor,
        "action": action,
        "from_revision": from_revision,
        "to_revision": to_revision,
        "subject": subject,
        "detail": detail,
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class SqlPolicyStore:
    """Revisions, lifecycle events and exceptions on one SQLAlchemy Engine."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._now = clock or (lambda: datetime.now(UTC))
        self._where = engine.url.render_as_string(hide_password=True)

    @contextmanager
    def _begin(self, what: str) -> Iterator[Connection]:
        try:
            with self._engine.begin() as connection:
                yield connection
        except GatekeeperError:
            raise
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot {what} in policy store {self._where}: {type(exc).__name__}"
            ) from exc

    def migrate(self) -> list[int]:
        """Apply the migrations not yet applied, in order; return the versions applied."""
        with self._begin("migrate") as connection:
            return apply_migrations(
                connection, policy_migrations, MIGRATIONS, lock_key=7366207, now=self._now()
            )

    # -- revisions -------------------------------------------------------------------------

    def save_revision(
        self, files: PolicyFiles, report: CheckReport, *, actor: str, source: str,
        description: str | None = None,
    ) -> tuple[RevisionRecord, bool]:
        """Store a checked candidate; ``(record, created)``. Same content -> the stored one."""
        revision_id = files.revision_id
        existing = self._find_revision(revision_id)
        if existing is not None:
            return existing, False
        row = {
            "revision_id": revision_id,
            "created_at": self._now(),
            "created_by": actor,
            "source": source,
            "status": "accepted" if report.passed else "refused",
            "description": description,
            "policies": _dumps(files.as_text()["policies"]),
            "tests": _dumps(files.as_text()["tests"]),
            "check_report": _dumps(report.as_dict()),
            "uploaded_signatures": files.uploaded_signatures.decode()
            if files.uploaded_signatures is not None else None,
        }
        try:
            with self._begin("store revision") as connection:
                connection.execute(revisions.insert().values(**row))
        except StorageError as exc:
            if isinstance(exc.__cause__, UniqueViolation):  # stored concurrently: same content
                stored = self._find_revision(revision_id)
                if stored is not None:
                    return stored, False
            raise
        return self.get_revision(revision_id), True

    def _find_revision(self, revision_id: str) -> RevisionRecord | None:
        with self._begin("read revision") as connection:
            row = connection.execute(
                sa.select(revisions).where(revisions.c.revision_id == revision_id)
            ).first()
        if row is None:
            return None
        policies = {k: v.encode() for k, v in json.loads(row.policies).items()}
        tests = {k: v.encode() for k, v in json.loads(row.tests).items()}
        return RevisionRecord(
            revision_id=row.revision_id,
            created_at=as_utc(row.created_at),
            created_by=row.created_by,
            source=row.source,
            status=row.status,
            description=row.description,
            files=PolicyFiles(
                policies, tests,
                uploaded_signatures=row.uploaded_signatures.encode()
                if row.uploaded_signatures else None,
            ),
            report=CheckReport.from_dict(json.loads(row.check_report)),
        )

    def get_revision(self, revision_id: str) -> RevisionRecord:
        record = self._find_revision(revision_id)
        if record is None:
            raise NotFoundError(f"policy revision {revision_id} not found")
        return record

    def list_revisions(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first, without contents."""
        statement = (
            sa.select(
                revisions.c.revision_id, revisions.c.created_at, revisions.c.created_by,
                revisions.c.source, revisions.c.status, revisions.c.description,
            )
            .order_by(revisions.c.created_at.desc(), revisions.c.revision_id)
            .limit(max(1, min(limit, 500)))
        )
        with self._begin("list revisions") as connection:
            rows = connection.execute(statement).all()
        return [
            {
                "revision_id": r.revision_id,
                "created_at": format_instant(r.created_at),
                "created_by": r.created_by,
                "source": r.source,
                "status": r.status,
                "description": r.description,
            }
            for r in rows
        ]

    # -- the event chain and the active pointer ---------------------------------------------

    def _append(
        self, connection: Connection, *, actor: str, action: str, from_revision: str | None,
        to_revision: str | None, subject: str | None, detail: dict[str, Any],
    ) -> PolicyEvent:
        head = connection.execute(
            sa.select(events.c.seq, events.c.entry_hash).order_by(events.c.seq.desc()).limit(1)
        ).first()
        prev_seq, prev_hash = (head.seq, head.entry_hash) if head else (0, _GENESIS_HASH)
        occurred_at = self._now()
        body = _event_body(
            prev_seq, occurred_at, actor, action, from_revision, to_revision, subject, detail
        )
        entry_hash = _event_hash(prev_hash, body)
        seq = connection.execute(
            events.insert()
            .values(
                prev_seq=prev_seq, occurred_at=occurred_at, actor=actor, action=action,
                from_revision=from_revision, to_revision=to_revision, subject=subject,
                detail=_dumps(detail), prev_hash=prev_hash, entry_hash=entry_hash,
            )
            .returning(events.c.seq)
        ).scalar_one()
        return PolicyEvent(
            seq, occurred_at, actor, action, from_revision, to_revision, subject, detail,
            entry_hash, prev_hash,
        )

    def _with_retry(self, what: str, step: Callable[[Connection], PolicyEvent]) -> PolicyEvent:
        """Run ``step`` in a transaction; retry when another writer appended first."""
        for _attempt in range(5):
            try:
                with self._begin(what) as connection:
                    return step(connection)
            except StorageError as exc:
                if not isinstance(exc.__cause__, UniqueViolation):
                    raise
        raise StorageError(f"cannot {what}: too many concurrent policy changes, retry")

    def _activation_stack(self, connection: Connection) -> list[str]:
        """Replay activations (push) and rollbacks (pop): the top is the active revision."""
        rows = connection.execute(
            sa.select(events.c.action, events.c.to_revision)
            .where(events.c.action.in_((ACTIVATE, ROLLBACK)))
            .order_by(events.c.seq)
        ).all()
        stack: list[str] = []
        for row in rows:
            if row.action == ACTIVATE:
                stack.append(row.to_revision)
            elif stack:
                stack.pop()
        return stack

    def active_revision_id(self) -> str | None:
        with self._begin("read the active revision") as connection:
            stack = self._activation_stack(connection)
        return stack[-1] if stack else None

    def head(self) -> int:
        """Sequence number of the newest event (0: none); replicas poll it to see changes."""
        with self._begin("read the event head") as connection:
            value = connection.execute(sa.select(sa.func.max(events.c.seq))).scalar()
        return int(value or 0)

    def activate(self, revision_id: str, *, actor: str, reason: str | None = None) -> PolicyEvent:
        record = self.get_revision(revision_id)
        if not record.accepted:
            raise PolicyConflictError(
                f"revision {revision_id} was refused by its checks and cannot be activated: "
                f"{record.report.summary()}"
            )

        def step(connection: Connection) -> PolicyEvent:
            stack = self._activation_stack(connection)
            current = stack[-1] if stack else None
            if current == revision_id:
                raise PolicyConflictError(f"revision {revision_id} is already active")
            return self._append(
                connection, actor=actor, action=ACTIVATE, from_revision=current,
                to_revision=revision_id, subject=None, detail={"reason": reason},
            )

        return self._with_retry("activate a revision", step)

    def rollback(self, *, actor: str, reason: str | None = None) -> PolicyEvent:
        """Return to the revision that was active before the current one."""

        def step(connection: Connection) -> PolicyEvent:
            stack = self._activation_stack(connection)
            if len(stack) < 2:
                raise PolicyConflictError("no earlier revision to roll back to")
            return self._append(
                connection, actor=actor, action=ROLLBACK, from_revision=stack[-1],
                to_revision=stack[-2], subject=None, detail={"reason": reason},
            )

        return self._with_retry("roll back", step)

    def events(self, *, limit: int = 100, actions: tuple[str, ...] = ()) -> list[PolicyEvent]:
        """Newest first."""
        statement = sa.select(events).order_by(events.c.seq.desc()).limit(max(1, min(limit, 1000)))
        if actions:
            statement = statement.where(events.c.action.in_(actions))
        with self._begin("read policy events") as connection:
            rows = connection.execute(statement).all()
        return [
            PolicyEvent(
                r.seq, as_utc(r.occurred_at), r.actor, r.action, r.from_revision,
                r.to_revision, r.subject, json.loads(r.detail), r.entry_hash, r.prev_hash,
            )
            for r in rows
        ]

    def verify_chain(self) -> int:
        """Recompute every event hash; return the count, raise IntegrityError at the first break."""
        with self._begin("verify the policy event chain") as connection:
            rows = connection.execute(sa.select(events).order_by(events.c.seq)).all()
        prev_seq, prev_hash = 0, _GENESIS_HASH
        for r in rows:
            body = _event_body(
                r.prev_seq, as_utc(r.occurred_at), r.actor, r.action, r.from_revision,
                r.to_revision, r.subject, json.loads(r.detail),
            )
            if r.prev_seq != prev_seq or r.prev_hash != prev_hash or (
                _event_hash(prev_hash, body) != r.entry_hash
            ):
                raise IntegrityError(f"policy event chain broken at seq {r.seq}")
            prev_seq, prev_hash = r.seq, r.entry_hash
        return len(rows)

    # -- exceptions ------------------------------------------------------------------------

    def create_exception(self, request: ExceptionRequest, *, actor: str) -> PolicyException:
        """Store a *pending* exception: it waives nothing until :meth:`approve_exception`."""
        now = self._now()
        created: list[PolicyException] = []

        def step(connection: Connection) -> PolicyEvent:
            created.clear()
            seq = connection.execute(
                policy_exceptions.insert()
                .values(
                    images=_dumps(list(request.images)),
                    policies=_dumps(list(request.policies)),
                    environment=request.environment,
                    namespace=request.namespace,
                    reason=request.reason,
                    approver="",
                    ticket_id=request.ticket_id,
                    expires_at=request.expires_at,
                    created_at=now,
                    created_by=actor,
                    any_digest=request.any_digest,
                    digests="{}",
                )
                .returning(policy_exceptions.c.seq)
            ).scalar_one()
            exception_id = f"EXC-{seq}"
            connection.execute(
                policy_exceptions.update()
                .where(policy_exceptions.c.seq == seq)
                .values(exception_id=exception_id)
            )
            exception = PolicyException(
                exception_id, request.images, request.policies, request.environment,
                request.namespace, request.reason, request.ticket_id,
                request.expires_at, now, actor, any_digest=request.any_digest,
            )
            created.append(exception)
            return self._append(
                connection, actor=actor, action=EXCEPTION_CREATE, from_revision=None,
                to_revision=None, subject=exception_id, detail=exception.as_rego(),
            )

        self._with_retry("create an exception", step)
        return created[0]

    def approve_exception(
        self, exception_id: str, *, actor: str, digests: dict[str, str],
        same_person: Callable[[str, str], bool],
    ) -> PolicyException:
        """Approve a pending exception, pinning its tags to ``digests``.

        Refused (409) when it is not pending, when ``same_person(creator, actor)`` holds, or when
        a tag it names has no digest in ``digests``. The check runs inside the transaction that
        writes the approval, so it cannot race a concurrent change.
        """
        now = self._now()

        def step(connection: Connection) -> PolicyEvent:
            row = connection.execute(
                sa.select(policy_exceptions).where(
                    policy_exceptions.c.exception_id == exception_id
                )
            ).first()
            if row is None:
                raise NotFoundError(f"exception {exception_id} not found")
            current = self._exception_from_row(row)
            if current.revoked_at is not None:
                raise PolicyConflictError(f"exception {exception_id} is revoked")
            if current.approved_at is not None:
                raise PolicyConflictError(
                    f"exception {exception_id} was already approved by {current.approved_by}"
                )
            if as_utc(current.expires_at) <= now:
                raise PolicyConflictError(f"exception {exception_id} has expired")
            if same_person(current.created_by, actor):
                raise PolicyConflictError(
                    f"exception {exception_id} was created by {current.created_by!r}: a second "
                    "person must approve it (subjects are compared after Unicode NFKC, case "
                    "folding and removal of invisible characters)"
                )
            if current.unresolvable():
                raise PolicyConflictError(
                    f"exception {exception_id} names {current.unresolvable()[0]!r}, which waives "
                    "any digest, without any_digest: true; create a new exception"
                )
            missing = [tag for tag in current.tags_to_resolve() if tag not in digests]
            if missing:
                raise PolicyConflictError(
                    f"exception {exception_id}: {missing[0]} has no resolved digest"
                )
            pinned = {tag: digests[tag] for tag in current.tags_to_resolve()}
            connection.execute(
                policy_exceptions.update()
                .where(policy_exceptions.c.exception_id == exception_id)
                .where(policy_exceptions.c.approved_at.is_(None))
                .values(approved_at=now, approved_by=actor, digests=_dumps(pinned))
            )
            return self._append(
                connection, actor=actor, action=EXCEPTION_APPROVE, from_revision=None,
                to_revision=None, subject=exception_id,
                detail={"approved_at": format_instant(now), "digests": pinned},
            )

        self._with_retry("approve an exception", step)
        return self.get_exception(exception_id)

    def revoke_exception(
        self, exception_id: str, *, actor: str, reason: str | None = None
    ) -> PolicyException:
        now = self._now()

        def step(connection: Connection) -> PolicyEvent:
            row = connection.execute(
                sa.select(policy_exceptions.c.revoked_at).where(
                    policy_exceptions.c.exception_id == exception_id
                )
            ).first()
            if row is None:
                raise NotFoundError(f"exception {exception_id} not found")
            if row.revoked_at is not None:
                raise PolicyConflictError(f"exception {exception_id} is already revoked")
            connection.execute(
                policy_exceptions.update()
                .where(policy_exceptions.c.exception_id == exception_id)
                .values(revoked_at=now, revoked_by=actor, revoke_reason=reason)
            )
            return self._append(
                connection, actor=actor, action=EXCEPTION_REVOKE, from_revision=None,
                to_revision=None, subject=exception_id,
                detail={"revoked_at": format_instant(now), "reason": reason},
            )

        self._with_retry("revoke an exception", step)
        return self.get_exception(exception_id)

    def _exception_from_row(self, row: Any) -> PolicyException:
        return PolicyException(
            exception_id=row.exception_id,
            images=tuple(json.loads(row.images)),
            policies=tuple(json.loads(row.policies)),
            environment=row.environment,
            namespace=row.namespace,
            reason=row.reason,
            ticket_id=row.ticket_id,
            expires_at=as_utc(row.expires_at),
            created_at=as_utc(row.created_at),
            created_by=row.created_by,
            any_digest=bool(row.any_digest),
            digests=tuple(sorted(json.loads(row.digests or "{}").items())),
            approved_at=as_utc(row.approved_at) if row.approved_at else None,
            approved_by=row.approved_by,
            revoked_at=as_utc(row.revoked_at) if row.revoked_at else None,
            revoked_by=row.revoked_by,
            revoke_reason=row.revoke_reason,
        )

    def get_exception(self, exception_id: str) -> PolicyException:
        with self._begin("read an exception") as connection:
            row = connection.execute(
                sa.select(policy_exceptions).where(
                    policy_exceptions.c.exception_id == exception_id
                )
            ).first()
        if row is None:
            raise NotFoundError(f"exception {exception_id} not found")
        return self._exception_from_row(row)

    def list_exceptions(self) -> list[PolicyException]:
        """Every exception, oldest first (expired and revoked included)."""
        with self._begin("list exceptions") as connection:
            rows = connection.execute(
                sa.select(policy_exceptions)
                .where(policy_exceptions.c.exception_id.is_not(None))
                .order_by(policy_exceptions.c.seq)
            ).all()
        return [self._exception_from_row(r) for r in rows]


def check_actor(actor: str) -> str:
    if not actor or len(actor) > 256:
        raise InvalidInputError("the caller's subject is missing or too long", field="actor")
    return actor


__all__ += ["check_actor"]
