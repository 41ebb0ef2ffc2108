"""Ports of the policy lifecycle: revisions, the activation chain, exceptions, candidate checks,
candidate loading, bundles, replays, and the replica's engine.

Adapters: :class:`~gatekeeper.policy.store.SqlPolicyStore` (the three stores on one engine),
:class:`~gatekeeper.policy.checks.OpaCandidateChecker`,
:class:`~gatekeeper.policy.candidates.FileCandidateLoader`,
:class:`~gatekeeper.policy.bundle.OpaBundleBuilder`,
:class:`~gatekeeper.policy.replay.OpaDecisionReplayer` and
:class:`~gatekeeper.policy.replica.OpaReplica`; ``wiring`` plugs them into the use cases of
:mod:`gatekeeper.usecases.policy_lifecycle` and :mod:`gatekeeper.usecases.exceptions`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from gatekeeper.domain.policy_exceptions import ExceptionRequest, PolicyException
from gatekeeper.domain.policy_lifecycle import (
    CheckReport,
    OpaTestRun,
    PolicyCandidate,
    PolicyEvent,
    RevisionRecord,
    StoredDecision,
)

__all__ = [
    "BundleBuilder",
    "CandidateChecker",
    "CandidateLoader",
    "DecisionReplayer",
    "PolicyActivationChain",
    "PolicyCandidate",
    "PolicyExceptionStore",
    "PolicyReplica",
    "PolicyRevisionStore",
    "PolicyStore",
    "ReplayOutcome",
    "TagResolver",
]

#: ``registry/repository:tag`` -> ``sha256:...`` (the registry), for exception approvals.
TagResolver = Callable[[str], str]


class PolicyRevisionStore(Protocol):
    """Checked candidates, kept by revision id (accepted and refused alike)."""

    def save_revision(
        self, files: PolicyCandidate, report: CheckReport, *, actor: str, source: str,
        description: str | None = None,
    ) -> tuple[RevisionRecord, bool]:
        """Store a checked candidate; ``(record, created)``. Same content -> the stored one."""
        ...

    def get_revision(self, revision_id: str) -> RevisionRecord:
        """Raise :class:`~gatekeeper.errors.NotFoundError` for an unknown revision."""
        ...

    def list_revisions(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first, without contents."""
        ...


class PolicyActivationChain(Protocol):
    """The append-only, hash-chained log of activations, rollbacks and exception changes; the
    active revision is derived from it."""

    def active_revision_id(self) -> str | None: ...

    def head(self) -> int:
        """Sequence number of the newest event (0: none); replicas poll it to see changes."""
        ...

    def activate(self, revision_id: str, *, actor: str, reason: str | None = None) -> PolicyEvent:
        """Raise :class:`~gatekeeper.domain.policy_lifecycle.PolicyConflictError` for a refused
        or already active revision."""
        ...

    def rollback(self, *, actor: str, reason: str | None = None) -> PolicyEvent:
        """Return to the revision active before the current one (409 when there is none)."""
        ...

    def events(self, *, limit: int = 100, actions: tuple[str, ...] = ()) -> list[PolicyEvent]:
        """Newest first."""
        ...

    def verify_chain(self) -> int:
        """Recompute every event hash; return the count, raise
        :class:`~gatekeeper.errors.IntegrityError` at the first break."""
        ...


class PolicyExceptionStore(Protocol):
    """Exceptions (waivers), each change recorded on the activation chain."""

    def create_exception(self, request: ExceptionRequest, *, actor: str) -> PolicyException:
        """Store a *pending* exception."""
        ...

    def approve_exception(
        self, exception_id: str, *, actor: str, digests: dict[str, str],
        same_person: Callable[[str, str], bool],
    ) -> PolicyException:
        """Approve a pending exception, pinning its tags to ``digests``; refused (409) when it is
        not pending, when ``same_person(creator, actor)`` holds, or a tag has no digest."""
        ...

    def revoke_exception(
        self, exception_id: str, *, actor: str, reason: str | None = None
    ) -> PolicyException: ...

    def get_exception(self, exception_id: str) -> PolicyException: ...

    def list_exceptions(self) -> list[PolicyException]:
        """Every exception, oldest first (expired and revoked included)."""
        ...


class PolicyStore(PolicyRevisionStore, PolicyActivationChain, PolicyExceptionStore, Protocol):
    """The three stores of the lifecycle on one database, with their migrations."""

    def migrate(self) -> list[int]:
        """Apply the migrations not yet applied, in order; return the versions applied."""
        ...


class CandidateChecker(Protocol):
    """The activation checks (compile, format, the shipped tests) of a candidate."""

    def check(self, files: PolicyCandidate, *, require_tests: bool = True) -> CheckReport:
        """Never raises for a bad candidate: that is a refused report."""
        ...

    def run_tests(self, roots: list[Path], *, cwd: Path) -> OpaTestRun:
        """The policy tests over directories where they are (the authoring loop), with
        coverage; raise :class:`~gatekeeper.errors.InvalidInputError` when they cannot run."""
        ...


class CandidateLoader(Protocol):
    """Candidates from where they come: disk, an uploaded tarball or bundle, a JSON map."""

    def load_path(self, path: Path, *, tests_dir: Path | None = None) -> PolicyCandidate:
        """``path`` holding the policies when ``tests_dir`` is an existing directory (the
        tests); else a ``.tar.gz``, a directory with ``policies/`` (and ``tests/`` or
        ``rego-tests/``), or a flat directory (``*_test.rego`` files are the tests)."""
        ...

    def from_directory(self, policy_dir: Path, tests_dir: Path | None = None) -> PolicyCandidate:
        ...

    def from_tarball(self, data: bytes) -> PolicyCandidate: ...

    def from_text(
        self, policies: Mapping[str, str], tests: Mapping[str, str] | None = None
    ) -> PolicyCandidate: ...

    def stamp(self, files: PolicyCandidate) -> str:
        """Changes when the revision or its tests change (GitOps re-checks only then)."""
        ...


class BundleBuilder(Protocol):
    """The revision as the bundle an OPA sidecar loads (signed when a key is configured)."""

    def build(self, files: PolicyCandidate) -> bytes: ...


class ReplayOutcome(Protocol):
    """What replaying recorded decisions against a candidate changes."""

    @property
    def summary(self) -> str: ...

    @property
    def newly_denied(self) -> int: ...

    def as_dict(self) -> dict[str, Any]: ...


class DecisionReplayer(Protocol):
    """Re-evaluates the decisions recorded in ``[since, until)`` against a candidate."""

    def replay(
        self, files: PolicyCandidate, *, since: datetime, until: datetime,
        exceptions: list[dict[str, Any]], running: Sequence[StoredDecision] | None = None,
    ) -> ReplayOutcome:
        """``running``: the latest input of each running workload (the "running now" part)."""
        ...


class PolicyReplica(Protocol):
    """Where this replica's policy engine gets the active revision and the exceptions."""

    def publish(
        self, revision: PolicyCandidate | None, exceptions: list[dict[str, Any]], *, wait: bool
    ) -> None:
        """Hand the engine ``revision`` (None: keep what it serves) and ``exceptions``
        (``data.gatekeeper.exceptions``); with ``wait``, return once it serves both, or raise
        :class:`~gatekeeper.errors.PolicyEngineError`."""
        ...

    def close(self) -> None: ...
