"""``policy test --format junit|sarif|github`` and short revision ids for ``policy activate``:
real opa, a real SQLite store, exact output."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

from typer.testing import CliRunner

from gatekeeper.cli import app
from gatekeeper.config import Settings
from tests.integration.test_policy_lifecycle_api import shipped, with_teams_policy, write_candidate
from tests.integration.test_policy_lifecycle_cli import cli_env  # noqa: F401 - fixture

runner = CliRunner()


FAILING = "data.gatekeeper.rules.teams_test.test_message_names_the_field"


def test_policy_test_reports_for_ci(cli_env: Settings, tmp_path: Path) -> None:  # noqa: F811
    root = write_candidate(tmp_path / "candidate", with_teams_policy(shipped()))
    arguments = ["policy", "test", "--policies", str(root / "policies"), "--tests", str(root / "tests")]
    junit = runner.invoke(app, [*arguments, "--format", "junit"])
    assert junit.exit_code == 1
    suites = ElementTree.fromstring(junit.stdout.split("\n", 1)[1])
    failed = [
        (suite.get("name"), case.get("name"), case.get("file"), case.get("line"))
        for suite in suites for case in suite if case.find("failure") is not None
    ]
    assert failed == [("data.gatekeeper.rules.teams_test", "test_message_names_the_field",
                       f"{root / 'tests'}/teams_test.rego", "13")]
    total = sum(int(suite.get("tests", "0")) for suite in suites)
    assert total > 10
    sarif = json.loads(runner.invoke(app, [*arguments, "--format", "sarif"]).stdout)
    results = sarif["runs"][0]["results"]
    assert [(r["ruleId"], r["locations"][0]["physicalLocation"]["region"]["startLine"])
            for r in results] == [(FAILING, 13)]
    github = runner.invoke(app, [*arguments, "--format", "github"])
    assert github.exit_code == 1
    assert github.stdout.splitlines() == [
        f"::error file={root / 'tests'}/teams_test.rego,line=13,title={FAILING}::test failed"
    ]


def test_policy_activate_takes_a_unique_revision_prefix(cli_env: Settings, tmp_path: Path) -> None:  # noqa: F811
    original = shipped()
    submitted = runner.invoke(
        app, ["policy", "submit", str(write_candidate(tmp_path / "original", original)),
              "--actor", "cli:alice"])
    assert submitted.exit_code == 0, submitted.output
    short = original.revision_id.removeprefix("sha256:")[:10]
    activated = runner.invoke(app, ["policy", "activate", short, "--actor", "cli:alice"])
    assert activated.exit_code == 0, activated.output
    assert activated.stdout.split("  ", 1)[1] == f"activate - -> {original.revision_id}  by cli:alice\n"
    unknown = runner.invoke(app, ["policy", "activate", "ffffffffff"])
    assert (unknown.exit_code, unknown.stderr) == (1, "error: policy revision ffffffffff not found\n")
