"""``gatekeeper policy check`` explains why a package would be inert (issue 13.4): Rego in OPA
Gatekeeper's format that compiles and passes its own tests, but would never decide here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatekeeper.cli.policy import policy_app
from gatekeeper.policy.bundle import PolicyFiles
from gatekeeper.policy.checks import CheckReport, OpaCandidateChecker

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()

RULES = b"""package gatekeeper.rules.basics

deny contains "always" if input.environment == "nowhere"
"""

TEMPLATE = b"""package k8srequiredowner

violation contains {"msg": msg} if {
\tnot input.review.object.metadata.labels.owner
\tmsg := sprintf("%v has no owner label", [input.parameters.kind])
}
"""

TEMPLATE_TEST = b"""package k8srequiredowner_test

import data.k8srequiredowner

test_missing_owner if {
\tcount(k8srequiredowner.violation) == 1 with input as {"review": {"object": {"metadata": {}}}, "parameters": {"kind": "x"}}
}
"""

MSG_RULES = b"""package gatekeeper.rules.conftest

deny contains {"msg": "no owner"} if not input.review.object.metadata.labels.owner
"""

BASICS_TEST = b"""package gatekeeper.rules.basics_test

import data.gatekeeper.rules.basics

test_nowhere if "always" in basics.deny with input as {"environment": "nowhere"}
"""


def candidate(extra: dict[str, bytes], constraints: list[dict[str, object]] | None = None,
              tests: dict[str, bytes] | None = None) -> PolicyFiles:
    data = {"gatekeeper": {"config": {"constraints": constraints or []}}}
    return PolicyFiles(
        {"main.rego": (REPO / "policies" / "main.rego").read_bytes(), "basics.rego": RULES,
         "data.json": json.dumps(data).encode(), **extra},
        {"basics_test.rego": BASICS_TEST, **(tests or {})},
    )


def structure(report: CheckReport) -> list[tuple[str | None, str]]:
    return [(p.file, p.message) for p in report.problems if p.check == "structure"]


def test_gatekeeper_template_in_its_own_package_is_refused_saying_why(opa_binary: str) -> None:
    report = OpaCandidateChecker(opa_binary).check(candidate(
        {"required_owner.rego": TEMPLATE}, tests={"required_owner_test.rego": TEMPLATE_TEST}))
    assert not report.passed
    assert report.tests_passed == report.tests_run == 2  # its own tests pass: still inert
    assert structure(report) == [("required_owner.rego", (
        "package k8srequiredowner is inert: it defines violation, but the gatekeeper reads "
        "only deny/warn of gatekeeper.rules.<name> and violation of "
        "gatekeeper.templates.<template>; move the template's Rego to package "
        "gatekeeper.templates.<template> and add a constraint naming it to data "
        "gatekeeper.config.constraints"))]


def test_msg_shaped_deny_and_violation_in_a_rule_package_are_explained(opa_binary: str) -> None:
    as_rule = TEMPLATE.replace(b"package k8srequiredowner", b"package gatekeeper.rules.owner")
    report = OpaCandidateChecker(opa_binary).check(candidate(
        {"owner.rego": as_rule, "conftest.rego": MSG_RULES}))
    assert structure(report) == [
        ("conftest.rego", 'package gatekeeper.rules.conftest: items shaped {"msg": ...} are '
         'not findings here (no "message", no "policy"): answer a string or {"image": ..., '
         '"message": ...}, or, for a Gatekeeper template, move the template\'s Rego to package '
         "gatekeeper.templates.<template> and add a constraint naming it to data "
         "gatekeeper.config.constraints"),
        ("owner.rego", "package gatekeeper.rules.owner is inert: it defines violation (OPA "
         "Gatekeeper style) but the gatekeeper reads deny and warn of gatekeeper.rules.*; move "
         "the template's Rego to package gatekeeper.templates.<template> and add a constraint "
         "naming it to data gatekeeper.config.constraints"),
    ]


def test_template_needs_a_constraint_and_a_constraint_its_template(opa_binary: str) -> None:
    template = TEMPLATE.replace(b"package k8srequiredowner",
                                b"package gatekeeper.templates.requiredowner")
    checker = OpaCandidateChecker(opa_binary)
    unused = checker.check(candidate({"t.rego": template},
                                     [{"name": "c", "template": "other"}]))
    assert structure(unused) == [
        ("t.rego", "template package gatekeeper.templates.requiredowner is inert: no "
         'constraint in data gatekeeper.config.constraints names template "requiredowner"'),
        ("data.json", 'constraint c is inert: it names template "other" but no package '
         "gatekeeper.templates.other is loaded"),
    ]
    used = checker.check(candidate({"t.rego": template},
                                   [{"name": "c", "template": "requiredowner",
                                     "parameters": {"kind": "Deployment"}}]))
    assert used.passed, used.problems


def test_policy_check_cli_prints_the_explanation(opa_binary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEKEEPER_OPA_BINARY", opa_binary)
    files = candidate({"required_owner.rego": TEMPLATE})
    files.write_policies(tmp_path / "policies")
    files.write_tests(tmp_path / "tests")
    result = runner.invoke(policy_app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert ("[structure] required_owner.rego: package k8srequiredowner is inert: it defines "
            "violation, but the gatekeeper reads only deny/warn") in result.output
