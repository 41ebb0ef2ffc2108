"""The sigstore-conformance ``bundle-verify`` cases, offline, through the CLI-protocol function.

Every case runs twice, as the conformance suite does: with the artifact's path and with its
``sha256:`` digest. Positive cases must verify; ``_fail`` cases must be rejected with a reason.
No case is excluded. sigstore-python 4.5's own conformance run xfails four of them
(managed-key-happy-path, managed-key-and-trusted-root, trust-root-tsa-validity-end-inclusive,
intoto-with-custom-trust-root); ``gatekeeper.verify.bundle`` handles those itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gatekeeper.verify.bundle_cli import verify_bundle_for_cli

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "sigstore-conformance"
CASES = sorted(p for p in (ASSETS / "bundle-verify").iterdir() if p.is_dir())

# Defaults of the conformance suite (test/client.py) when a case names no identity/issuer.
DEFAULT_IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
DEFAULT_ISSUER = "https://token.actions.githubusercontent.com"


def _arguments(case: Path, artifact_mode: str) -> dict[str, object]:
    artifact = case / "artifact" if (case / "artifact").exists() else ASSETS / "a.txt"
    arguments: dict[str, object] = {"bundle_path": case / "bundle.sigstore.json"}
    if artifact_mode == "path":
        arguments["artifact"] = str(artifact)
    else:
        arguments["artifact"] = "sha256:" + hashlib.sha256(artifact.read_bytes()).hexdigest()
    if (case / "key.pub").exists():
        arguments["key_path"] = case / "key.pub"
    else:
        identity, issuer = case / "identity", case / "issuer"
        arguments["certificate_identity"] = (
            identity.read_text().strip() if identity.exists() else DEFAULT_IDENTITY
        )
        arguments["certificate_oidc_issuer"] = (
            issuer.read_text().strip() if issuer.exists() else DEFAULT_ISSUER
        )
    if (case / "trusted_root.json").exists():
        arguments["trusted_root_path"] = case / "trusted_root.json"
    return arguments


def test_the_corpus_is_complete() -> None:
    assert len(CASES) == 70
    assert (ASSETS / "NOTICE.md").exists()


@pytest.mark.parametrize("artifact_mode", ["path", "digest"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bundle_verify_case(case: Path, artifact_mode: str) -> None:
    ok, reason = verify_bundle_for_cli(**_arguments(case, artifact_mode))  # type: ignore[arg-type]
    if case.name.endswith("_fail"):
        assert ok is False, f"{case.name} must be rejected"
        assert reason and reason != "verified"
    else:
        assert (ok, reason) == (True, "verified")
