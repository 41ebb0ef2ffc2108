"""The policy lifecycle through the REST API: real opa (checks, embedded engine, replay), SQLite.

The app is assembled the way the integration proposal wires it (see ``lifecycle_app``):
create_app + the policy router, the embedded OPA serving the *active* directory materialised
from the store plus the exceptions directory, and one controllable clock for the service
(``input.evaluated_at``), the store and the lifecycle, so expiry instants are exact.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gatekeeper.api.auth import Authenticator, install_auth
from gatekeeper.app import create_app
from gatekeeper.domain.ports import Clock
from gatekeeper.policy import EmbeddedOpa
from gatekeeper.policy.bundle import PolicyFiles
from gatekeeper.policy.factory import PolicyStatePaths
from gatekeeper.service import EvaluationService
from gatekeeper.usecases.policy_lifecycle import PolicyLifecycle
from gatekeeper.wiring import build_container, create_policy_lifecycle
from tests.helpers.app import evaluated
from tests.helpers.tokens import bearer_headers
from tests.helpers.types import MakeSettings

REPO = Path(__file__).resolve().parents[2]
SECRET = "policy-lifecycle-test-secret-0123456789abcdef"
DIGEST = "sha256:" + "cd" * 32
T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
TEAMS_POLICY = """# kube-system belongs to the platform team.
package gatekeeper.rules.teams

deny contains "namespace kube-system is reserved" if input.namespace == "kube-system"
"""
TEAMS_TESTS = """package gatekeeper.rules.teams_test

import data.gatekeeper.rules.teams

test_kube_system_is_reserved if {
\tteams.deny == {"namespace kube-system is reserved"} with input as {"namespace": "kube-system"}
}

test_other_namespaces_pass if {
\tcount(teams.deny) == 0 with input as {"namespace": "payments"}
}

test_message_names_the_field if {
\tteams.deny == {"namespace is reserved"} with input as {"namespace": "kube-system"}
}
"""
FAILING_TEST_NAME = "data.gatekeeper.rules.teams_test.test_message_names_the_field"


def with_teams_policy(files: PolicyFiles) -> PolicyFiles:
    """A candidate adding a rule package whose shipped tests include one that fails."""
    return PolicyFiles(
        {**files.policies, "teams.rego": TEAMS_POLICY.encode()},
        {**files.tests, "teams_test.rego": TEAMS_TESTS.encode()},
    )


class SteppingClock(Clock):
    """The service's and the store's clock, moved by the test."""

    def __init__(self, instant: datetime) -> None:
        self.instant = instant

    def now(self) -> datetime:
        return self.instant

    def monotonic(self) -> float:
        return time.monotonic()


def token(subject: str, *roles: str) -> dict[str, str]:
    return bearer_headers(SECRET, *roles, subject=subject, ttl=3600)


ADMIN = token("alice", "policy-admin")
APPROVER = token("carol", "exception-approver")
AUDITOR = token("bob", "auditor")
PIPELINE = token("ci", "pipeline")


#: The core of the shipped policy set: the aggregator with the exception logic and the rule
#: packages every gatekeeper has. Evidence-driven packages (signatures, sbom, vulnerabilities)
#: are left out so these scenarios do not depend on which collectors are wired.
CORE_POLICIES = ("main.rego", "environments.rego", "registries.rego", "digests.rego")
CORE_TESTS = (
    "main_test.rego", "environments_test.rego", "registries_test.rego", "digests_test.rego",
    "exceptions_test.rego",
)


def shipped() -> PolicyFiles:
    """The core shipped policies and their tests, read from the repository."""
    full = PolicyFiles.from_directory(REPO / "policies", REPO / "rego-tests")
    config = json.loads(full.policies["data.json"])["gatekeeper"]["config"]
    environments = {
        name: {key: value[key] for key in ("allowed_registries", "require_digest")}
        for name, value in config["environments"].items()
    }
    policies = {name: full.policies[name] for name in CORE_POLICIES}
    policies["data.json"] = json.dumps(
        {"gatekeeper": {"config": {"environments": environments}}}, indent=2
    ).encode()
    tests = {
        name: content for name, content in full.tests.items()
        if name in CORE_TESTS or name.startswith("golden/")
    }
    return PolicyFiles(policies, tests)


def write_candidate(root: Path, files: PolicyFiles) -> Path:
    """``root/policies`` and ``root/tests``, the layout the CLI and GitOps read."""
    files.write_policies(root / "policies")
    files.write_tests(root / "tests")
    return root


def as_json_body(files: PolicyFiles, description: str | None = None) -> dict[str, object]:
    body: dict[str, object] = dict(files.as_text())
    if description:
        body["description"] = description
    return body


def without_ghcr_in_staging(files: PolicyFiles) -> PolicyFiles:
    """A candidate that removes ghcr.io from staging's allow-list (a realistic tightening)."""
    data = json.loads(files.policies["data.json"])
    staging = data["gatekeeper"]["config"]["environments"]["staging"]
    staging["allowed_registries"] = [r for r in staging["allowed_registries"] if r != "ghcr.io"]
    policies = dict(files.policies)
    policies["data.json"] = json.dumps(data, indent=2).encode()
    return PolicyFiles(policies, dict(files.tests))


@dataclass
class LifecycleApp:
    client: TestClient
    lifecycle: PolicyLifecycle
    clock: SteppingClock
    active_dir: Path

    def evaluate(
        self, images: list[str], environment: str, ticket_id: str | None = None
    ) -> dict[str, Any]:
        return evaluated(
            self.client,
            {"images": images, "environment": environment, "namespace": "payments",
             "ticket": {"ticket_id": ticket_id}},
            headers=PIPELINE,
        )


@contextmanager
def lifecycle_app(tmp_path: Path, make_settings: MakeSettings, opa_binary: str) -> Iterator[LifecycleApp]:
    clock = SteppingClock(T0)
    # (1) before the embedded OPA exists: an active directory to serve, an exceptions document
    state = PolicyStatePaths(tmp_path / "policy-state")
    state.prepare(write_candidate(tmp_path / "shipped", shipped()) / "policies")
    settings = make_settings(policy_dir=state.active)
    container = build_container(settings)
    # (2) the embedded OPA also loads the exceptions directory (EmbeddedOpa(data_paths=...))
    assert container.embedded_opa is not None
    container.embedded_opa.stop()  # the one build_container made, never started
    if container.policy_lifecycle is not None:
        # once wired by build_container: replaced by one on the test's clock, built the same way
        container.policy_lifecycle.stop()
        container.policy_lifecycle = None
    embedded = EmbeddedOpa(
        opa_binary=opa_binary, policy_dir=state.active, metrics=container.metrics,
        timeout=settings.opa_timeout_seconds, data_paths=[state.exceptions],
    )
    container.embedded_opa = embedded
    container.policy_engine = embedded.engine
    # the wired evidence collectors, no registry lookups (no network in these scenarios)
    container.service = EvaluationService(
        policy_engine=embedded.engine, audit_log=container.audit_log,
        collectors=container.collectors, clock=clock,
    )
    # (3) the lifecycle on the audit store's engine, talking to the embedded OPA's socket
    lifecycle = create_policy_lifecycle(
        database=container.audit_log.engine, opa_binary=opa_binary, state=state,
        embedded_socket=embedded.socket_path, clock=clock.now,
    )
    active_dir = state.active
    app = create_app(settings, container=container)
    app.state.policy_lifecycle = lifecycle
    install_auth(app, Authenticator.from_settings(hs256_secret=SECRET))
    with TestClient(app) as client:
        lifecycle.start(bootstrap=shipped())
        lifecycle.sync(force=True)
        try:
            yield LifecycleApp(client, lifecycle, clock, active_dir)
        finally:
            lifecycle.stop()


@pytest.fixture
def gate(tmp_path: Path, make_settings: MakeSettings, opa_binary: str) -> Iterator[LifecycleApp]:
    with lifecycle_app(tmp_path, make_settings, opa_binary) as app:
        yield app


def test_bootstrap_activates_the_shipped_policies(gate: LifecycleApp) -> None:
    revision = shipped().revision_id
    body = gate.client.get("/v1/policies", headers=AUDITOR).json()
    assert body["active_revision"]["revision_id"] == revision
    assert body["active_revision"]["status"] == "accepted"
    assert body["active_revision"]["checks"]["passed"] is True
    assert body["active_revision"]["contents"]["policies"]["main.rego"] == (
        (REPO / "policies/main.rego").read_text()
    )
    assert [(e["action"], e["actor"], e["from_revision"], e["to_revision"]) for e in body["events"]] == [
        ("activate", "system:bootstrap", None, revision)
    ]
    decision = gate.evaluate([f"registry.example.com/payments/api:1.4@{DIGEST}"], "production")
    assert decision["verdict"] == "allow"
    assert decision["policy_revision"] == revision


def test_candidate_with_a_failing_test_is_refused_naming_the_test(gate: LifecycleApp) -> None:
    candidate = with_teams_policy(shipped())
    response = gate.client.post(
        "/v1/policies/revisions", json=as_json_body(candidate), headers=ADMIN
    )
    assert response.status_code == 422
    body = response.json()
    test_name = FAILING_TEST_NAME
    assert body["message"] == f"candidate {candidate.revision_id} refused: 1 failing test: {test_name}"
    assert body["revision"]["status"] == "refused"
    assert body["revision"]["checks"]["failed_tests"] == [test_name]
    assert body["revision"]["checks"]["problems"] == [
        {"check": "test", "file": "tests/teams_test.rego", "line": 13,
         "message": f"test {test_name} failed"}
    ]
    # the refusal is stored, can be read back, and cannot be activated
    stored = gate.client.get(f"/v1/policies/revisions/{candidate.revision_id}", headers=AUDITOR)
    assert stored.json()["status"] == "refused"
    activation = gate.client.post(
        f"/v1/policies/revisions/{candidate.revision_id}/activate", headers=ADMIN
    )
    assert activation.status_code == 409
    assert activation.json() == {
        "error": "conflict",
        "message": f"revision {candidate.revision_id} was refused by its checks and cannot be "
        f"activated: 1 failing test: {test_name}",
    }
    assert gate.client.get("/v1/policies", headers=AUDITOR).json()["active_revision"][
        "revision_id"
    ] == shipped().revision_id


def test_active_policies_with_a_failing_test_are_refused_not_overwritten(gate: LifecycleApp) -> None:
    files = shipped()
    broken_tests = with_teams_policy(files).tests
    response = gate.client.post(
        "/v1/policies/revisions",
        json={"policies": files.as_text()["policies"],
              "tests": {n: c.decode() for n, c in broken_tests.items()}},
        headers=ADMIN,
    )
    assert response.status_code == 422
    assert response.json()["revision"]["checks"]["failed_tests"] == [
        "data.gatekeeper.rules.teams_test.test_kube_system_is_reserved",
        "data.gatekeeper.rules.teams_test.test_other_namespaces_pass",
        "data.gatekeeper.rules.teams_test.test_message_names_the_field",
    ]
    stored = gate.client.get(f"/v1/policies/revisions/{files.revision_id}", headers=AUDITOR)
    assert stored.json()["status"] == "accepted"


def test_candidate_with_compile_and_format_errors_names_file_and_line(gate: LifecycleApp) -> None:
    files = shipped()
    broken = (
        "package gatekeeper.rules.broken\n\nimport data.gatekeeper.config\n\n"
        "deny contains msg if {\n    x := 1\n  msg := \"x\"\n}\n"
    )
    candidate = PolicyFiles({**files.policies, "broken.rego": broken.encode()}, dict(files.tests))
    # as a tarball this time
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for prefix, part in (("policies", candidate.policies), ("tests", candidate.tests)):
            for name, content in part.items():
                info = tarfile.TarInfo(f"{prefix}/{name}")
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    response = gate.client.post(
        "/v1/policies/revisions", content=buffer.getvalue(),
        headers={**ADMIN, "Content-Type": "application/gzip"},
    )
    assert response.status_code == 422
    problems = response.json()["revision"]["checks"]["problems"]
    assert problems == [
        {"check": "check", "file": "policies/broken.rego", "line": 3,
         "message": "import data.gatekeeper.config unused"},
        {"check": "check", "file": "policies/broken.rego", "line": 6,
         "message": "assigned var x unused"},
        {"check": "fmt", "file": "policies/broken.rego", "line": 6,
         "message": "not formatted: run opa fmt -w"},
    ]


def test_replay_activate_rollback_each_step_recorded(gate: LifecycleApp) -> None:
    original = shipped().revision_id
    # recorded traffic: one staging deploy from ghcr.io, one pinned production deploy, one dev
    gate.clock.instant = T0 + timedelta(minutes=1)
    ghcr = gate.evaluate(["ghcr.io/acme/api:1.0"], "staging", "CHG-1")
    gate.clock.instant = T0 + timedelta(minutes=2)
    pinned = gate.evaluate([f"registry.example.com/payments/api:1.4@{DIGEST}"], "production", "CHG-2")
    gate.clock.instant = T0 + timedelta(minutes=3)
    gate.evaluate(["nginx:1.27"], "development", "CHG-3")
    assert (ghcr["verdict"], pinned["verdict"]) == ("allow", "allow")

    candidate = without_ghcr_in_staging(shipped())
    gate.clock.instant = T0 + timedelta(hours=1)
    created = gate.client.post(
        "/v1/policies/revisions", json=as_json_body(candidate, "staging: no ghcr.io"), headers=ADMIN
    )
    assert created.status_code == 201, created.text
    assert created.json()["revision_id"] == candidate.revision_id
    assert created.json()["created_by"] == "alice"
    assert created.json()["active"] is False
    # uploading the same content again answers the stored revision
    again = gate.client.post("/v1/policies/revisions", json=as_json_body(candidate), headers=ADMIN)
    assert again.status_code == 200

    replay = gate.client.post(
        f"/v1/policies/revisions/{candidate.revision_id}/replay",
        params={"since": "2026-11-24T12:00:00Z", "until": "2026-11-24T13:00:00Z"},
        headers=ADMIN,
    )
    assert replay.status_code == 200, replay.text
    report = replay.json()
    assert report["summary"] == "would have denied 1 of 3 deploys, 1 ticket affected"
    assert report["totals"] == {
        "replayed": 3, "skipped_without_input": 0, "would_deny": 1, "previously_denied": 0,
        "newly_denied": 1, "newly_allowed": 0, "changed": 1, "tickets_affected": 1,
    }
    assert report["tickets_affected"] == ["CHG-1"]
    assert report["changes"] == [
        {
            "decision_id": ghcr["decision_id"],
            "created_at": "2026-11-24T12:01:00Z",
            "environment": "staging",
            "namespace": "payments",
            "ticket_id": "CHG-1",
            "old_revision": original,
            "old_verdict": "allow",
            "new_verdict": "deny",
            "violations_added": [
                {"policy": "registries", "image": "ghcr.io/acme/api:1.0",
                 "message": 'registry "ghcr.io" is not allowed in environment "staging"'}
            ],
            "violations_removed": [],
            "warnings_added": [],
            "warnings_removed": [],
        }
    ]
    # a window without traffic replays nothing
    empty = gate.client.post(
        f"/v1/policies/revisions/{candidate.revision_id}/replay",
        params={"since": "2026-11-23T00:00:00Z", "until": "2026-11-24T00:00:00Z"},
        headers=ADMIN,
    ).json()
    assert empty["summary"] == "would have denied 0 of 0 deploys, 0 tickets affected"

    # activate: the embedded OPA serves the candidate; decisions record its revision
    gate.clock.instant = T0 + timedelta(hours=2)
    activated = gate.client.post(
        f"/v1/policies/revisions/{candidate.revision_id}/activate",
        json={"reason": "CHG-77 tighten staging"}, headers=ADMIN,
    )
    assert activated.status_code == 200, activated.text
    event = activated.json()["event"]
    assert (event["action"], event["actor"], event["from_revision"], event["to_revision"]) == (
        "activate", "alice", original, candidate.revision_id
    )
    assert event["occurred_at"] == "2026-11-24T14:00:00Z"
    assert event["detail"] == {"reason": "CHG-77 tighten staging"}
    after = gate.evaluate(["ghcr.io/acme/api:1.0"], "staging", "CHG-4")
    assert after["verdict"] == "deny"
    assert after["policy_revision"] == candidate.revision_id
    assert after["violations"] == [
        {"policy": "registries", "image": "ghcr.io/acme/api:1.0",
         "message": 'registry "ghcr.io" is not allowed in environment "staging"'}
    ]
    again = gate.client.post(
        f"/v1/policies/revisions/{candidate.revision_id}/activate", headers=ADMIN
    )
    assert again.status_code == 409
    assert again.json()["message"] == f"revision {candidate.revision_id} is already active"

    # roll back: the previous revision again
    gate.clock.instant = T0 + timedelta(hours=3)
    rolled = gate.client.post("/v1/policies/rollback", json={"reason": "CI broke"}, headers=ADMIN)
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["active_revision"] == original
    back = gate.evaluate(["ghcr.io/acme/api:1.0"], "staging", "CHG-5")
    assert (back["verdict"], back["policy_revision"]) == ("allow", original)
    nothing = gate.client.post("/v1/policies/rollback", headers=ADMIN)
    assert nothing.status_code == 409
    assert nothing.json()["message"] == "no earlier revision to roll back to"

    # every step is an audit record, hash-chained
    events = gate.client.get("/v1/policies/events", headers=AUDITOR).json()
    assert [
        (e["action"], e["actor"], e["from_revision"], e["to_revision"], e["occurred_at"])
        for e in reversed(events["items"])
    ] == [
        ("activate", "system:bootstrap", None, original, "2026-11-24T12:00:00Z"),
        ("activate", "alice", original, candidate.revision_id, "2026-11-24T14:00:00Z"),
        ("rollback", "alice", candidate.revision_id, original, "2026-11-24T15:00:00Z"),
    ]
    assert events["chain_length"] == 3
    assert gate.client.get("/v1/policies", headers=AUDITOR).json()["active_revision"][
        "revision_id"
    ] == original


def test_active_bundle_answers_304_to_the_same_etag(gate: LifecycleApp) -> None:
    revision = shipped().revision_id
    first = gate.client.get("/v1/policies/bundle", headers=AUDITOR)
    assert first.status_code == 200
    assert first.headers["etag"] == f'"{revision}"'
    again = gate.client.get(
        "/v1/policies/bundle", headers={**AUDITOR, "If-None-Match": f'"{revision}"'}
    )
    assert again.status_code == 304


def test_bundle_export_is_an_opa_bundle_of_the_revision(gate: LifecycleApp, opa_binary: str, tmp_path: Path) -> None:
    revision = shipped().revision_id
    response = gate.client.get(f"/v1/policies/revisions/{revision}/bundle", headers=AUDITOR)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    bundle = tmp_path / "bundle.tar.gz"
    bundle.write_bytes(response.content)
    with tarfile.open(bundle) as archive:
        member = archive.extractfile("/.manifest")
        assert member is not None
        manifest = json.loads(member.read())
    assert manifest["revision"] == revision
    assert "gatekeeper/exceptions" not in manifest["roots"]
    assert PolicyFiles.from_tarball(response.content).revision_id == revision


def test_roles_are_enforced(gate: LifecycleApp) -> None:
    revision = shipped().revision_id
    assert gate.client.get("/v1/policies").status_code == 401
    assert gate.client.get("/v1/policies", headers=PIPELINE).status_code == 403
    assert gate.client.get("/v1/exceptions", headers=AUDITOR).status_code == 200
    forbidden = gate.client.post(f"/v1/policies/revisions/{revision}/activate", headers=AUDITOR)
    assert forbidden.status_code == 403
    assert gate.client.post("/v1/exceptions", json={}, headers=AUDITOR).status_code == 403


HUB_IMAGE = f"docker.io/library/nginx:1.27@{DIGEST}"
HUB_VIOLATION = 'registry "docker.io" is not allowed in environment "production"'


def exception_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "images": ["docker.io/library/nginx"],
        "policies": ["registries"],
        "environment": "production",
        "reason": "vendor image; mirror pending",
        "ticket_id": "SEC-9",
        "expires_at": "2026-11-24T18:00:00Z",
        "any_digest": True,
    }
    body.update(overrides)
    return body


def create_and_approve(gate: LifecycleApp, **overrides: object) -> dict[str, object]:
    """An exception created by alice (policy-admin) and approved by carol (exception-approver)."""
    created = gate.client.post("/v1/exceptions", json=exception_body(**overrides), headers=ADMIN)
    assert created.status_code == 201, created.text
    approved = gate.client.post(f"/v1/exceptions/{created.json()['id']}/approve", headers=APPROVER)
    assert approved.status_code == 200, approved.text
    exception: dict[str, object] = approved.json()
    return exception


def test_exception_waives_until_its_expiry_instant_and_not_after(gate: LifecycleApp) -> None:
    denied = gate.evaluate([HUB_IMAGE], "production", "CHG-10")
    assert denied["verdict"] == "deny"

    gate.clock.instant = T0 + timedelta(minutes=1)
    created = create_and_approve(gate)
    assert created == {
        "id": "EXC-1", "images": ["docker.io/library/nginx"], "policies": ["registries"],
        "environment": "production", "namespace": None, "reason": "vendor image; mirror pending",
        "ticket_id": "SEC-9", "created_at": "2026-11-24T12:01:00Z",
        "expires_at": "2026-11-24T18:00:00Z", "created_by": "alice", "revoked_at": None,
        "revoked_by": None, "revoke_reason": None, "status": "active", "any_digest": True,
        "digests": {}, "approved_at": "2026-11-24T12:01:00Z", "approved_by": "carol",
    }

    # one microsecond before the expiry instant: waived, and the decision says by what
    gate.clock.instant = datetime(2026, 11, 24, 17, 59, 59, 999999, tzinfo=UTC)
    waived = gate.evaluate([HUB_IMAGE], "production", "CHG-11")
    assert waived["verdict"] == "warn"
    assert waived["violations"] == []
    assert waived["warnings"] == [
        {"policy": "registries", "image": HUB_IMAGE,
         "message": f"waived by exception EXC-1 (ticket SEC-9, expires 2026-11-24T18:00:00Z, "
                    f"any digest): {HUB_VIOLATION}"}
    ]
    assert waived["exceptions"] == [
        {"id": "EXC-1", "ticket_id": "SEC-9", "expires_at": "2026-11-24T18:00:00Z",
         "policy": "registries", "image": HUB_IMAGE, "status": "applied", "any_digest": True}
    ]

    # at the expiry instant: no longer waived, and the decision says it expired
    gate.clock.instant = datetime(2026, 11, 24, 18, 0, 0, tzinfo=UTC)
    expired = gate.evaluate([HUB_IMAGE], "production", "CHG-12")
    assert expired["verdict"] == "deny"
    assert expired["violations"] == [
        {"policy": "registries", "image": HUB_IMAGE, "message": HUB_VIOLATION}
    ]
    assert expired["warnings"] == [
        {"policy": "registries", "image": HUB_IMAGE,
         "message": f"exception EXC-1 (ticket SEC-9) expired at 2026-11-24T18:00:00Z; "
                    f"not waived: {HUB_VIOLATION}"}
    ]
    assert [(e["id"], e["status"]) for e in expired["exceptions"]] == [("EXC-1", "expired")]
    listed = gate.client.get("/v1/exceptions", headers=AUDITOR).json()["items"]
    assert [(e["id"], e["status"]) for e in listed] == [("EXC-1", "expired")]

    # a replay of that traffic is deterministic: each decision at its own evaluated_at
    report = gate.client.post(
        f"/v1/policies/revisions/{shipped().revision_id}/replay",
        params={"since": "2026-11-24T00:00:00Z", "until": "2026-11-25T00:00:00Z"},
        headers=ADMIN,
    ).json()
    assert report["summary"] == "would have denied 2 of 3 deploys, 0 tickets affected"
    assert report["changes"] == []


def test_exception_scope_validation_revocation_and_export(gate: LifecycleApp) -> None:
    bad = gate.client.post(
        "/v1/exceptions", json=exception_body(images=["*/*"]), headers=ADMIN
    )
    assert bad.status_code == 422
    assert bad.json()["message"] == (
        "images[0]: image pattern '*/*' must name a registry host, not only wildcards"
    )
    past = gate.client.post(
        "/v1/exceptions", json=exception_body(expires_at="2026-11-24T11:00:00Z"), headers=ADMIN
    )
    assert past.json()["message"] == (
        "expires_at: expires_at 2026-11-24T11:00:00Z is not in the future"
    )
    unscoped = gate.client.post(
        "/v1/exceptions", json=exception_body(environment=None), headers=ADMIN
    )
    assert unscoped.json()["message"] == (
        "environment: an exception must be scoped to an environment or a namespace"
    )

    self_approved = gate.client.post(
        "/v1/exceptions", json=exception_body(approver="alice"), headers=ADMIN
    )
    assert (self_approved.status_code, self_approved.json()["field"]) == (422, "approver")

    created = create_and_approve(gate)
    assert gate.evaluate([HUB_IMAGE], "production")["verdict"] == "warn"
    gate.clock.instant = T0 + timedelta(hours=1)
    revoked = gate.client.post(
        f"/v1/exceptions/{created['id']}/revoke", json={"reason": "mirror done"}, headers=ADMIN
    )
    assert revoked.status_code == 200
    assert (revoked.json()["status"], revoked.json()["revoked_by"]) == ("revoked", "alice")
    decision = gate.evaluate([HUB_IMAGE], "production")
    assert decision["verdict"] == "deny"
    assert decision["warnings"] == [
        {"policy": "registries", "image": HUB_IMAGE,
         "message": f"exception EXC-1 (ticket SEC-9) was revoked at 2026-11-24T13:00:00Z; "
                    f"not waived: {HUB_VIOLATION}"}
    ]
    again = gate.client.delete(f"/v1/exceptions/{created['id']}", headers=ADMIN)
    assert again.status_code == 409
    assert gate.client.get("/v1/exceptions/EXC-9", headers=AUDITOR).status_code == 404

    export = gate.client.get("/v1/exceptions/export", headers=AUDITOR).json()
    assert [e["id"] for e in export["exceptions"]] == ["EXC-1"]
    assert [(e["action"], e["subject"], e["actor"]) for e in export["events"]] == [
        ("exception.create", "EXC-1", "alice"),
        ("exception.approve", "EXC-1", "carol"),
        ("exception.revoke", "EXC-1", "alice"),
    ]
