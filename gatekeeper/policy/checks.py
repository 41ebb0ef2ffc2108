"""Candidate checks by the real ``opa`` binary: ``opa check --strict``, ``opa fmt``, ``opa test``.

A candidate (:class:`~gatekeeper.policy.bundle.PolicyFiles`) is written to a temporary directory
as ``policies/`` and ``tests/`` and checked there. Failures are parsed into
``{check, file, line, message}`` and the failing tests' names; the verdict "refused" rests on the
exit codes and the listed files, the parsed text only explains it.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from gatekeeper.domain.policy_lifecycle import (
    CheckProblem,
    CheckReport,
    OpaTestOutcome,
    OpaTestRun,
    PolicyCandidate,
)
from gatekeeper.errors import ConfigurationError, InvalidInputError, PolicyEngineError
from gatekeeper.policy.bundle import RESERVED_ROOT, PolicyFiles, as_policy_files, bundle_roots
from gatekeeper.policy.inert import inert_package_problems

__all__ = [
    "CheckProblem", "CheckReport", "OpaCandidateChecker", "OpaTestOutcome", "OpaTestRun",
    "parse_check_errors",
]


class OpaCandidateChecker:
    """Runs ``opa check --strict``, ``opa fmt`` and ``opa test`` on a candidate in a temp dir."""

    def __init__(self, opa_binary: str, *, timeout: float = 120.0) -> None:
        found = shutil.which(opa_binary) or (opa_binary if Path(opa_binary).is_file() else None)
        # Resolved once: the checks run with a temporary directory as working directory.
        resolved = str(Path(found).resolve()) if found else None
        if resolved is None:
            raise ConfigurationError(f"OPA binary {opa_binary!r} not found for policy checks")
        self._binary = resolved
        self._timeout = timeout
        self._version: str | None = None

    def _run(self, arguments: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        command = [self._binary, *arguments]
        try:
            return subprocess.run(  # noqa: S603 - fixed argv, no shell
                command, cwd=cwd, capture_output=True, text=True, timeout=self._timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PolicyEngineError(
                f"opa {arguments[0]} did not finish within {self._timeout:.0f}s"
            ) from exc
        except OSError as exc:
            raise ConfigurationError(f"cannot run {self._binary}: {exc.strerror}") from exc

    def version(self) -> str:
        if self._version is None:
            with tempfile.TemporaryDirectory(prefix="gatekeeper-opa-version-") as scratch:
                result = self._run(["version"], Path(scratch))
            first = result.stdout.splitlines()[0] if result.stdout else ""
            self._version = first.removeprefix("Version: ").strip()
        return self._version

    def check(self, candidate: PolicyCandidate, *, require_tests: bool = True) -> CheckReport:
        """Check ``files``; never raises for a bad candidate (that is a refused report).

        ``require_tests=False`` only for the bootstrap of policies shipped without their tests
        (a container image without ``rego-tests/``): compile and format checks still apply.
        """
        files = as_policy_files(candidate)
        problems: list[CheckProblem] = list(_structure_problems(files))
        failed_tests: list[str] = []
        tests_run = tests_passed = 0
        with tempfile.TemporaryDirectory(prefix="gatekeeper-candidate-") as scratch:
            root = Path(scratch)
            files.write_policies(root / "policies")
            roots = ["policies"]
            if files.tests:
                files.write_tests(root / "tests")
                roots.append("tests")
            # (1) compile every module with the strict checks (unused vars/imports, deprecated).
            compiled = self._run(["check", "--strict", "--format", "json", *roots], root)
            if compiled.returncode != 0:
                problems.extend(parse_check_errors(compiled.stdout, compiled.stderr, "check"))
            # (2) every Rego file must already be opa-fmt formatted.
            listed = self._run(["fmt", "--list", *roots], root)
            for name in listed.stdout.split():
                problems.append(self._format_problem(root, name))
            # (3) the shipped tests must pass (only meaningful once everything compiles).
            if compiled.returncode == 0:
                if not any(n.endswith(".rego") for n in files.tests):
                    if require_tests:
                        problems.append(
                            CheckProblem(
                                "test", "candidate ships no opa tests (add tests/*_test.rego)"
                            )
                        )
                else:
                    tests_run, tests_passed, failed, test_problems = self._run_tests(root, roots)
                    failed_tests.extend(failed)
                    problems.extend(test_problems)
        return CheckReport(
            passed=not problems,
            problems=tuple(problems),
            failed_tests=tuple(failed_tests),
            tests_run=tests_run,
            tests_passed=tests_passed,
            opa_version=self.version(),
        )

    def run_tests(self, roots: list[Path], *, cwd: Path) -> OpaTestRun:
        """``opa test`` (then ``--coverage``) over ``roots`` where they are: the authoring loop
        (``gatekeeper policy test``). Raises InvalidInputError when opa cannot run the tests."""
        arguments = [str(root) for root in roots]
        result = self._run(["test", "--format", "json", *arguments], cwd)
        outcomes = _test_outcomes(result.stdout)
        if outcomes is None:
            text = (result.stderr or result.stdout).strip()[:2000]
            raise InvalidInputError(f"opa test failed: {text}")
        covered = self._run(["test", "--coverage", "--format", "json", *arguments], cwd)
        try:
            coverage = float(json.loads(covered.stdout).get("coverage", 0.0))
        except (ValueError, AttributeError):
            coverage = 0.0
        problems: tuple[CheckProblem, ...] = ()
        if result.returncode != 0 and all(o.passed for o in outcomes):
            problems = tuple(parse_check_errors(result.stdout, result.stderr, "test"))
        return OpaTestRun(tuple(outcomes), coverage, result.returncode == 0, problems)

    def _format_problem(self, root: Path, name: str) -> CheckProblem:
        path = root / name
        formatted = self._run(["fmt", name], root).stdout.splitlines()
        original = path.read_text().splitlines()
        line = 1
        for opcode in difflib.SequenceMatcher(a=original, b=formatted).get_opcodes():
            if opcode[0] != "equal":
                line = opcode[1] + 1
                break
        return CheckProblem("fmt", "not formatted: run opa fmt -w", name, line)

    def _run_tests(
        self, root: Path, roots: list[str]
    ) -> tuple[int, int, list[str], list[CheckProblem]]:
        result = self._run(["test", "--format", "json", *roots], root)
        outcomes = _test_outcomes(result.stdout)
        if outcomes is None:
            return 0, 0, [], list(parse_check_errors(result.stdout, result.stderr, "test"))
        failed: list[str] = []
        problems: list[CheckProblem] = []
        for outcome in outcomes:
            if not outcome.passed:
                failed.append(outcome.qualified_name)
                problems.append(
                    CheckProblem(
                        "test",
                        f"test {outcome.qualified_name} failed"
                        + (f": {outcome.message}" if outcome.message else ""),
                        outcome.file,
                        outcome.line,
                    )
                )
        if result.returncode != 0 and not failed:
            problems.append(
                CheckProblem("test", f"opa test failed: {result.stderr.strip()[:500]}")
            )
        return len(outcomes), len(outcomes) - len(failed), failed, problems


def _test_outcomes(stdout: str) -> list[OpaTestOutcome] | None:
    """``opa test --format json`` in source order (opa runs packages in parallel), or None."""
    try:
        raw = json.loads(stdout) if stdout.strip() else []
    except ValueError:
        return None
    if not isinstance(raw, list):
        return None
    outcomes: list[OpaTestOutcome] = []
    for item in raw:
        location = item.get("location") or {}
        error = item.get("error")
        outcomes.append(
            OpaTestOutcome(
                package=str(item.get("package", "")),
                name=str(item.get("name", "")),
                passed=not (item.get("fail") or error),
                message=str(error.get("message")) if isinstance(error, dict) else None,
                file=location.get("file"),
                line=location.get("row"),
            )
        )
    outcomes.sort(key=lambda o: (str(o.file or ""), int(o.line or 0)))
    return outcomes


_PACKAGE_LINE_RE = re.compile(r"^package\s+([A-Za-z0-9_.]+)", re.MULTILINE)
#: A rule head at the start of a line (opa fmt puts every rule head there).
_RULE_HEAD_RE = re.compile(
    r"^(?:default\s+)?(deny|warn|violation)\b(?=\s*(?:contains\b|if\b|\[|:=|=|\{|$))",
    re.MULTILINE,
)
_DECISION_RULES = ("deny", "warn")


def _package_rules(files: PolicyFiles) -> dict[str, tuple[str, set[str]]]:
    """Package -> (first file, the deny/warn/violation rules its files define)."""
    found: dict[str, tuple[str, set[str]]] = {}
    for name, content in sorted(files.policies.items()):
        if not name.endswith(".rego"):
            continue
        text = content.decode(errors="replace")
        package = _PACKAGE_LINE_RE.search(text)
        if package is None:
            continue
        first, rules = found.setdefault(package.group(1), (name, set()))
        rules.update(_RULE_HEAD_RE.findall(text))
    return found


def _ineffective_packages(files: PolicyFiles) -> list[CheckProblem]:
    """Rule packages that can never take effect (the documented rule in README "Policies").

    The aggregator reads ``deny`` and ``warn`` of each package under ``gatekeeper.rules``, and
    nothing else. So a package that defines ``deny``/``warn``/``violation`` outside
    ``gatekeeper.rules.*``, or a ``gatekeeper.rules.*`` package that defines ``violation`` (the
    OPA Gatekeeper name) or neither ``deny`` nor ``warn``, is refused. Helper packages
    elsewhere that define none of the three are fine (rule packages may import them).
    ``gatekeeper.templates.*`` (Gatekeeper-format templates, whose ``violation`` the aggregator
    reads for each constraint) is checked by :func:`inert_package_problems` instead.
    """
    problems: list[CheckProblem] = []
    for package, (file, rules) in sorted(_package_rules(files).items()):
        if package == "gatekeeper.main" or package.startswith("gatekeeper.templates."):
            continue
        if not package.startswith("gatekeeper.rules."):
            if rules:
                problems.append(CheckProblem(
                    "structure",
                    f"package {package} defines {', '.join(sorted(rules))} but is outside "
                    "gatekeeper.rules.*: it can never take effect (rename it "
                    "package gatekeeper.rules.<name>)",
                    file,
                ))
            continue
        if "violation" in rules:
            problems.append(CheckProblem(
                "structure",
                f"package {package} defines violation, which the gatekeeper never reads: "
                "name the rule deny (or warn)",
                file,
            ))
        elif not rules.intersection(_DECISION_RULES):
            problems.append(CheckProblem(
                "structure",
                f"package {package} defines no deny or warn rule: it can never take effect",
                file,
            ))
    return problems


def _structure_problems(files: PolicyFiles) -> list[CheckProblem]:
    packages = files.packages()
    # Two explanations of an inert package: the Gatekeeper-template one (inert.py) says more
    # where it speaks (templates, constraints, {"msg"} items); the general rule covers the rest.
    inert = [CheckProblem("structure", message, file)
             for file, message in inert_package_problems(files.policies)]
    explained = {problem.file for problem in inert}
    problems: list[CheckProblem] = [
        problem for problem in _ineffective_packages(files)
        if problem.file not in explained and "gatekeeper.templates." not in problem.message
    ]
    if "gatekeeper.main" not in packages:
        problems.append(
            CheckProblem(
                "structure",
                "no package gatekeeper.main: the aggregator (main.rego) is missing",
            )
        )
    if not any(p.startswith("gatekeeper.rules.") for p in packages):
        problems.append(
            CheckProblem("structure", "no rule package: define package gatekeeper.rules.<name>")
        )
    problems.extend(inert)
    if RESERVED_ROOT in bundle_roots(files):
        problems.append(
            CheckProblem(
                "structure",
                "data.gatekeeper.exceptions is reserved for the gatekeeper's exceptions",
            )
        )
    return problems


def parse_check_errors(stdout: str, stderr: str, check: str) -> list[CheckProblem]:
    """``opa check --format json`` (and ``opa test`` compile errors) into problems."""
    for text in (stdout, stderr):
        try:
            document = json.loads(text)
        except ValueError:
            continue
        errors = document.get("errors") if isinstance(document, dict) else None
        if isinstance(errors, list) and errors:
            problems = []
            for error in errors:
                location = error.get("location") or {}
                problems.append(
                    CheckProblem(
                        check,
                        str(error.get("message", "")),
                        location.get("file"),
                        location.get("row"),
                    )
                )
            return problems
    message = (stderr or stdout).strip()[:800] or f"opa {check} failed"
    return [CheckProblem(check, message)]
