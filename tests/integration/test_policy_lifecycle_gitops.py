"""GitOps: a watched directory or bundle goes through the same checks before it becomes active."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.audit import create_database_engine
from gatekeeper.domain.policy_lifecycle import RevisionRecord
from gatekeeper.policy.bundle import PolicyFiles, build_opa_bundle
from gatekeeper.policy.candidates import load_candidate_path
from gatekeeper.policy.factory import PolicyStatePaths
from gatekeeper.policy.revision import DirectoryRevision
from gatekeeper.usecases.policy_lifecycle import PolicyLifecycle
from gatekeeper.wiring import create_policy_lifecycle
from tests.integration.test_policy_lifecycle_api import (
    FAILING_TEST_NAME,
    TEAMS_POLICY,
    TEAMS_TESTS,
    shipped,
    with_teams_policy,
    without_ghcr_in_staging,
    write_candidate,
)


def synced(lifecycle: PolicyLifecycle, path: Path) -> RevisionRecord:
    """What ``sync_from_path`` submitted (the test fails when it found nothing new)."""
    record = lifecycle.sync_from_path(path)
    assert record is not None, f"nothing new to sync from {path}"
    return record

def make_lifecycle(tmp_path: Path, opa_binary: str) -> PolicyLifecycle:
    # active/ and exceptions/ under tmp_path; no OPA to wait for
    engine = create_database_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    return create_policy_lifecycle(
        database=engine, opa_binary=opa_binary, state=PolicyStatePaths(tmp_path)
    )


def test_watched_directory_is_checked_then_activated(tmp_path: Path, opa_binary: str) -> None:
    lifecycle = make_lifecycle(tmp_path, opa_binary)
    lifecycle.start(bootstrap=shipped())
    original = shipped().revision_id
    assert DirectoryRevision(tmp_path / "active").current() == original
    assert (tmp_path / "exceptions/data.json").read_text() == '{"gatekeeper":{"exceptions":[]}}'

    watched = tmp_path / "configmap"
    write_candidate(watched, shipped())
    # the same content as the active revision: nothing to activate
    assert synced(lifecycle, watched).revision_id == original
    assert lifecycle.sync_from_path(watched) is None  # unchanged since the last look

    # a change whose shipped test fails is refused; the active revision stays
    broken = with_teams_policy(shipped())
    broken.write_policies(watched / "policies")
    broken.write_tests(watched / "tests")
    refused = synced(lifecycle, watched)
    assert refused.status == "refused"
    assert refused.report.failed_tests == (FAILING_TEST_NAME,)
    assert lifecycle.store.active_revision_id() == original
    assert DirectoryRevision(tmp_path / "active").current() == original

    # the fix goes through and becomes active, recorded as done by GitOps
    (watched / "tests/teams_test.rego").unlink()
    (watched / "policies/teams.rego").unlink()
    tightened = without_ghcr_in_staging(shipped())
    tightened.write_policies(watched / "policies")
    record = synced(lifecycle, watched)
    assert record.revision_id == tightened.revision_id
    assert lifecycle.store.active_revision_id() == tightened.revision_id
    assert DirectoryRevision(tmp_path / "active").current() == tightened.revision_id
    event = lifecycle.store.events(limit=1)[0]
    assert (event.action, event.actor, event.from_revision, event.to_revision) == (
        "activate", f"gitops:{watched}", original, tightened.revision_id
    )


def test_watched_bundle_file(tmp_path: Path, opa_binary: str) -> None:
    """An OPA bundle carries no tests, so a GitOps bundle is refused: tests are required."""
    lifecycle = make_lifecycle(tmp_path, opa_binary)
    lifecycle.start(bootstrap=shipped())
    bundle = tmp_path / "bundle.tar.gz"
    bundle.write_bytes(build_opa_bundle(without_ghcr_in_staging(shipped())))
    record = synced(lifecycle, bundle)
    assert record.status == "refused"
    assert record.report.summary() == "[test] candidate ships no opa tests (add tests/*_test.rego)"
    assert lifecycle.store.active_revision_id() == shipped().revision_id


def test_replicas_follow_the_store(tmp_path: Path, opa_binary: str) -> None:
    """A second replica (own active dir, same database) picks up an activation on sync."""
    first = make_lifecycle(tmp_path, opa_binary)
    first.start(bootstrap=shipped())
    second_dir = tmp_path / "replica2"
    second_dir.mkdir()
    second = create_policy_lifecycle(
        database=create_database_engine(f"sqlite:///{tmp_path / 'audit.db'}"),
        opa_binary=opa_binary, state=PolicyStatePaths(second_dir),
    )
    second.start(bootstrap=shipped())
    tightened = without_ghcr_in_staging(shipped())
    record, _ = first.submit(tightened, actor="alice")
    first.activate(record.revision_id, actor="alice")
    assert DirectoryRevision(second_dir / "active").current() == shipped().revision_id
    assert second.sync() is True
    assert DirectoryRevision(second_dir / "active").current() == tightened.revision_id
    assert second.sync() is False
    assert isinstance(PolicyFiles.from_directory(second_dir / "active"), PolicyFiles)


def test_restart_with_other_shipped_policies_keeps_the_active_revision(tmp_path: Path, opa_binary: str, caplog: pytest.LogCaptureFixture) -> None:
    make_lifecycle(tmp_path, opa_binary).start(bootstrap=shipped())
    tightened = without_ghcr_in_staging(shipped())
    restarted = make_lifecycle(tmp_path, opa_binary)
    restarted.start(bootstrap=tightened)
    assert restarted.store.active_revision_id() == shipped().revision_id
    stored = restarted.store.get_revision(tightened.revision_id)
    assert (stored.status, stored.source, stored.created_by) == (
        "accepted", "bootstrap", "system:bootstrap"
    )
    assert (
        f"the shipped policies ({tightened.revision_id}, accepted) are not the active revision "
        f"{shipped().revision_id}; to use them: "
        f"POST /v1/policies/revisions/{tightened.revision_id}/activate"
    ) in caplog.text
    broken = make_lifecycle(tmp_path, opa_binary)
    broken.start(bootstrap=PolicyFiles(
        {**shipped().policies, "bad.rego": b"package gatekeeper.rules.bad\n\nx := \n"},
        dict(shipped().tests),
    ))  # a broken image does not stop a gatekeeper that has an active revision
    assert broken.store.active_revision_id() == shipped().revision_id


def test_first_start_with_broken_shipped_policies_fails(tmp_path: Path, opa_binary: str) -> None:
    import pytest

    from gatekeeper.errors import ConfigurationError

    files = shipped()
    policies = {name: content for name, content in files.policies.items()
                if name in ("main.rego", "data.json")}
    with pytest.raises(ConfigurationError) as caught:
        make_lifecycle(tmp_path, opa_binary).start(bootstrap=PolicyFiles(policies, {}))
    assert caught.value.message == (
        "the shipped policies fail their checks: "
        "[structure] no rule package: define package gatekeeper.rules.<name>"
    )


def test_a_restart_never_undoes_an_activation_made_through_the_api(tmp_path: Path, opa_binary: str) -> None:
    watched = write_candidate(tmp_path / "configmap", shipped())
    first = make_lifecycle(tmp_path, opa_binary)
    first.start(bootstrap=shipped())
    assert synced(first, watched).revision_id == shipped().revision_id
    tightened = without_ghcr_in_staging(shipped())
    record, _ = first.submit(tightened, actor="alice")
    first.activate(record.revision_id, actor="alice")

    restarted = make_lifecycle(tmp_path, opa_binary)
    restarted.start(bootstrap=shipped())
    restarted.sync_from_path(watched)  # first look: content the store already knows
    assert restarted.store.active_revision_id() == tightened.revision_id
    # a real change of the watched content is activated again
    (watched / "policies/main.rego").write_bytes(shipped().policies["main.rego"] + b"\n# v2\n")
    record = synced(restarted, watched)
    assert record.status == "accepted", record.report.summary()
    assert restarted.store.active_revision_id() == record.revision_id != tightened.revision_id


def test_flat_configmap_directory_with_test_files(tmp_path: Path, opa_binary: str) -> None:
    """A mounted ConfigMap: flat files behind Kubernetes' hidden ..data symlinks; the
    ``*_test.rego`` files are the candidate's tests."""
    lifecycle = make_lifecycle(tmp_path, opa_binary)
    lifecycle.start(bootstrap=shipped())
    passing_tests = TEAMS_TESTS[: TEAMS_TESTS.index("test_message_names_the_field")].rstrip()
    flat = {
        **shipped().policies,
        "teams.rego": TEAMS_POLICY.encode(),
        "teams_test.rego": passing_tests.encode() + b"\n",
    }
    data = tmp_path / "configmap/..2026_11_24_12_00_00.000000001"
    data.mkdir(parents=True)
    for name, content in flat.items():
        (data / name).write_bytes(content)
    (tmp_path / "configmap/..data").symlink_to(data.name)
    for name in flat:
        (tmp_path / "configmap" / name).symlink_to(f"..data/{name}")

    candidate = load_candidate_path(tmp_path / "configmap")
    assert sorted(candidate.tests) == ["teams_test.rego"]
    assert "teams.rego" in candidate.policies and "teams_test.rego" not in candidate.policies
    record = synced(lifecycle, tmp_path / "configmap")
    assert record.status == "accepted", record.report.summary()
    assert (record.report.tests_run, record.report.tests_passed) == (2, 2)
    assert lifecycle.store.active_revision_id() == candidate.revision_id
