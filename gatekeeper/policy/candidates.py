"""Policy candidates on disk: loading one from a path (the ``CandidateLoader`` port), and
materialising a revision as files."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from gatekeeper.domain.policy_lifecycle import PolicyCandidate
from gatekeeper.policy.bundle import PolicyFiles
from gatekeeper.policy.revision import POLICY_FILE_SUFFIXES

__all__ = ["FileCandidateLoader", "candidate_stamp", "load_candidate_path", "replace_tree"]


def load_candidate_path(path: Path) -> PolicyFiles:
    """A candidate from disk: a ``.tar.gz``; a directory with ``policies/`` (and ``tests/`` or
    ``rego-tests/``); or a flat directory such as a mounted ConfigMap (which cannot hold
    subdirectories), where ``*_test.rego`` files are the tests and the rest the policies."""
    if path.is_file():
        return PolicyFiles.from_tarball(path.read_bytes())
    if (path / "policies").is_dir():
        tests = next(
            (path / name for name in ("tests", "rego-tests") if (path / name).is_dir()), None
        )
        return PolicyFiles.from_directory(path / "policies", tests)
    flat = PolicyFiles.from_directory(path)
    inline = {n: c for n, c in flat.policies.items() if n.endswith("_test.rego")}
    policies = {n: c for n, c in flat.policies.items() if n not in inline}
    return PolicyFiles(policies, inline)


def candidate_stamp(files: PolicyCandidate) -> str:
    """Changes when the revision or its tests change (GitOps re-checks only then)."""
    digest = hashlib.sha256(files.revision_id.encode())
    for name, content in sorted(files.tests.items()):
        digest.update(name.encode() + b"\0" + content)
    return digest.hexdigest()


def replace_tree(directory: Path, files: PolicyCandidate) -> None:
    """Make ``directory`` hold exactly the revision's policy files.

    Changed files are written first and obsolete ones removed afterwards; OPA reloads on each
    change and keeps serving the last state that compiled, so it never serves an empty set.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in sorted(files.policies.items()):
        target = directory / name
        if target.is_file() and target.read_bytes() == content:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_bytes(content)
        temporary.replace(target)
    for path in sorted(directory.rglob("*"), reverse=True):
        relative = path.relative_to(directory).as_posix()
        obsolete = path.suffix in POLICY_FILE_SUFFIXES and relative not in files.policies
        if path.is_file() and obsolete:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


class FileCandidateLoader:
    """The :class:`~gatekeeper.domain.ports.policy.CandidateLoader` port (:class:`PolicyFiles`)."""

    def load_path(self, path: Path, *, tests_dir: Path | None = None) -> PolicyFiles:
        if tests_dir is not None and tests_dir.is_dir():
            return PolicyFiles.from_directory(path, tests_dir)
        return load_candidate_path(path)

    def from_directory(self, policy_dir: Path, tests_dir: Path | None = None) -> PolicyFiles:
        return PolicyFiles.from_directory(policy_dir, tests_dir)

    def from_tarball(self, data: bytes) -> PolicyFiles:
        return PolicyFiles.from_tarball(data)

    def from_text(
        self, policies: Mapping[str, str], tests: Mapping[str, str] | None = None
    ) -> PolicyFiles:
        return PolicyFiles.from_text(policies, tests)

    def stamp(self, files: PolicyCandidate) -> str:
        return candidate_stamp(files)
