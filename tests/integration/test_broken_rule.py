"""A broken rule package is named, not blamed on the engine.

The whole application with the real embedded OPA and the shipped ``policies/`` plus one package
whose ``deny`` returns ``{"msg": ...}`` (the shape of another tool). Through the REST API and an
AdmissionReview the decision still denies, names that package, and keeps every other violation.
Then the CLI: ``policy check`` refuses packages that can never take effect and ``policy test``
prints OPA's parse errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gatekeeper.app import create_app
from gatekeeper.cli.policy import policy_app
from tests.integration.test_admission_signatures import deployment_review
from tests.integration.test_policy_lifecycle_api import shipped, write_candidate

pytestmark = pytest.mark.integration

BROKEN = """# Written for another tool: its deny items carry "msg", not "message".
package gatekeeper.rules.mirror

deny contains {"msg": "images must come from the mirror"} if {
\tinput.environment == "development"
}
"""
IMAGE = "evil.example.com/shop/api:1.0"
REGISTRY_VIOLATION = 'registry "evil.example.com" is not allowed in environment "development"'
BROKEN_MESSAGE = (
    "rule package gatekeeper.rules.mirror is broken: its deny returned an object with keys "
    '[msg], not a string or {"image": ..., "message": ...}; the decision denies until the '
    "package is fixed"
)


@pytest.fixture
def broken_gate(policy_dir: Path, make_settings: Any, tmp_path: Path) -> Iterator[TestClient]:
    (policy_dir / "mirror.rego").write_text(BROKEN)
    # shipped without its tests (a container image without rego-tests/): compile and format
    # checks pass, so the package goes live, as a third-party package in a sidecar bundle would
    settings = make_settings(
        default_environment="development", policy_tests_dir=tmp_path / "no-rego-tests"
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_malformed_deny_is_that_packages_error_and_other_violations_stay(broken_gate):
    response = broken_gate.post(
        "/v1/evaluations", json={"images": [IMAGE], "environment": "development"}
    )
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["verdict"] == "deny"
    assert decision["error"] is None
    assert decision["violations"] == [
        {"policy": "mirror", "image": None, "message": BROKEN_MESSAGE},
        {"policy": "registries", "image": IMAGE, "message": REGISTRY_VIOLATION},
    ]
    assert "unavailable" not in response.text

    review = broken_gate.post("/admission/validate", json=deployment_review("uid-broken", [IMAGE]))
    assert review.status_code == 200, review.text
    answer = review.json()["response"]
    assert answer["allowed"] is False
    assert BROKEN_MESSAGE in answer["status"]["message"]
    assert REGISTRY_VIOLATION in answer["status"]["message"]
    assert "unavailable" not in answer["status"]["message"]


VIOLATION_PACKAGE = """package gatekeeper.rules.teams

violation contains "kube-system is reserved" if input.namespace == "kube-system"
"""
OUTSIDE_PACKAGE = """package gatekeeper.custom

deny contains "kube-system is reserved" if input.namespace == "kube-system"
"""


@pytest.mark.parametrize(
    ("name", "source", "message"),
    [
        ("teams.rego", VIOLATION_PACKAGE,
         "[structure] teams.rego: package gatekeeper.rules.teams defines violation, "
         "which the gatekeeper never reads: name the rule deny (or warn)"),
        ("custom.rego", OUTSIDE_PACKAGE,
         "[structure] custom.rego: package gatekeeper.custom defines deny but is "
         "outside gatekeeper.rules.*: it can never take effect (rename it package "
         "gatekeeper.rules.<name>)"),
    ],
)
def test_policy_check_refuses_a_package_that_can_never_take_effect(
    tmp_path: Path, opa_binary: str, monkeypatch: pytest.MonkeyPatch,
    name: str, source: str, message: str,
) -> None:
    monkeypatch.setenv("GATEKEEPER_OPA_BINARY", opa_binary)
    root = write_candidate(tmp_path / "candidate", shipped())
    (root / "policies" / name).write_text(source)

    result = CliRunner().invoke(policy_app, ["check", str(root)])

    assert result.exit_code == 1, result.output
    assert message in result.output.splitlines()
    assert result.output.splitlines()[-1].startswith("refused: ")


def test_policy_test_prints_opa_parse_errors_not_pass_0_of_0(
    tmp_path: Path, opa_binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEKEEPER_OPA_BINARY", opa_binary)
    root = write_candidate(tmp_path / "candidate", shipped())
    (root / "policies" / "typo.rego").write_text(
        "package gatekeeper.rules.typo\n\ndeny contains msg if {\n\tmsg := \"x\"\n"
    )

    result = CliRunner().invoke(
        policy_app, ["test", "--policies", str(root / "policies"), "--tests", str(root / "tests")]
    )

    assert result.exit_code == 1
    assert "PASS: 0/0" not in result.output
    assert "typo.rego:" in result.output
    assert "rego_parse_error" in result.output
    assert "opa test failed: 1 error(s) before any test ran" in result.output
