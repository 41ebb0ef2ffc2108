"""Exceptions in SQL: created pending, approved by another person, revoked; each on the chain."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gatekeeper.domain.policy_exceptions import (
    ExceptionRequest,
    PolicyException,
    as_utc,
    format_instant,
)
from gatekeeper.domain.policy_lifecycle import (
    EXCEPTION_APPROVE,
    EXCEPTION_CREATE,
    EXCEPTION_REVOKE,
    PolicyConflictError,
    PolicyEvent,
)
from gatekeeper.errors import NotFoundError
from gatekeeper.policy.activation_chain import PolicyEventChain, dumps
from gatekeeper.policy.store_schema import policy_exceptions

__all__ = ["SqlExceptionStore"]


class SqlExceptionStore(PolicyEventChain):
    """Exceptions, each create, approve and revoke appended to the event chain."""

    def create_exception(self, request: ExceptionRequest, *, actor: str) -> PolicyException:
        """Store a *pending* exception: it waives nothing until :meth:`approve_exception`."""
        now = self._now()
        created: list[PolicyException] = []

        def step(connection: Connection) -> PolicyEvent:
            created.clear()
            seq = connection.execute(
                policy_exceptions.insert()
                .values(
                    images=dumps(list(request.images)),
                    policies=dumps(list(request.policies)),
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
                .values(approved_at=now, approved_by=actor, digests=dumps(pinned))
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
