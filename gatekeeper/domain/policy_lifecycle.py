"""Values of the policy lifecycle: candidates, check reports, stored revisions, lifecycle events.

Pure values (no I/O). :mod:`gatekeeper.policy` produces them (the real ``opa`` checks a
candidate, the SQL store keeps revisions and the hash-chained event log);
:mod:`gatekeeper.usecases.policy_lifecycle` moves them between the ports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from gatekeeper.domain.decision import EnforcementMode, Verdict, Violation
from gatekeeper.domain.policy_exceptions import format_instant
from gatekeeper.errors import ConflictError, InvalidInputError

__all__ = [
    "ACTIVATE",
    "EXCEPTION_APPROVE",
    "EXCEPTION_CREATE",
    "EXCEPTION_REVOKE",
    "ROLLBACK",
    "CheckProblem",
    "CheckReport",
    "OpaTestOutcome",
    "OpaTestRun",
    "PolicyCandidate",
    "PolicyConflictError",
    "PolicyEvent",
    "RevisionRecord",
    "StoredDecision",
    "check_actor",
]

#: Actions of the policy event chain.
ACTIVATE, ROLLBACK = "activate", "rollback"
EXCEPTION_CREATE, EXCEPTION_REVOKE = "exception.create", "exception.revoke"
EXCEPTION_APPROVE = "exception.approve"


class PolicyCandidate(Protocol):
    """A policy set (``PolicyFiles``): the policies OPA serves and the tests ``opa test`` runs."""

    @property
    def policies(self) -> Mapping[str, bytes]: ...

    @property
    def tests(self) -> Mapping[str, bytes]: ...

    @property
    def uploaded_signatures(self) -> bytes | None:
        """The ``.signatures.json`` an uploaded bundle came with, kept as it came."""
        ...

    @property
    def revision_id(self) -> str:
        """``sha256:...`` over the policy files: the id the engine records with decisions."""
        ...

    def as_text(self) -> dict[str, dict[str, str]]: ...

    def file_listing(self) -> dict[str, list[dict[str, Any]]]: ...


@dataclass(frozen=True, slots=True)
class CheckProblem:
    """One reason a candidate is refused.

    ``check`` is ``structure``, ``check``, ``fmt`` or ``test``.
    """

    check: str
    message: str
    file: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "file": self.file, "line": self.line, "message": self.message}

    def render(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else (
            f"{self.file}: " if self.file else ""
        )
        return f"[{self.check}] {where}{self.message}"


@dataclass(frozen=True, slots=True)
class CheckReport:
    """The verdict of the candidate checks, as stored with the revision."""

    passed: bool
    problems: tuple[CheckProblem, ...]
    failed_tests: tuple[str, ...]
    tests_run: int
    tests_passed: int
    opa_version: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "problems": [p.as_dict() for p in self.problems],
            "failed_tests": list(self.failed_tests),
            "tests_run": self.tests_run,
            "tests_passed": self.tests_passed,
            "opa_version": self.opa_version,
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> CheckReport:
        return cls(
            passed=bool(document["passed"]),
            problems=tuple(
                CheckProblem(p["check"], p["message"], p.get("file"), p.get("line"))
                for p in document.get("problems", [])
            ),
            failed_tests=tuple(document.get("failed_tests", [])),
            tests_run=int(document.get("tests_run", 0)),
            tests_passed=int(document.get("tests_passed", 0)),
            opa_version=str(document.get("opa_version", "")),
        )

    def summary(self) -> str:
        """One line for messages: why it was refused, failing tests first."""
        if self.passed:
            return f"all checks passed ({self.tests_passed}/{self.tests_run} tests)"
        parts: list[str] = []
        if self.failed_tests:
            noun = "test" if len(self.failed_tests) == 1 else "tests"
            parts.append(f"{len(self.failed_tests)} failing {noun}: {', '.join(self.failed_tests)}")
        others = [p for p in self.problems if p.check != "test" or not self.failed_tests]
        parts.extend(p.render() for p in others[:5])
        if len(others) > 5:
            parts.append(f"and {len(others) - 5} more problems")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class OpaTestOutcome:
    """One ``opa test`` result; ``file`` as opa names it (relative to the roots given)."""

    package: str
    name: str
    passed: bool
    message: str | None = None
    file: str | None = None
    line: int | None = None

    @property
    def qualified_name(self) -> str:
        return f"{self.package}.{self.name}"


@dataclass(frozen=True, slots=True)
class OpaTestRun:
    """``opa test`` over directories in place: outcomes in source order, coverage in percent."""

    outcomes: tuple[OpaTestOutcome, ...]
    coverage: float
    succeeded: bool
    #: parse or compile errors: opa failed although no test failed (none may have run)
    problems: tuple[CheckProblem, ...] = ()

    @property
    def failed(self) -> tuple[OpaTestOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.passed)


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
    files: PolicyCandidate
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


@dataclass(frozen=True, slots=True)
class StoredDecision:
    """What the replay needs of one recorded decision."""

    decision_id: str
    created_at: datetime
    verdict: Verdict
    mode: EnforcementMode
    environment: str | None
    namespace: str | None
    ticket_id: str | None
    policy_revision: str | None
    violations: tuple[Violation, ...]
    warnings: tuple[Violation, ...]
    policy_input: dict[str, Any] | None
    #: The evidence documents ``policy_input`` references by hash (sha256 -> document).
    evidence: Mapping[str, Any] = field(default_factory=dict)


def check_actor(actor: str) -> str:
    """The recorded actor of a change: present, and at most 256 characters."""
    if not actor or len(actor) > 256:
        raise InvalidInputError("the caller's subject is missing or too long", field="actor")
    return actor
