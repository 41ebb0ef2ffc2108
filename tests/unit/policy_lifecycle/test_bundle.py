"""Candidate files: path rules, tarballs, OPA bundles, check summaries."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from gatekeeper.errors import InvalidInputError
from gatekeeper.policy.bundle import PolicyFiles, build_opa_bundle, bundle_roots
from gatekeeper.policy.checks import CheckProblem, CheckReport
from gatekeeper.policy.revision import hash_policy_files

MAIN = "package gatekeeper.main\n\ndecision := {}\n"
RULE = "package gatekeeper.rules.x\n\ndeny contains \"no\" if false\n"
DATA = json.dumps({"gatekeeper": {"config": {"environments": {}}}})


def tarball(members: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    return buffer.getvalue()


def test_revision_id_is_the_directory_hash_of_the_policy_files() -> None:
    files = PolicyFiles.from_text({"main.rego": MAIN, "data.json": DATA}, {"x_test.rego": RULE})
    assert files.revision_id == hash_policy_files(
        {"main.rego": MAIN.encode(), "data.json": DATA.encode()}
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../main.rego", "policies: file path '../main.rego' must be relative, without '.' or '..' segments"),
        ("/etc/main.rego", "policies: file path '/etc/main.rego' must be relative, without '.' or '..' segments"),
        (".hidden.rego", "policies: hidden file '.hidden.rego' is not allowed"),
        ("run.sh", "policies: file 'run.sh' is neither Rego nor a data document (.rego, .json, .yaml, .yml)"),
    ],
)
def test_unsafe_paths_are_refused(name: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        PolicyFiles.from_text({"main.rego": MAIN, name: "x"})
    assert caught.value.message == message


def test_a_candidate_needs_rego() -> None:
    with pytest.raises(InvalidInputError, match="candidate holds no .rego policy files"):
        PolicyFiles.from_text({"data.json": DATA})


def test_tarball_with_policies_and_tests() -> None:
    files = PolicyFiles.from_tarball(
        tarball({"policies/main.rego": MAIN.encode(), "./rego-tests/a_test.rego": RULE.encode()})
    )
    assert dict(files.policies) == {"main.rego": MAIN.encode()}
    assert dict(files.tests) == {"a_test.rego": RULE.encode()}


def test_tarball_members_outside_the_layout_and_links_are_refused() -> None:
    with pytest.raises(InvalidInputError) as outside:
        PolicyFiles.from_tarball(tarball({"policies/main.rego": b"x", "etc/x.rego": b"x"}))
    assert outside.value.message == (
        "tarball member 'etc/x.rego' is outside policies/ and tests/ "
        "(or upload an OPA bundle with a .manifest)"
    )
    with pytest.raises(InvalidInputError) as link:
        PolicyFiles.from_tarball(tarball({"policies/main.rego": b"x"}, symlink="policies/l.rego"))
    assert link.value.message == "tarball member 'policies/l.rego' is not a regular file"
    with pytest.raises(InvalidInputError, match="not a readable tar.gz archive"):
        PolicyFiles.from_tarball(b"not a tarball")


def test_opa_bundle_round_trip_and_roots() -> None:
    files = PolicyFiles.from_text({"main.rego": MAIN, "x.rego": RULE, "data.json": DATA})
    bundle = build_opa_bundle(files)
    assert bundle == build_opa_bundle(files)  # deterministic
    with tarfile.open(fileobj=io.BytesIO(bundle)) as archive:
        manifest = json.loads(archive.extractfile("/.manifest").read())  # type: ignore[union-attr]
    assert manifest == {
        "revision": files.revision_id,
        "roots": ["gatekeeper/config", "gatekeeper/main", "gatekeeper/rules"],
    }
    assert PolicyFiles.from_tarball(bundle).revision_id == files.revision_id
    assert bundle_roots(files) == manifest["roots"]


def test_summary_lists_failing_tests_first() -> None:
    report = CheckReport(
        passed=False,
        problems=(
            CheckProblem("fmt", "not formatted: run opa fmt -w", "policies/a.rego", 3),
            CheckProblem("test", "test data.t.test_a failed", "tests/t.rego", 5),
        ),
        failed_tests=("data.t.test_a",),
        tests_run=4, tests_passed=3, opa_version="1.22.2",
    )
    assert report.summary() == (
        "1 failing test: data.t.test_a; [fmt] policies/a.rego:3: not formatted: run opa fmt -w"
    )
    assert CheckReport.from_dict(report.as_dict()) == report
