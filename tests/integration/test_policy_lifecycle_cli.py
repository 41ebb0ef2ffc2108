"""``gatekeeper policy ...`` end to end: real opa, a real SQLite audit store, exact output."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatekeeper.cli.policy import policy_app
from gatekeeper.config import Settings
from gatekeeper.policy import EmbeddedOpa
from gatekeeper.service import EvaluationService
from gatekeeper.wiring import build_container
from tests.helpers.cli import settings_through_environment
from tests.helpers.types import MakeSettings
from tests.integration.test_policy_lifecycle_api import (
    T0,
    SteppingClock,
    shipped,
    with_teams_policy,
    without_ghcr_in_staging,
    write_candidate,
)

runner = CliRunner()


@pytest.fixture
def cli_env(
    tmp_path: Path, make_settings: MakeSettings, opa_binary: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings through the environment, as the installed CLI reads them."""
    core = write_candidate(tmp_path / "shipped", shipped())
    settings = make_settings(policy_dir=core / "policies")
    return settings_through_environment(settings, opa_binary, monkeypatch)


def record_traffic(settings: Settings, opa_binary: str) -> list[str]:
    """Three recorded decisions on the shipped policies, at known instants."""
    from gatekeeper.domain import EnforcementMode, EvaluationRequest, Source, Ticket
    from gatekeeper.domain import parse_image_reference as ref

    clock = SteppingClock(T0)
    container = build_container(settings)
    assert container.embedded_opa is not None
    container.embedded_opa.stop()
    if container.policy_lifecycle is not None:
        container.policy_lifecycle = None  # this helper only records decisions
    embedded = EmbeddedOpa(opa_binary=opa_binary, policy_dir=settings.policy_dir)
    container.embedded_opa = embedded
    service = EvaluationService(
        policy_engine=embedded.engine, audit_log=container.audit_log,
        collectors=container.collectors, clock=clock,
    )
    container.start()
    ids = []
    try:
        for minute, (image, environment, ticket) in enumerate(
            [
                ("ghcr.io/acme/api:1.0", "staging", "CHG-1"),
                ("registry.example.com/payments/api:1.4@sha256:" + "cd" * 32, "production", "CHG-2"),
                ("nginx:1.27", "development", "CHG-3"),
            ],
            start=1,
        ):
            clock.instant = T0 + timedelta(minutes=minute)
            decision = service.evaluate(
                EvaluationRequest(
                    images=(ref(image),), source=Source.PIPELINE, environment=environment,
                    namespace="payments", ticket=Ticket(ticket_id=ticket),
                    mode=EnforcementMode.ENFORCE,
                )
            )
            ids.append(decision.decision_id)
    finally:
        container.stop()
    return ids


def test_policy_test_runs_the_shipped_suites_with_coverage(cli_env: Settings, tmp_path: Path) -> None:
    core = tmp_path / "shipped"
    result = runner.invoke(
        policy_app, ["test", "--policies", str(core / "policies"), "--tests", str(core / "tests")]
    )
    assert result.exit_code == 0, result.output
    passed = re.search(r"^PASS: (\d+)/(\d+)$", result.output, re.MULTILINE)
    assert passed and passed.group(1) == passed.group(2)
    assert re.search(r"^coverage: \d+\.\d\d%$", result.output, re.MULTILINE)


def test_policy_test_names_the_failing_test(cli_env: Settings, tmp_path: Path) -> None:
    root = write_candidate(tmp_path / "candidate", with_teams_policy(shipped()))
    result = runner.invoke(
        policy_app, ["test", "--policies", str(root / "policies"), "--tests", str(root / "tests")]
    )
    assert result.exit_code == 1
    assert (
        f"FAIL data.gatekeeper.rules.teams_test.test_message_names_the_field "
        f"({root / 'tests'}/teams_test.rego:13)\n"
    ) in result.output


def test_policy_check_refuses_a_candidate_naming_the_failing_test(cli_env: Settings, tmp_path: Path) -> None:
    core = tmp_path / "shipped"
    candidate = with_teams_policy(shipped())
    root = write_candidate(tmp_path / "candidate", candidate)
    result = runner.invoke(policy_app, ["check", str(root)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"revision {candidate.revision_id}",
        "[test] tests/teams_test.rego:13: test "
        "data.gatekeeper.rules.teams_test.test_message_names_the_field failed",
        "refused: 1 failing test: data.gatekeeper.rules.teams_test.test_message_names_the_field",
    ]
    good = runner.invoke(policy_app, ["check", str(core / "policies"), "--tests", str(core / "tests")])
    assert good.exit_code == 0, good.output
    assert good.output.splitlines()[0] == f"revision {shipped().revision_id}"


def test_policy_input_prints_the_exact_document(cli_env: Settings) -> None:
    result = runner.invoke(
        policy_app,
        ["input", "nginx", "registry.example.com/payments/api:1.4@sha256:" + "ab" * 32,
         "--environment", "staging", "--namespace", "payments", "--ticket-id", "CHG-1",
         "--evaluated-at", "2026-11-24T12:00:00Z"],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    # evidence: one section per collector the gatekeeper is wired with (exact content belongs
    # to each collector's own tests)
    collectors = {collector.name for collector in build_container(cli_env).collectors}
    for image in document["images"]:
        assert set(image.pop("evidence")) == collectors
    assert document == {
        "context": {},
        "dry_run": False,
        "environment": "staging",
        "evaluated_at": "2026-11-24T12:00:00Z",
        "images": [
            {"digest": None, "reference": "nginx", "registry": "docker.io",
             "repository": "library/nginx", "tag": "latest"},
            {"digest": "sha256:" + "ab" * 32,
             "reference": "registry.example.com/payments/api:1.4@sha256:" + "ab" * 32,
             "registry": "registry.example.com", "repository": "payments/api", "tag": "1.4"},
        ],
        "mode": "enforce",
        "namespace": "payments",
        "review": None,
        "schema_version": "4",
        "source": "pipeline",
        "ticket": {"deploy_id": None, "intent_id": None, "plan_id": None, "ticket_id": "CHG-1"},
    }
    bad = runner.invoke(policy_app, ["input", "NGINX"])
    assert bad.exit_code == 2
    assert "images[0]: invalid image reference 'NGINX': repository name must be lowercase" in (
        bad.output
    )


def test_policy_replay_prints_the_impact(cli_env: Settings, opa_binary: str, tmp_path: Path) -> None:
    ids = record_traffic(cli_env, opa_binary)
    candidate = without_ghcr_in_staging(shipped())
    root = write_candidate(tmp_path / "candidate", candidate)
    window = ["--since", "2026-11-24T00:00:00Z", "--until", "2026-11-25T00:00:00Z"]
    result = runner.invoke(policy_app, ["replay", str(root), *window])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"revision  {candidate.revision_id}",
        "window    2026-11-24T00:00:00Z .. 2026-11-25T00:00:00Z",
        f"decision  {ids[0]}  allow -> deny  ticket CHG-1",
        '  + [registries] ghcr.io/acme/api:1.0: registry "ghcr.io" is not allowed in '
        'environment "staging"',
        "would have denied 1 of 3 deploys, 1 ticket affected",
    ]
    strict = runner.invoke(policy_app, ["replay", str(root), *window, "--fail-on-new-denials"])
    assert strict.exit_code == 1
    as_json = runner.invoke(policy_app, ["replay", str(root), *window, "--output", "json"])
    assert json.loads(as_json.output)["totals"]["newly_denied"] == 1
    # the shipped policies replayed against their own decisions change nothing
    same = runner.invoke(policy_app, ["replay", str(tmp_path / "shipped"), *window])
    assert same.output.splitlines()[-1] == "would have denied 0 of 3 deploys, 0 tickets affected"
    bad = runner.invoke(policy_app, ["replay", str(root), "--since", "last week"])
    assert bad.exit_code == 2
    assert bad.output == (
        "error: --since: 'last week' is neither a duration (7d, 12h) nor an RFC 3339 instant\n"
    )


def test_policy_exceptions_create_list_revoke_export(cli_env: Settings) -> None:
    created = runner.invoke(
        policy_app,
        ["exceptions", "create", "--image", "docker.io/library/nginx", "--policy", "registries",
         "--environment", "production", "--reason", "mirror pending", "--any-digest",
         "--ticket-id", "SEC-9", "--expires-at", "2d", "--actor", "cli:alice"],
    )
    assert created.exit_code == 0, created.output
    assert re.fullmatch(
        r"EXC-1  pending  registries  docker.io/library/nginx  \(environment production; "
        r"ticket SEC-9, expires \S+Z\)\n",
        created.output,
    )
    listed = runner.invoke(policy_app, ["exceptions", "list", "--output", "json"])
    assert [(e["id"], e["status"], e["created_by"]) for e in json.loads(listed.output)["items"]] == [
        ("EXC-1", "pending", "cli:alice")
    ]
    # approval needs an authenticated second person: only through a running gatekeeper
    in_process = runner.invoke(policy_app, ["exceptions", "approve", "EXC-1"])
    assert in_process.exit_code == 2 and "--server" in in_process.output
    revoked = runner.invoke(
        policy_app, ["exceptions", "revoke", "EXC-1", "--reason", "done", "--actor", "cli:bob"]
    )
    assert revoked.exit_code == 0
    assert revoked.output.startswith("EXC-1  revoked  registries")
    unknown = runner.invoke(policy_app, ["exceptions", "revoke", "EXC-9"])
    assert (unknown.exit_code, unknown.output) == (1, "error: exception EXC-9 not found\n")
    too_long = runner.invoke(
        policy_app,
        ["exceptions", "create", "--image", "docker.io/library/nginx", "--policy", "registries",
         "--environment", "production", "--reason", "r", "--any-digest",
         "--ticket-id", "SEC-9", "--expires-at", "365d"],
    )
    assert (too_long.exit_code, too_long.output) == (
        2, "error: expires_at: expires_at is more than 90 days away\n"
    )
    export = json.loads(runner.invoke(policy_app, ["exceptions", "export"]).output)
    assert [(e["action"], e["subject"], e["actor"]) for e in export["events"]] == [
        ("exception.create", "EXC-1", "cli:alice"),
        ("exception.revoke", "EXC-1", "cli:bob"),
    ]


def without_time(line: str) -> str:
    return line.split("  ", 1)[1]


def test_policy_submit_activate_rollback_history_in_process(cli_env: Settings, tmp_path: Path) -> None:
    refused_dir = write_candidate(tmp_path / "refused", with_teams_policy(shipped()))
    refused = runner.invoke(policy_app, ["submit", str(refused_dir), "--actor", "cli:alice"])
    assert refused.exit_code == 1
    assert refused.output == (
        f"error: candidate {with_teams_policy(shipped()).revision_id} refused: "
        "1 failing test: data.gatekeeper.rules.teams_test.test_message_names_the_field\n"
    )
    original, tightened = shipped(), without_ghcr_in_staging(shipped())
    for files, name in ((original, "original"), (tightened, "tightened")):
        result = runner.invoke(
            policy_app, ["submit", str(write_candidate(tmp_path / name, files)), "--actor", "cli:alice"]
        )
        assert (result.exit_code, result.output) == (0, f"accepted {files.revision_id}\n")

    first = runner.invoke(policy_app, ["activate", original.revision_id, "--actor", "cli:alice"])
    assert without_time(first.output) == f"activate - -> {original.revision_id}  by cli:alice\n"
    second = runner.invoke(
        policy_app, ["activate", tightened.revision_id, "--actor", "cli:alice", "--reason", "CHG-7"]
    )
    assert without_time(second.output) == (
        f"activate {original.revision_id} -> {tightened.revision_id}  by cli:alice\n"
    )
    refused_activation = runner.invoke(
        policy_app, ["activate", with_teams_policy(shipped()).revision_id]
    )
    assert refused_activation.exit_code == 1
    assert refused_activation.output.startswith(
        f"error: revision {with_teams_policy(shipped()).revision_id} was refused by its checks"
    )
    back = runner.invoke(policy_app, ["rollback", "--actor", "cli:bob"])
    assert without_time(back.output) == (
        f"rollback {tightened.revision_id} -> {original.revision_id}  by cli:bob\n"
    )
    none_left = runner.invoke(policy_app, ["rollback"])
    assert (none_left.exit_code, none_left.output) == (
        1, "error: no earlier revision to roll back to\n"
    )
    listed = runner.invoke(policy_app, ["history"])
    assert [without_time(line) for line in listed.output.splitlines()[:-1]] == [
        f"activate - -> {original.revision_id}  by cli:alice",
        f"activate {original.revision_id} -> {tightened.revision_id}  by cli:alice",
        f"rollback {tightened.revision_id} -> {original.revision_id}  by cli:bob",
    ]
    assert listed.output.splitlines()[-1] == f"active {original.revision_id}"


def test_policy_input_shows_large_evidence_inline_and_by_reference(cli_env: Settings) -> None:
    from gatekeeper.domain import parse_digest
    from tests.unit.sbom.factory import cyclonedx

    digest = "sha256:" + "ab" * 32
    container = build_container(cli_env)
    try:
        container.audit_log.migrate()
        container.sbom_store.create_tables()
        assert container.vex_store is not None, "the container wires a VEX store"
        container.vex_store.create_tables()
        container.sbom_uploader.upload(json.dumps(cyclonedx(300)).encode(), parse_digest(digest),
                                       uploaded_by="ci-bot")
    finally:
        container.stop()
    args = ["input", f"registry.example.com/payments/api@{digest}", "--environment", "staging",
            "--evaluated-at", "2026-11-24T12:00:00Z"]

    inline = runner.invoke(policy_app, args)
    assert inline.exit_code == 0, inline.output
    [document] = json.loads(inline.stdout)["images"][0]["evidence"]["sbom"]["documents"]
    assert len(document["components"]) == 300
    assert "components_sha256" not in document
    assert inline.stderr == (
        "note: 1 evidence document(s) shown inline reach OPA by sha256 "
        "(data.gatekeeper.evidence); --by-reference prints that form\n")

    sent = runner.invoke(policy_app, [*args, "--by-reference"])
    assert sent.exit_code == 0, sent.output
    both = json.loads(sent.stdout)
    [referenced] = both["input"]["images"][0]["evidence"]["sbom"]["documents"]
    assert "components" not in referenced
    index = both["data"]["gatekeeper"]["evidence"][referenced["components_sha256"]]
    assert index["component_count"] == 300
    assert "pkg:npm/pkg-7@1.7.0" in index["purls"]
