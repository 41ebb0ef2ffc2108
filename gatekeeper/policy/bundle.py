"""Policy revisions: a candidate set of Rego + data files, its content-hash id, its checks.

A revision has two parts:

* ``policies`` — what OPA loads (Rego modules and data documents, paths relative to the policy
  root, ``data.json`` at the root holding ``{"gatekeeper": {"config": ...}}``). The revision id is
  :func:`~gatekeeper.policy.revision.hash_policy_files` over exactly these files, so it equals the
  ``policy_revision`` the engine records once the revision is materialised as the active
  directory (:class:`~gatekeeper.policy.revision.DirectoryRevision`).
* ``tests`` — the ``opa test`` suites shipped with it (``rego-tests/`` in the repository, with
  their golden inputs). They are evidence about the revision, not part of what OPA serves, so
  they do not change its id.

A candidate is accepted only when the real ``opa`` binary agrees: ``opa check --strict``,
``opa fmt`` (every file already formatted) and ``opa test`` over the shipped tests. Their
failures are parsed into ``{check, file, line, message}`` and the failing tests' names; the
decision "refused" rests on the exit codes, the parsed text only explains it.
"""

from __future__ import annotations

import difflib
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from gatekeeper.errors import ConfigurationError, InvalidInputError, PolicyEngineError
from gatekeeper.policy.revision import POLICY_FILE_SUFFIXES, hash_policy_files

__all__ = [
    "MAX_BUNDLE_BYTES",
    "MAX_FILES",
    "CheckProblem",
    "CheckReport",
    "OpaCandidateChecker",
    "PolicyFiles",
    "build_opa_bundle",
]

#: Largest accepted candidate (all files together, uncompressed).
MAX_BUNDLE_BYTES = 8 << 20
#: Most files in one candidate (policies and tests together).
MAX_FILES = 1000
_MAX_PATH_LENGTH = 512
_TEST_SUFFIXES = (".rego", ".json", ".yaml", ".yml")
_POLICY = POLICY_FILE_SUFFIXES
_PACKAGE_RE = re.compile(r"^package\s+([A-Za-z_][\w.]*)", re.MULTILINE)
#: ``data.gatekeeper.exceptions`` is written by the gatekeeper, never by a policy bundle.
RESERVED_ROOT = "gatekeeper/exceptions"


def _check_path(name: str, *, part: str, suffixes: tuple[str, ...]) -> str:
    """Validate one relative path of a candidate; return its normalised POSIX form."""
    field_name = f"{part}[{name!r}]"
    if not name or len(name) > _MAX_PATH_LENGTH:
        raise InvalidInputError(f"{part}: file path is empty or too long", field=field_name)
    path = PurePosixPath(name)
    if path.is_absolute() or "\\" in name or any(p in ("", ".", "..") for p in name.split("/")):
        raise InvalidInputError(
            f"{part}: file path {name!r} must be relative, without '.' or '..' segments",
            field=field_name,
        )
    if any(p.startswith(".") for p in path.parts):
        raise InvalidInputError(f"{part}: hidden file {name!r} is not allowed", field=field_name)
    if path.suffix not in suffixes:
        raise InvalidInputError(
            f"{part}: file {name!r} is neither Rego nor a data document "
            f"({', '.join(suffixes)})",
            field=field_name,
        )
    return str(path)


@dataclass(frozen=True, slots=True)
class PolicyFiles:
    """A candidate policy set: ``policies`` (served by OPA) and ``tests`` (run by ``opa test``)."""

    policies: Mapping[str, bytes]
    tests: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not any(name.endswith(".rego") for name in self.policies):
            raise InvalidInputError("candidate holds no .rego policy files", field="policies")
        total = sum(len(v) for v in self.policies.values()) + sum(
            len(v) for v in self.tests.values()
        )
        if total > MAX_BUNDLE_BYTES:
            raise InvalidInputError(
                f"candidate is larger than {MAX_BUNDLE_BYTES} bytes uncompressed"
            )
        if len(self.policies) + len(self.tests) > MAX_FILES:
            raise InvalidInputError(f"candidate has more than {MAX_FILES} files")
        for part, files in (("policies", self.policies), ("tests", self.tests)):
            for name, content in files.items():
                try:
                    content.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidInputError(
                        f"{part}: file {name!r} is not UTF-8 text", field=f"{part}[{name!r}]"
                    ) from exc

    @property
    def revision_id(self) -> str:
        """``sha256:...`` over the policy files: the id the engine records with decisions."""
        return hash_policy_files(dict(self.policies))

    @classmethod
    def from_text(
        cls, policies: Mapping[str, str], tests: Mapping[str, str] | None = None
    ) -> PolicyFiles:
        """From a JSON map of files (``{"main.rego": "package ...", ...}``)."""
        checked = {
            _check_path(name, part="policies", suffixes=POLICY_FILE_SUFFIXES): text.encode()
            for name, text in policies.items()
        }
        checked_tests = {
            _check_path(name, part="tests", suffixes=_TEST_SUFFIXES): text.encode()
            for name, text in (tests or {}).items()
        }
        return cls(checked, checked_tests)

    @classmethod
    def from_directory(cls, policy_dir: Path, tests_dir: Path | None = None) -> PolicyFiles:
        """Read a policy directory (and its tests) the way OPA loads it (hidden files skipped)."""

        def read(directory: Path, suffixes: tuple[str, ...]) -> dict[str, bytes]:
            if not directory.is_dir():
                raise InvalidInputError(f"{directory} is not a directory")
            files: dict[str, bytes] = {}
            for path in sorted(directory.rglob("*")):
                relative = path.relative_to(directory)
                if not path.is_file() or any(p.startswith(".") for p in relative.parts):
                    continue
                if path.suffix in suffixes:
                    files[relative.as_posix()] = path.read_bytes()
            return files

        return cls(
            read(policy_dir, POLICY_FILE_SUFFIXES),
            read(tests_dir, _TEST_SUFFIXES) if tests_dir is not None else {},
        )

    @classmethod
    def from_tarball(cls, data: bytes) -> PolicyFiles:
        """From a ``.tar.gz`` holding ``policies/...`` and optionally ``tests/...``.

        An OPA bundle (a ``.manifest`` at the top, files at the data root) is accepted too: all
        its files are policies. Links, devices and oversized members are refused.
        """
        if len(data) > MAX_BUNDLE_BYTES:
            raise InvalidInputError(f"tarball is larger than {MAX_BUNDLE_BYTES} bytes")
        members: dict[str, bytes] = {}
        total = 0
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                for member in archive:
                    name = member.name.removeprefix("./").removeprefix("/")
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise InvalidInputError(
                            f"tarball member {member.name!r} is not a regular file"
                        )
                    total += member.size
                    if total > MAX_BUNDLE_BYTES or len(members) >= MAX_FILES:
                        raise InvalidInputError(
                            f"tarball holds more than {MAX_BUNDLE_BYTES} bytes or "
                            f"{MAX_FILES} files"
                        )
                    extracted = archive.extractfile(member)
                    if extracted is None:  # pragma: no cover - isfile() checked above
                        continue
                    members[name] = extracted.read()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InvalidInputError(f"not a readable tar.gz archive: {exc}") from exc
        is_opa_bundle = ".manifest" in members
        policies: dict[str, bytes] = {}
        tests: dict[str, bytes] = {}
        for name, content in members.items():
            if name in (".manifest", ".signatures.json"):
                continue
            if is_opa_bundle:
                policies[_check_path(name, part="policies", suffixes=_POLICY)] = content
                continue
            top, _, rest = name.partition("/")
            if top == "policies":
                policies[_check_path(rest, part="policies", suffixes=_POLICY)] = content
            elif top in ("tests", "rego-tests"):
                tests[_check_path(rest, part="tests", suffixes=_TEST_SUFFIXES)] = content
            else:
                raise InvalidInputError(
                    f"tarball member {name!r} is outside policies/ and tests/ "
                    "(or upload an OPA bundle with a .manifest)"
                )
        return cls(policies, tests)

    def file_listing(self) -> dict[str, list[dict[str, Any]]]:
        """Names and sizes, for API answers that do not carry the contents."""
        return {
            "policies": [{"path": n, "bytes": len(c)} for n, c in sorted(self.policies.items())],
            "tests": [{"path": n, "bytes": len(c)} for n, c in sorted(self.tests.items())],
        }

    def as_text(self) -> dict[str, dict[str, str]]:
        return {
            "policies": {n: c.decode() for n, c in sorted(self.policies.items())},
            "tests": {n: c.decode() for n, c in sorted(self.tests.items())},
        }

    def write_policies(self, directory: Path) -> None:
        _write_tree(directory, self.policies)

    def write_tests(self, directory: Path) -> None:
        _write_tree(directory, self.tests)

    def packages(self) -> set[str]:
        """Rego packages the policy files declare."""
        found: set[str] = set()
        for name, content in self.policies.items():
            if name.endswith(".rego"):
                found.update(_PACKAGE_RE.findall(content.decode()))
        return found


def _write_tree(directory: Path, files: Mapping[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def bundle_roots(files: PolicyFiles) -> list[str]:
    """The data roots a bundle of ``files`` owns (``.manifest`` ``roots``).

    Every ``package gatekeeper.X...`` owns ``gatekeeper/X``; every top-level key under
    ``gatekeeper`` in a root ``data.json`` too. ``gatekeeper/exceptions`` stays outside, so a
    sidecar accepts the gatekeeper's exceptions through its Data API.
    """
    roots: set[str] = set()
    for package in files.packages():
        parts = package.split(".")
        roots.add("/".join(parts[:2]))
    for name, content in files.policies.items():
        if PurePosixPath(name).name != "data.json":
            continue
        prefix = [p for p in PurePosixPath(name).parent.parts]
        try:
            document = json.loads(content)
        except ValueError:
            continue
        if isinstance(document, dict):
            for key, value in document.items():
                path = [*prefix, key]
                if path[0] == "gatekeeper" and len(path) == 1 and isinstance(value, dict):
                    roots.update(f"gatekeeper/{sub}" for sub in value)
                else:
                    roots.add("/".join(path[:2]))
    return sorted(roots)


def build_opa_bundle(files: PolicyFiles) -> bytes:
    """An OPA bundle (``tar.gz``) of the policy files, revision = the revision id.

    Deterministic (sorted members, zero mtimes), loadable by ``opa run --bundle`` or an OPA
    sidecar's bundle service. Tests are not included: OPA would serve them as policies.
    """
    manifest = {"revision": files.revision_id, "roots": bundle_roots(files)}
    entries = {".manifest": json.dumps(manifest, sort_keys=True).encode(), **files.policies}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(entries):
            info = tarfile.TarInfo(f"/{name}")
            info.size = len(entries[name])
            info.mode = 0o644
            info.mtime = 0
            archive.addfile(info, io.BytesIO(entries[name]))
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class CheckProblem:
    """One reason a candidate is refused.

    ``check`` is ``structure``, ``check``, ``fmt`` or ``test``.
    """

    check: str
    message: str
    file: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "file": self.file, "line": self.line, "message": self.message}

    def render(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else (
            f"{self.file}: " if self.file else ""
        )
        return f"[{self.check}] {where}{self.message}"


@dataclass(frozen=True, slots=True)
class CheckReport:
    """The verdict of the candidate checks, as stored with the revision."""

    passed: bool
    problems: tuple[CheckProblem, ...]
    failed_tests: tuple[str, ...]
    tests_run: int
    tests_passed: int
    opa_version: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "problems": [p.as_dict() for p in self.problems],
            "failed_tests": list(self.failed_tests),
            "tests_run": self.tests_run,
            "tests_passed": self.tests_passed,
            "opa_version": self.opa_version,
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> CheckReport:
        return cls(
            passed=bool(document["passed"]),
            problems=tuple(
                CheckProblem(p["check"], p["message"], p.get("file"), p.get("line"))
                for p in document.get("problems", [])
            ),
            failed_tests=tuple(document.get("failed_tests", [])),
            tests_run=int(document.get("tests_run", 0)),
            tests_passed=int(document.get("tests_passed", 0)),
            opa_version=str(document.get("opa_version", "")),
        )

    def summary(self) -> str:
        """One line for messages: why it was refused, failing tests first."""
        if self.passed:
            return f"all checks passed ({self.tests_passed}/{self.tests_run} tests)"
        parts: list[str] = []
        if self.failed_tests:
            noun = "test" if len(self.failed_tests) == 1 else "tests"
            parts.append(f"{len(self.failed_tests)} failing {noun}: {', '.join(self.failed_tests)}")
        others = [p for p in self.problems if p.check != "test" or not self.failed_tests]
        parts.extend(p.render() for p in others[:5])
        if len(others) > 5:
            parts.append(f"and {len(others) - 5} more problems")
        return "; ".join(parts)


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

    def check(self, files: PolicyFiles, *, require_tests: bool = True) -> CheckReport:
        """Check ``files``; never raises for a bad candidate (that is a refused report).

        ``require_tests=False`` only for the bootstrap of policies shipped without their tests
        (a container image without ``rego-tests/``): compile and format checks still apply.
        """
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
                problems.extend(_parse_check_errors(compiled.stdout, compiled.stderr, "check"))
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
        try:
            outcomes = json.loads(result.stdout) if result.stdout.strip() else []
        except ValueError:
            outcomes = None
        if not isinstance(outcomes, list):
            return 0, 0, [], list(_parse_check_errors(result.stdout, result.stderr, "test"))
        failed: list[str] = []
        problems: list[CheckProblem] = []
        # opa test runs packages in parallel: report in source order, so answers are stable.
        outcomes.sort(
            key=lambda o: (
                str((o.get("location") or {}).get("file", "")),
                int((o.get("location") or {}).get("row", 0)),
            )
        )
        for outcome in outcomes:
            name = f"{outcome.get('package', '')}.{outcome.get('name', '')}"
            location = outcome.get("location") or {}
            if outcome.get("fail") or outcome.get("error"):
                failed.append(name)
                error = outcome.get("error")
                detail = error.get("message") if isinstance(error, dict) else None
                problems.append(
                    CheckProblem(
                        "test",
                        f"test {name} failed" + (f": {detail}" if detail else ""),
                        location.get("file"),
                        location.get("row"),
                    )
                )
        if result.returncode != 0 and not failed:
            problems.append(
                CheckProblem("test", f"opa test failed: {result.stderr.strip()[:500]}")
            )
        return len(outcomes), len(outcomes) - len(failed), failed, problems


def _structure_problems(files: PolicyFiles) -> list[CheckProblem]:
    packages = files.packages()
    problems: list[CheckProblem] = []
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
    if RESERVED_ROOT in bundle_roots(files):
        problems.append(
            CheckProblem(
                "structure",
                "data.gatekeeper.exceptions is reserved for the gatekeeper's exceptions",
            )
        )
    return problems


def _parse_check_errors(stdout: str, stderr: str, check: str) -> list[CheckProblem]:
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
