"""Policy revisions: a candidate set of Rego + data files, its content-hash id, its OPA bundle.

A revision has two parts:

* ``policies`` — what OPA loads (Rego modules and data documents, paths relative to the policy
  root, ``data.json`` at the root holding ``{"gatekeeper": {"config": ...}}``). The revision id is
  :func:`~gatekeeper.policy.revision.hash_policy_files` over exactly these files, so it equals the
  ``policy_revision`` the engine records once the revision is materialised as the active
  directory (:class:`~gatekeeper.policy.revision.DirectoryRevision`).
* ``tests`` — the ``opa test`` suites shipped with it (``rego-tests/`` in the repository, with
  their golden inputs). They are evidence about the revision, not part of what OPA serves, so
  they do not change its id.

A candidate is accepted only when the real ``opa`` binary agrees (see
:mod:`gatekeeper.policy.checks`).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from gatekeeper.domain.policy_lifecycle import PolicyCandidate
from gatekeeper.errors import InvalidInputError
from gatekeeper.policy.bundle_signing import BundleSigner
from gatekeeper.policy.revision import POLICY_FILE_SUFFIXES, hash_policy_files

__all__ = [
    "MAX_BUNDLE_BYTES",
    "MAX_FILES",
    "RESERVED_ROOT",
    "PolicyFiles",
    "build_opa_bundle",
    "bundle_roots",
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
    #: The ``.signatures.json`` of an uploaded OPA bundle, kept as it came (not part of the
    #: revision id: the same policies signed twice are one revision).
    uploaded_signatures: bytes | None = field(default=None, compare=False)

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
        if self.uploaded_signatures is not None:
            _check_signatures_file(self.uploaded_signatures)
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
        signatures = members.get(".signatures.json")
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
        return cls(policies, tests, uploaded_signatures=signatures)

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


def _check_signatures_file(content: bytes) -> None:
    """An uploaded ``.signatures.json`` must have OPA's shape: ``{"signatures": [JWT, ...]}``."""
    try:
        document = json.loads(content)
    except ValueError as exc:
        raise InvalidInputError(
            ".signatures.json is not JSON", field=".signatures.json"
        ) from exc
    tokens = document.get("signatures") if isinstance(document, dict) else None
    if not isinstance(tokens, list) or not tokens or not all(
        isinstance(t, str) and t.count(".") == 2 for t in tokens
    ):
        raise InvalidInputError(
            '.signatures.json must be {"signatures": ["<JWT>", ...]}', field=".signatures.json"
        )


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


def build_opa_bundle(files: PolicyFiles, signer: BundleSigner | None = None) -> bytes:
    """An OPA bundle (``tar.gz``) of the policy files, revision = the revision id.

    Deterministic (sorted members, zero mtimes), loadable by ``opa run --bundle`` or an OPA
    sidecar's bundle service. Tests are not included: OPA would serve them as policies. With a
    ``signer`` the bundle carries ``.signatures.json`` (see :mod:`.bundle_signing`).
    """
    manifest = {"revision": files.revision_id, "roots": bundle_roots(files)}
    entries = {".manifest": json.dumps(manifest, sort_keys=True).encode(), **files.policies}
    if signer is not None:  # OPA verifies it with the key its configuration names
        entries[".signatures.json"] = signer.signatures_file(entries)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(entries):
            info = tarfile.TarInfo(f"/{name}")
            info.size = len(entries[name])
            info.mode = 0o644
            info.mtime = 0
            archive.addfile(info, io.BytesIO(entries[name]))
    return buffer.getvalue()


def as_policy_files(candidate: PolicyCandidate) -> PolicyFiles:
    """The :class:`PolicyFiles` of a candidate the core hands back (rebuilt, and so validated
    again, only when it is of another type)."""
    if isinstance(candidate, PolicyFiles):
        return candidate
    return PolicyFiles(
        dict(candidate.policies), dict(candidate.tests),
        uploaded_signatures=candidate.uploaded_signatures,
    )


class OpaBundleBuilder:
    """The :class:`~gatekeeper.domain.ports.policy.BundleBuilder` port: :func:`build_opa_bundle`
    with the configured signer (``GATEKEEPER_BUNDLE_SIGNING_KEY_FILE``), or unsigned."""

    def __init__(self, signer: BundleSigner | None = None) -> None:
        self._signer = signer

    def build(self, files: PolicyCandidate) -> bytes:
        return build_opa_bundle(as_policy_files(files), self._signer)
