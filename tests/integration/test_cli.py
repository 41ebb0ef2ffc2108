"""The gatekeeper CLI as a user runs it: real processes, exit codes, printed messages."""

import json
from pathlib import Path

import httpx
import pytest

from tests.helpers.cli import cli_environment, run_gatekeeper
from tests.helpers.net import free_port
from tests.helpers.serve import gatekeeper_serve

DIGEST = "sha256:" + "12" * 32


@pytest.fixture
def cli_env(opa_binary: str, policy_dir: Path, tmp_path: Path) -> dict[str, str]:
    return cli_environment(opa_binary, policy_dir, tmp_path)


run = run_gatekeeper


def test_allow_exits_0(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "evaluate", f"registry.example.com/api@{DIGEST}", "--environment", "development")
    assert result.returncode == 0, result.stderr
    assert "verdict   ALLOW  (environment development" in result.stdout


def test_warn_exits_0(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "evaluate", "nginx", "--environment", "development")
    assert result.returncode == 0
    assert 'warning   [digests] nginx: tag "latest" is mutable; deploy a version tag or a digest' in result.stdout


def test_deny_exits_1_and_names_the_reason(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "evaluate", "registry.example.com.evil.io/api:1", "--environment", "development",
                 "--ticket-id", "CHG-7", "--output", "json")
    assert result.returncode == 1
    decision = json.loads(result.stdout)
    assert decision["violations"] == [
        {"policy": "registries", "image": "registry.example.com.evil.io/api:1",
         "message": 'registry "registry.example.com.evil.io" is not allowed in environment "development"'}
    ]
    assert decision["ticket"]["ticket_id"] == "CHG-7"
    shown = run(cli_env, "decisions", "show", decision["decision_id"])
    assert shown.returncode == 0
    assert json.loads(shown.stdout) == decision


def test_bad_reference_exits_2_naming_the_image(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "evaluate", "nginx", "Bad//Ref")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: images[1]: invalid image reference 'Bad//Ref': repository name must be lowercase"


def test_engine_unavailable_exits_2(cli_env: dict[str, str]) -> None:
    cli_env["GATEKEEPER_OPA_URL"] = "http://127.0.0.1:9"
    result = run(cli_env, "evaluate", "nginx", "--output", "json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"].startswith("policy engine unavailable: OPA at http://127.0.0.1:9")


def test_bad_output_format_exits_2(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "evaluate", "nginx", "--output", "xml")
    assert result.returncode == 2
    assert "'xml' is not one of 'table', 'json', 'yaml'" in result.stderr


def test_unknown_decision_exits_1(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "decisions", "show", "nope")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: decision nope not found"


def test_bad_configuration_exits_2(cli_env: dict[str, str]) -> None:
    cli_env["GATEKEEPER_METRICS_PORT"] = "not-a-port"
    result = run(cli_env, "evaluate", "nginx")
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid configuration: metrics_port:")


def test_serve_prints_url_and_answers_the_cli(cli_env: dict[str, str], tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    cli_env["GATEKEEPER_METRICS_PORT"] = str(metrics_port)
    # no --host: the default is loopback, as the printed URL shows
    with gatekeeper_serve(cli_env, tmp_path / "serve.log", port=port, host=None,
                          cwd=None) as server:
        url = server.url
        remote = run(cli_env, "evaluate", "nginx", "--environment", "development", "--server", url,
                     "--output", "json")
        assert remote.returncode == 0, remote.stderr
        decision_id = json.loads(remote.stdout)["decision_id"]
        shown = run(cli_env, "decisions", "show", decision_id, "--server", url)
        assert json.loads(shown.stdout)["decision_id"] == decision_id
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert 'gatekeeper_decisions_total{source="pipeline",verdict="warn"} 1.0' in metrics
    output = server.log.read_text()
    assert f"Forge Gatekeeper serving on http://127.0.0.1:{port} (API docs: /docs)" in output
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status shows it.
    assert server.process.returncode in (0, -15)
