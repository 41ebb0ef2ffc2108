"""The policy lifecycle and exceptions use cases over their ports: the real SQL store on SQLite,
fakes (implementing the ports of gatekeeper.domain.ports.policy) for the opa-backed checker,
the replayer and the replica, so what the use cases themselves decide is visible."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.audit import create_database_engine
from gatekeeper.domain.policy_lifecycle import (
    CheckProblem,
    CheckReport,
    OpaTestRun,
    PolicyCandidate,
    PolicyConflictError,
    StoredDecision,
)
from gatekeeper.domain.ports.policy import (
    BundleBuilder,
    CandidateChecker,
    DecisionReplayer,
    PolicyReplica,
    ReplayOutcome,
)
from gatekeeper.errors import InvalidInputError, UpstreamUnavailableError
from gatekeeper.policy.bundle import PolicyFiles
from gatekeeper.policy.candidates import FileCandidateLoader
from gatekeeper.policy.store import SqlPolicyStore
from gatekeeper.usecases import PolicyLifecycle

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PASSED = CheckReport(True, (), (), 1, 1, "fake")


def candidate(marker: str, tests: dict[str, str] | None = None) -> PolicyFiles:
    return PolicyFiles.from_text(
        {"main.rego": f"package gatekeeper.rules.main\n\n# {marker}\n"}, tests
    )


class FakeChecker:
    """Refuses a candidate whose tests contain ``FAIL``; records what it was asked."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    def check(self, files: PolicyCandidate, *, require_tests: bool = True) -> CheckReport:
        self.checked.append(files.revision_id)
        if any(b"FAIL" in content for content in files.tests.values()):
            return CheckReport(
                False, (CheckProblem("test", "test data.t.test_a failed"),), ("data.t.test_a",),
                1, 0, "fake",
            )
        return PASSED

    def run_tests(self, roots: list[Path], *, cwd: Path) -> OpaTestRun:
        raise AssertionError("not used here")


class RecordingReplica:
    def __init__(self) -> None:
        self.published: list[tuple[str | None, list[dict[str, Any]]]] = []
        self.closed = False

    def publish(
        self, revision: PolicyCandidate | None, exceptions: list[dict[str, Any]], *, wait: bool
    ) -> None:
        self.published.append((revision.revision_id if revision else None, exceptions))

    def close(self) -> None:
        self.closed = True


class UnusedReplayer:
    def replay(
        self, files: PolicyCandidate, *, since: datetime, until: datetime,
        exceptions: list[dict[str, Any]], running: Sequence[StoredDecision] | None = None,
    ) -> ReplayOutcome:
        raise AssertionError("not used here")


class NamingBundles:
    def build(self, files: PolicyCandidate) -> bytes:
        return files.revision_id.encode()


# The fakes are checked by mypy against the ports they stand in for.
_checker: CandidateChecker = FakeChecker()
_replica: PolicyReplica = RecordingReplica()
_replayer: DecisionReplayer = UnusedReplayer()
_bundles: BundleBuilder = NamingBundles()


class Gate:
    def __init__(self, lifecycle: PolicyLifecycle, checker: FakeChecker,
                 replica: RecordingReplica, resolved: dict[str, str]) -> None:
        self.lifecycle = lifecycle
        self.checker = checker
        self.replica = replica
        self.resolved = resolved


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'policy.db'}")
    checker, replica = FakeChecker(), RecordingReplica()
    resolved: dict[str, str] = {}

    def resolve(tag: str) -> str:
        if tag not in resolved:
            raise UpstreamUnavailableError(f"registry timed out resolving {tag}")
        return resolved[tag]

    lifecycle = PolicyLifecycle(
        store=SqlPolicyStore(engine, clock=lambda: NOW), checker=checker,
        candidates=FileCandidateLoader(), bundles=NamingBundles(), replayer=UnusedReplayer(),
        replica=replica, clock=lambda: NOW, tag_resolver=resolve,
    )
    lifecycle.start(bootstrap=candidate("shipped", {"main_test.rego": "package t\n"}))
    yield Gate(lifecycle, checker, replica, resolved)
    lifecycle.stop()
    engine.dispose()


def exception_body(image: str) -> dict[str, Any]:
    return {
        "images": [image], "policies": ["registries"], "environment": "production",
        "reason": "vendor fix pending",
        "ticket_id": "CHG-1", "expires_at": (NOW + timedelta(days=7)).isoformat(),
    }


def test_start_activates_the_shipped_policies_and_hands_them_to_the_replica(gate: Gate) -> None:
    shipped = candidate("shipped", {"main_test.rego": "package t\n"}).revision_id
    assert gate.lifecycle.active_revision_id() == shipped
    assert gate.replica.published == [(shipped, [])]
    assert gate.lifecycle.history()["events"][0]["actor"] == "system:bootstrap"
    assert gate.lifecycle.active_bundle() is not None
    assert gate.lifecycle.bundle(shipped).content == shipped.encode()


def test_same_policies_with_failing_tests_are_refused_but_not_stored(gate: Gate) -> None:
    shipped = candidate("shipped", {"main_test.rego": "package t\n"})
    other_tests = candidate("shipped", {"main_test.rego": "package t\n# FAIL\n"})
    record, created = gate.lifecycle.submit(other_tests, actor="alice")
    assert (record.status, created) == ("refused", False)
    assert record.report.failed_tests == ("data.t.test_a",)
    assert gate.lifecycle.revision(shipped.revision_id).status == "accepted"


def test_sync_hands_changes_to_the_replica_only_when_the_chain_moved(gate: Gate) -> None:
    assert gate.lifecycle.sync() is False
    record, _ = gate.lifecycle.submit(candidate("tightened", {"t.rego": "package t\n"}),
                                      actor="alice")
    gate.lifecycle.activate(record.revision_id, actor="alice")
    assert gate.replica.published[-1] == (record.revision_id, [])
    assert gate.lifecycle.sync() is False
    with pytest.raises(PolicyConflictError) as caught:
        gate.lifecycle.activate(record.revision_id, actor="alice")
    assert caught.value.message == f"revision {record.revision_id} is already active"


def test_exception_changes_reach_the_replica(gate: Gate) -> None:
    exceptions = gate.lifecycle.exceptions
    created = exceptions.create(exception_body("sha256:" + "ab" * 32), actor="alice")
    assert gate.replica.published[-1][1][0]["id"] == created.exception_id
    assert [item["status"] for item in exceptions.documents()] == ["pending"]
    assert exceptions.documents("active") == []
    approved = exceptions.approve(created.exception_id, actor="carol")
    assert approved.as_dict(NOW)["status"] == "active"
    revoked = exceptions.revoke(created.exception_id, actor="bob", reason="fixed")
    assert revoked.as_dict(NOW)["status"] == "revoked"
    export = exceptions.export()
    assert [e["action"] for e in export["events"]] == [
        "exception.create", "exception.approve", "exception.revoke"
    ]
    assert export["exported_at"] == "2026-11-24T12:00:00Z"


def test_the_creator_cannot_approve_even_when_spelled_differently(gate: Gate) -> None:
    exceptions = gate.lifecycle.exceptions
    created = exceptions.create(exception_body("sha256:" + "ab" * 32), actor="alice")
    with pytest.raises(PolicyConflictError) as caught:
        exceptions.approve(created.exception_id, actor="ＡＬＩＣＥ\u200b")
    assert caught.value.message == (
        f"exception {created.exception_id} was created by 'alice': a second person must "
        "approve it (subjects are compared after Unicode NFKC, case folding and removal of "
        "invisible characters)"
    )
    assert exceptions.get(created.exception_id).approved_at is None


def test_a_tag_is_pinned_to_the_digest_resolved_at_approval(gate: Gate) -> None:
    exceptions = gate.lifecycle.exceptions
    tag = "registry.example.com/payments/api:1.4"
    created = exceptions.create(exception_body(tag), actor="alice")
    with pytest.raises(PolicyConflictError) as caught:
        exceptions.approve(created.exception_id, actor="carol")
    assert caught.value.message == (
        f"exception {created.exception_id}: cannot resolve {tag} to a digest: "
        f"registry timed out resolving {tag}"
    )
    gate.resolved[tag] = "sha256:" + "cd" * 32
    approved = exceptions.approve(created.exception_id, actor="carol")
    assert approved.digests == ((tag, "sha256:" + "cd" * 32),)


def test_a_bad_exception_body_names_the_field(gate: Gate) -> None:
    body = exception_body("sha256:" + "ab" * 32)
    body["expires_at"] = "tomorrow"
    with pytest.raises(InvalidInputError) as caught:
        gate.lifecycle.exceptions.create(body, actor="alice")
    assert caught.value.field == "expires_at"
    assert gate.lifecycle.exceptions.documents() == []
