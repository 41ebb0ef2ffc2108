"""Policy revisions in SQL: checked candidates kept by revision id; activating an accepted one."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gatekeeper.domain.policy_exceptions import as_utc, format_instant
from gatekeeper.domain.policy_lifecycle import (
    ACTIVATE,
    CheckReport,
    PolicyCandidate,
    PolicyConflictError,
    PolicyEvent,
    RevisionRecord,
)
from gatekeeper.errors import NotFoundError, StorageError
from gatekeeper.policy.activation_chain import PolicyEventChain, UniqueViolation, dumps
from gatekeeper.policy.bundle import PolicyFiles
from gatekeeper.policy.store_schema import revisions

__all__ = ["SqlRevisionStore"]


class SqlRevisionStore(PolicyEventChain):
    """Revisions (accepted and refused alike) and their activation, on the event chain."""

    def save_revision(
        self, files: PolicyCandidate, report: CheckReport, *, actor: str, source: str,
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
            "policies": dumps(files.as_text()["policies"]),
            "tests": dumps(files.as_text()["tests"]),
            "check_report": dumps(report.as_dict()),
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
