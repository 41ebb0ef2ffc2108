"""One renderer per output format, and CI reports (JUnit, SARIF 2.1.0, GitHub annotations)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from xml.etree import ElementTree

import click
import pytest
import yaml
from typer.testing import CliRunner

import gatekeeper.sbom.parsing
from gatekeeper.cli import app
from gatekeeper.cli import sbom as sbom_cli
from gatekeeper.cli.commands import decision_findings
from gatekeeper.cli.output import Finding, OutputFormat, ReportFormat, emit, render_report
from gatekeeper.cli.root import COMMANDS, load_command
from gatekeeper.errors import InvalidInputError

DECISION = {
    "decision_id": "0193a5f0-0000-7000-8000-000000000001",
    "environment": "production",
    "verdict": "deny",
    "images": [
        {"reference": "registry.example.com/api:1", "digest": None},
        {"reference": "registry.example.com/web@sha256:" + "ab" * 32, "digest": "sha256:" + "ab" * 32},
    ],
    "violations": [
        {"policy": "digests", "image": "registry.example.com/api:1",
         "message": 'tag "1" is mutable, deploy a digest'},
    ],
    "warnings": [
        {"policy": "sbom", "image": None, "message": "50% of images, ship an SBOM\nsoon"},
    ],
}


def test_json_and_yaml_render_the_same_document(capsys: pytest.CaptureFixture[str]) -> None:
    emit(DECISION, OutputFormat.JSON)
    as_json = json.loads(capsys.readouterr().out)
    emit(DECISION, OutputFormat.YAML)
    as_yaml = yaml.safe_load(capsys.readouterr().out)
    assert as_json == as_yaml == DECISION


def test_table_needs_a_view_of_the_command() -> None:
    with pytest.raises(InvalidInputError) as caught:
        emit({"a": 1}, OutputFormat.TABLE)
    assert caught.value.user_message() == "--output: this command prints a document: use -o json or -o yaml"


def test_junit_report_of_a_decision() -> None:
    text = render_report(ReportFormat.JUNIT, decision_findings(DECISION), title="t", version="1")
    root = ElementTree.fromstring(text.split("\n", 1)[1])
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == (
        "gatekeeper evaluate (production)", "3", "1"
    )
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {
        "registry.example.com/api:1 [digests]", "request [sbom]",
        "registry.example.com/web@sha256:" + "ab" * 32,
    }
    failure = cases["registry.example.com/api:1 [digests]"].find("failure")
    assert failure is not None and failure.get("message") == 'tag "1" is mutable, deploy a digest'
    assert cases["request [sbom]"].findtext("system-out") == "warning: 50% of images, ship an SBOM\nsoon"


def test_sarif_report_of_a_decision() -> None:
    document = json.loads(
        render_report(ReportFormat.SARIF, decision_findings(DECISION), title="t", version="9.9")
    )
    assert document["version"] == "2.1.0"
    run = document["runs"][0]
    assert run["tool"]["driver"]["name"] == "gatekeeper"
    assert run["tool"]["driver"]["version"] == "9.9"
    assert [rule["id"] for rule in run["tool"]["driver"]["rules"]] == ["digests", "sbom"]
    assert [(r["ruleId"], r["level"], r["message"]["text"]) for r in run["results"]] == [
        ("digests", "error", 'tag "1" is mutable, deploy a digest'),
        ("sbom", "warning", "50% of images, ship an SBOM\nsoon"),
    ]


def test_github_annotations_escape_their_data_and_properties() -> None:
    findings = [
        Finding("data.gatekeeper.rules.teams_test", "test_x", "error", "expected 1,\ngot 2",
                "tests/teams_test.rego", 13, rule="data.gatekeeper.rules.teams_test.test_x"),
        Finding("s", "n", "warning", "100% sure", rule="a:b,c"),
        Finding("s", "ok", "pass"),
    ]
    assert render_report(ReportFormat.GITHUB, findings, title="t", version="1").splitlines() == [
        "::error file=tests/teams_test.rego,line=13,"
        "title=data.gatekeeper.rules.teams_test.test_x::expected 1,%0Agot 2",
        "::warning title=a%3Ab%2Cc::100%25 sure",
    ]


#: typer's type tags (``<str>``, ``<bool>``, ``<list[str]>``, ``<table|json>``) and its usage
#: braces (``{images}``); help prose such as ``sha256:<hex>`` is fine.
TYPE_TAG = re.compile(r"<(?:str|bool|int|float|path|file|datetime|list\[)|<[a-z]+\||\{[a-z_.]+\}")


def _command_paths(command: click.Command, path: list[str]) -> Iterator[list[str]]:
    yield path
    for name, child in getattr(command, "commands", {}).items():
        yield from _command_paths(child, [*path, name])


def test_help_of_every_command_has_no_type_placeholders() -> None:
    runner = CliRunner()
    paths: list[list[str]] = [[]] + [p for name in COMMANDS for p in _command_paths(load_command(name), [name])]
    assert ["policy", "exceptions", "create"] in paths and len(paths) > 25
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert not TYPE_TAG.search(result.output), (path, result.output)


def test_the_root_help_lines_match_the_commands() -> None:
    for name, (_module, _attribute, line) in COMMANDS.items():
        command = load_command(name)
        assert (command.help or "").split("\n\n")[0].replace("\n", " ").startswith(
            line.removesuffix(".")
        ), name


def test_sbom_limits_repeated_in_the_cli_agree_with_the_parser() -> None:
    assert sbom_cli.DEFAULT_MAX_BYTES == gatekeeper.sbom.parsing.DEFAULT_MAX_BYTES
    assert sbom_cli.DEFAULT_MAX_DEPTH == gatekeeper.sbom.parsing.DEFAULT_MAX_DEPTH
