"""The CLI as cosign/conftest users expect it, in real processes: --version, completion,
-o json|yaml|table, CI report formats, --fail-on-warn, -v, short ids, and the same exit codes
with and without --server (a real ``gatekeeper serve`` on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

import gatekeeper
from tests.helpers.cli import cli_environment
from tests.helpers.serve import gatekeeper_serve
from tests.integration.test_cli import DIGEST, run

ALLOWED = f"registry.example.com/api@{DIGEST}"


@pytest.fixture
def cli_env(opa_binary: str, policy_dir: Path, tmp_path: Path) -> dict[str, str]:
    """As in test_cli: settings through the environment of a fresh process."""
    return cli_environment(opa_binary, policy_dir, tmp_path)


def test_version_names_the_package_version(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"gatekeeper {gatekeeper.__version__}\n", ""
    )


def test_bash_completion_completes_commands_and_options(cli_env: dict[str, str]) -> None:
    def complete(words: str) -> list[str]:
        env = dict(cli_env, _GATEKEEPER_COMPLETE="complete_bash", COMP_WORDS=words,
                   COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)))
        result = subprocess.run(
            [sys.executable, "-c", "from gatekeeper.cli import main; main()"],
            capture_output=True, text=True, env=env, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert complete("gatekeeper pol") == ["policy"]
    assert complete("gatekeeper policy exceptions ") == ["create", "list", "approve", "revoke", "export"]
    assert complete("gatekeeper evaluate nginx --fail") == ["--fail-on-warn"]
    script = run(cli_env, "--show-completion", "bash")
    assert script.returncode == 0 and "_GATEKEEPER_COMPLETE=complete_bash" in script.stdout


def test_help_shows_option_names_not_types(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "evaluate", "--help")
    assert result.returncode == 0
    assert "Usage: gatekeeper evaluate [OPTIONS] [IMAGE...]\n" in result.stdout
    assert "  --server URL " in result.stdout
    assert "  -o, --output [table|json|yaml] " in result.stdout
    assert "  --fail-on-warn " in result.stdout
    assert "<str>" not in result.stdout and "<bool>" not in result.stdout


def test_evaluate_prints_yaml(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "evaluate", ALLOWED, "--environment", "development", "-o", "yaml")
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    assert document["verdict"] == "allow" and document["images"][0]["reference"] == ALLOWED


def test_evaluate_junit_sarif_github_reports_for_a_deny(cli_env: dict[str, str]) -> None:
    denied = "registry.example.com.evil.io/api:1"
    message = 'registry "registry.example.com.evil.io" is not allowed in environment "development"'
    junit = run(cli_env, "evaluate", denied, "--environment", "development", "--format", "junit")
    assert junit.returncode == 1
    suite = ElementTree.fromstring(junit.stdout.split("\n", 1)[1]).find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    failures = [case.find("failure") for case in suite.iter("testcase")]
    assert message in [f.get("message") for f in failures if f is not None]
    sarif = run(cli_env, "evaluate", denied, "--environment", "development", "--format", "sarif")
    assert sarif.returncode == 1
    results = json.loads(sarif.stdout)["runs"][0]["results"]
    assert {"ruleId": "registries", "level": "error", "message": {"text": message}} in results
    github = run(cli_env, "evaluate", denied, "--environment", "development", "--format", "github")
    assert github.returncode == 1
    assert f"::error title=registries::{message}" in github.stdout.splitlines()


def test_fail_on_warn_turns_a_warn_into_exit_1(cli_env: dict[str, str]) -> None:
    plain = run(cli_env, "evaluate", "nginx", "--environment", "development")
    assert plain.returncode == 0, plain.stderr
    assert "verdict   WARN " in plain.stdout
    strict = run(cli_env, "evaluate", "nginx", "--environment", "development", "--fail-on-warn")
    assert strict.returncode == 1
    assert "verdict   WARN " in strict.stdout


def test_verbose_adds_the_error_context(cli_env: dict[str, str]) -> None:
    quiet = run(cli_env, "sbom", "evidence", "-", "--digest", "sha1:abc")
    verbose = run(cli_env, "-v", "sbom", "evidence", "-", "--digest", "sha1:abc")
    assert quiet.returncode == verbose.returncode == 2
    first = quiet.stderr.strip()
    assert first.startswith("error: --digest: ") and "\n" not in first
    assert verbose.stderr.strip() == f"{first}\n  field: --digest"


def _decision(env: dict[str, str], ticket: str) -> str:
    result = run(env, "evaluate", ALLOWED, "--environment", "development", "--ticket-id", ticket,
                 "-o", "json")
    assert result.returncode == 0, result.stderr
    decision_id: str = json.loads(result.stdout)["decision_id"]
    return decision_id


@pytest.fixture
def served(cli_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A real ``gatekeeper serve`` on the same store, signing checkpoints with a fresh key."""
    key = tmp_path / "served-audit.pem"
    assert run(cli_env, "audit", "keygen", "--file", str(key)).returncode == 0
    cli_env["GATEKEEPER_AUDIT_SIGNING_KEY_FILE"] = str(key)
    # its own metrics port: the default (9090) may be taken by another server on this machine
    served_env = {**cli_env, "GATEKEEPER_METRICS_PORT": "0"}
    with gatekeeper_serve(served_env, tmp_path / "serve.log", host=None, cwd=None) as server:
        yield server.url


def test_decisions_show_same_exit_codes_and_short_ids_with_and_without_server(cli_env: dict[str, str], served: str) -> None:
    ids = [_decision(cli_env, f"CHG-{n}") for n in range(3)]
    for where in ([], ["--server", served]):
        unknown = run(cli_env, "decisions", "show", "nope", *where)
        assert (unknown.returncode, unknown.stderr) == (1, "error: decision nope not found\n"), where
        unknown_hex = run(cli_env, "decisions", "show", "ffffffff", *where)
        assert (unknown_hex.returncode, unknown_hex.stderr) == (
            1, "error: decision ffffffff not found\n"), where
        # UUIDv7 ids start with their creation time in milliseconds: ids made seconds apart
        # share a prefix, which is ambiguous; most of one id is not
        shared = os.path.commonprefix(ids)
        assert len(shared) >= 4
        ambiguous = run(cli_env, "decisions", "show", shared, *where)
        assert ambiguous.returncode == 2, where
        assert ambiguous.stderr.startswith(
            f"error: decision_id: '{shared}' matches more than one id ("), where
        for decision_id in ids:
            assert decision_id in ambiguous.stderr
        unique = ids[2][:-4]
        shown = run(cli_env, "decisions", "show", unique, *where)
        assert shown.returncode == 0, (where, shown.stderr)
        assert json.loads(shown.stdout)["decision_id"] == ids[2]


def test_exceptions_and_history_through_a_running_gatekeeper(cli_env: dict[str, str], served: str) -> None:
    server = ["--server", served]
    created = run(cli_env, "policy", "exceptions", "create", "--image", "docker.io/library/nginx",
                  "--policy", "registries", "--environment", "production", "--reason", "mirror",
                  "--any-digest", "--ticket-id", "SEC-1", "--expires-at", "2d",
                  "-o", "json", *server)
    assert created.returncode == 0, created.stderr
    exception = json.loads(created.stdout)
    # pending until a second person approves it (exceptions approve ID --server URL)
    assert (exception["id"], exception["status"]) == ("EXC-1", "pending")
    listed = run(cli_env, "policy", "exceptions", "list", *server)
    assert listed.returncode == 0
    assert listed.stdout.startswith("EXC-1  pending  registries  docker.io/library/nginx  ")
    revoked = run(cli_env, "policy", "exceptions", "revoke", "EXC-1", "--reason", "done", *server)
    assert revoked.returncode == 0 and revoked.stdout.startswith("EXC-1  revoked  registries")
    for where in (server, []):
        again = run(cli_env, "policy", "exceptions", "revoke", "EXC-1", *where)
        assert (again.returncode, again.stderr) == (
            1, "error: exception EXC-1 is already revoked\n"), where
        unknown = run(cli_env, "policy", "exceptions", "revoke", "EXC-9", *where)
        assert (unknown.returncode, unknown.stderr) == (
            1, "error: exception EXC-9 not found\n"), where
    exported = json.loads(run(cli_env, "policy", "exceptions", "export", *server).stdout)
    assert [e["action"] for e in exported["events"]] == ["exception.create", "exception.revoke"]
    remote = run(cli_env, "policy", "history", "-o", "json", *server)
    local = run(cli_env, "policy", "history", "-o", "json")
    assert remote.returncode == local.returncode == 0, remote.stderr + local.stderr
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    assert json.loads(local.stdout)["active_revision"].startswith("sha256:")


def test_audit_keygen_export_verify_with_file_flags_and_relative_times(cli_env: dict[str, str], tmp_path: Path) -> None:
    key = tmp_path / "keys" / "audit.pem"
    made = run(cli_env, "audit", "keygen", "--file", str(key))
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"signing key {key} (key id ")
    cli_env["GATEKEEPER_AUDIT_SIGNING_KEY_FILE"] = str(key)
    _decision(cli_env, "CHG-1")
    signed = run(cli_env, "audit", "checkpoint")
    assert (signed.returncode, signed.stdout.split(" (key")[0]) == (
        0, "checkpoint at record 1 signed"), signed.stderr
    export = tmp_path / "trail.jsonl"
    exported = run(cli_env, "audit", "export", "--since", "7d", "--file", str(export))
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith(f"exported records 1..1 (1 chain entry) to {export}; ")
    verified = run(cli_env, "audit", "verify", "--file", str(export), "--public-key", f"{key}.pub")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith(
        "export verified: 1 record and 0 chain links (1..1), 1 signed checkpoint, "
    )
    online = run(cli_env, "audit", "verify", "--since", "12h")
    assert online.returncode == 0, online.stderr
    assert online.stdout == (
        "audit trail verified: 1 record (1..1), 1 signed checkpoint, last at record 1\n"
    )
    bad = run(cli_env, "audit", "export", "--since", "yesterday", "--file", str(export))
    assert (bad.returncode, bad.stderr) == (
        2, "error: --since: 'yesterday' is neither a duration (7d, 12h) nor an RFC 3339 instant\n"
    )


def test_audit_export_and_verify_through_a_running_gatekeeper(cli_env: dict[str, str], served: str, tmp_path: Path) -> None:
    _decision(cli_env, "CHG-1")
    _decision(cli_env, "CHG-2")
    export = tmp_path / "remote.jsonl"
    exported = run(cli_env, "audit", "export", "--ticket-id", "CHG-1", "--since", "1h",
                   "--file", str(export), "--server", served)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith(f"exported to {export}; it ends with the checkpoint at record ")
    public = cli_env["GATEKEEPER_AUDIT_SIGNING_KEY_FILE"] + ".pub"
    offline = run(cli_env, "audit", "verify", "--file", str(export), "--public-key", public)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.startswith("export verified: 1 record and 1 chain link (1..2), ")
    remote = run(cli_env, "audit", "verify", "--server", served)
    local = run(cli_env, "audit", "verify")
    assert remote.returncode == local.returncode == 0, remote.stderr + local.stderr
    assert remote.stdout == local.stdout
    assert remote.stdout.startswith("audit trail verified: 2 records (1..2), ")
    denied = run(cli_env, "audit", "export", "--file", str(tmp_path / "x.jsonl"), "--verdict", "maybe",
                 "--server", served)
    assert (denied.returncode, denied.stderr) == (
        2, "error: --verdict must be allow, warn or deny, not 'maybe'\n")
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "x.jsonl.partial").exists()
