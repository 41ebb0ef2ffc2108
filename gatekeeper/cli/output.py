"""Output formats, chosen once per command: ``-o/--output json|yaml|table`` for documents,
``--format junit|sarif|github`` for CI reports (``evaluate``, ``policy test``).

Each format has one renderer. A report is built from :class:`Finding` values so that a decision
and a test run are written to JUnit, SARIF 2.1.0 and GitHub workflow commands the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, assert_never

import typer

from gatekeeper.errors import InvalidInputError

__all__ = [
    "Finding",
    "OutputFormat",
    "OutputOption",
    "ReportFormat",
    "ReportOption",
    "emit",
    "render_report",
]


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


class ReportFormat(StrEnum):
    JUNIT = "junit"
    SARIF = "sarif"
    GITHUB = "github"


OutputOption = Annotated[
    OutputFormat,
    typer.Option("-o", "--output", help="How to print the result.", case_sensitive=False),
]
ReportOption = Annotated[
    ReportFormat | None,
    typer.Option(
        "--format",
        help="A CI report instead: junit, sarif (2.1.0) or github (workflow annotations).",
        case_sensitive=False,
    ),
]

Table = Callable[[Any], Iterable[str]]


def emit(document: Any, output: OutputFormat, table: Table | None = None) -> None:
    """Print ``document`` as ``output``; ``table`` gives the lines of the human view."""
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(document, indent=2, sort_keys=True))
    elif output is OutputFormat.YAML:
        import yaml

        typer.echo(yaml.safe_dump(document, sort_keys=True, allow_unicode=True).rstrip("\n"))
    elif output is OutputFormat.TABLE:
        if table is None:
            raise InvalidInputError(
                "this command prints a document: use -o json or -o yaml", field="--output"
            )
        for line in table(document):
            typer.echo(line)
    else:
        assert_never(output)


# -- CI reports --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One checked thing: a test, or an image's policy result.

    ``level`` is ``error`` (a failure), ``warning`` or ``pass``; ``location`` a file or an
    image reference, ``line`` its line when it is a file.
    """

    suite: str
    name: str
    level: str
    message: str = ""
    location: str | None = None
    line: int | None = None
    rule: str | None = None


def render_report(
    report: ReportFormat, findings: Sequence[Finding], *, title: str, version: str
) -> str:
    if report is ReportFormat.JUNIT:
        return _junit(findings, title)
    if report is ReportFormat.SARIF:
        return _sarif(findings, version)
    if report is ReportFormat.GITHUB:
        return _github(findings)
    assert_never(report)


def _junit(findings: Sequence[Finding], title: str) -> str:
    from xml.etree import ElementTree as ET  # noqa: N817 - the module's usual short name

    root = ET.Element("testsuites", name=title)
    suites: dict[str, list[Finding]] = {}
    for finding in findings:
        suites.setdefault(finding.suite, []).append(finding)
    for name, members in suites.items():
        failures = sum(1 for f in members if f.level == "error")
        suite = ET.SubElement(
            root, "testsuite", name=name, tests=str(len(members)), failures=str(failures),
            errors="0", skipped="0",
        )
        for finding in members:
            case = ET.SubElement(suite, "testcase", name=finding.name, classname=name)
            if finding.location:
                case.set("file", finding.location)
            if finding.line:
                case.set("line", str(finding.line))
            if finding.level == "error":
                failure = ET.SubElement(case, "failure", message=finding.message)
                failure.text = finding.message
            elif finding.level == "warning":
                ET.SubElement(case, "system-out").text = f"warning: {finding.message}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def _sarif(findings: Sequence[Finding], version: str) -> str:
    results: list[dict[str, Any]] = []
    rules: dict[str, dict[str, Any]] = {}
    for finding in findings:
        if finding.level == "pass":
            continue
        rule = finding.rule or finding.name
        rules.setdefault(rule, {"id": rule, "name": rule})
        result: dict[str, Any] = {
            "ruleId": rule,
            "level": "error" if finding.level == "error" else "warning",
            "message": {"text": finding.message},
        }
        if finding.location:
            physical: dict[str, Any] = {"artifactLocation": {"uri": finding.location}}
            if finding.line:
                physical["region"] = {"startLine": finding.line}
            result["locations"] = [{"physicalLocation": physical}]
        results.append(result)
    document = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "gatekeeper",
                        "version": version,
                        "rules": sorted(rules.values(), key=lambda r: str(r["id"])),
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(document, indent=2, sort_keys=True)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _github(findings: Sequence[Finding]) -> str:
    """GitHub Actions workflow commands (``::error file=F,line=L,title=T::message``)."""
    lines: list[str] = []
    for finding in findings:
        if finding.level == "pass":
            continue
        command = "error" if finding.level == "error" else "warning"
        properties = []
        if finding.location and finding.line:
            properties.append(f"file={_escape_property(finding.location)}")
            properties.append(f"line={finding.line}")
        properties.append(f"title={_escape_property(finding.rule or finding.name)}")
        lines.append(f"::{command} {','.join(properties)}::{_escape_data(finding.message)}")
    return "\n".join(lines)
