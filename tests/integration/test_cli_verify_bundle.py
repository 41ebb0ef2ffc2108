"""``gatekeeper verify-bundle``: the sigstore-conformance CLI protocol, exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatekeeper.cli import app
from tests.integration.test_conformance_bundles import CASES, _arguments

FLAGS = {
    "bundle_path": "--bundle",
    "certificate_identity": "--certificate-identity",
    "certificate_oidc_issuer": "--certificate-oidc-issuer",
    "key_path": "--key",
    "trusted_root_path": "--trusted-root",
}


def argv(case: Path) -> list[str]:
    arguments = _arguments(case, "digest")
    command = ["verify-bundle"]
    for name, flag in FLAGS.items():
        if name in arguments:
            command += [flag, str(arguments[name])]
    return [*command, str(arguments["artifact"])]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_conformance_case_through_the_cli(case: Path) -> None:
    result = CliRunner().invoke(app, argv(case))
    if case.name.endswith("_fail"):
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("rejected: ")
        assert len(result.stderr.strip()) > len("rejected: ")
    else:
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "verified"


def test_the_real_entry_point_exit_codes() -> None:
    happy = next(c for c in CASES if c.name == "managed-key-happy-path")
    failing = next(c for c in CASES if c.name == "bundle-invalid-base64-signature_fail")
    ok = subprocess.run([sys.executable, "-m", "gatekeeper", *argv(happy)], capture_output=True, text=True, timeout=60)
    assert (ok.returncode, ok.stdout.strip()) == (0, "verified")
    rejected = subprocess.run([sys.executable, "-m", "gatekeeper", *argv(failing)], capture_output=True, text=True, timeout=60)
    assert rejected.returncode == 1 and rejected.stderr.startswith("rejected: ")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    happy = next(c for c in CASES if c.name == "managed-key-happy-path")
    both = argv(happy)[:-1] + ["--certificate-identity", "x", "--certificate-oidc-issuer", "y", "sha256:" + "0" * 64]
    result = CliRunner().invoke(app, both)
    assert result.exit_code == 2
    assert result.stderr == "error: give either --key or --certificate-identity/-oidc-issuer\n"
    missing = CliRunner().invoke(app, ["verify-bundle", "--bundle", str(tmp_path / "nope.json"), "--key", str(tmp_path / "k.pub"), "sha256:" + "0" * 64])
    assert missing.exit_code == 2
    assert missing.stderr == f"error: --bundle: cannot read {tmp_path / 'nope.json'}\n"
