"""The policy event chain: append-only, hash-chained activations, rollbacks and exception changes,
and the active revision derived from it.

The active revision is not a mutable pointer: it is replayed from ``gatekeeper_policy_events``
(who, when, from which revision to which), so the record of an activation and the activation
itself are one row and cannot disagree. Each event names the previous one (``prev_seq``,
unique): two replicas appending at once cannot both append after the same event; the loser
retries on the new head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError as UniqueViolation
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.domain.policy_exceptions import as_utc, format_instant
from gatekeeper.domain.policy_lifecycle import ACTIVATE, ROLLBACK, PolicyConflictError, PolicyEvent
from gatekeeper.errors import GatekeeperError, IntegrityError, StorageError
from gatekeeper.policy.store_schema import events

__all__ = ["PolicyEventChain", "UniqueViolation", "dumps"]

_GENESIS_HASH = "sha256:" + "0" * 64


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


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class PolicyEventChain:
    """The event chain on one SQLAlchemy Engine; the revision and exception stores build on it."""

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
                detail=dumps(detail), prev_hash=prev_hash, entry_hash=entry_hash,
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
