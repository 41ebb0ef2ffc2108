"""Bundles the world produces: npm provenance (Rekor ``intoto/0.0.2``) and GitHub attestations
(GitHub's Fulcio + timestamp authority, no transparency log), see ``tests/assets/sigstore-real``.

Before this, the npm bundle failed as ``intoto log entry body is malformed`` (public-good Rekor
keeps no payload in the body) and then on its ``sha512``-only subject; the GitHub bundle failed
as ``malformed bundle: failed to load bundle ...`` whatever root was configured.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.verify import verify_bundle_for_cli
from gatekeeper.verify.trust import TrustRoot

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "sigstore-real"
REPOSITORY = Path(__file__).resolve().parents[3]
ACTIONS = "https://token.actions.githubusercontent.com"

NPM_BUNDLE = ASSETS / "sigstore-2.1.0.npm-provenance.sigstore.json"
NPM_TARBALL = ASSETS / "sigstore-2.1.0.tgz"
NPM_IDENTITY = "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main"

GITHUB_BUNDLE = ASSETS / "github_provenance_demo-0.0.12-py3-none-any.whl.sigstore.json"
GITHUB_WHEEL = ASSETS / "github_provenance_demo-0.0.12-py3-none-any.whl"
GITHUB_IDENTITY = (
    "https://github.com/actions/attest-demo/.github/workflows/build-python.yml@refs/heads/main"
)
GITHUB_ROOT = ASSETS / "github-trusted-root.json"


def _public_good_json() -> bytes:
    directory = "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
    return resources.files("sigstore").joinpath("_store", directory, "trusted_root.json").read_bytes()


@pytest.fixture
def gh_trusted_root(tmp_path: Path) -> Path:
    """What ``gh attestation trusted-root`` prints: public-good, then GitHub, one per line."""
    lines = [json.dumps(json.loads(_public_good_json())), json.dumps(json.loads(GITHUB_ROOT.read_bytes()))]
    path = tmp_path / "gh-trusted-root.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _verify(bundle: Path, artifact: str | Path, identity: str, root: Path | None = None,
            issuer: str = ACTIONS) -> tuple[bool, str]:
    return verify_bundle_for_cli(
        bundle_path=bundle, artifact=str(artifact), certificate_identity=identity,
        certificate_oidc_issuer=issuer, trusted_root_path=root,
    )


# -- npm provenance: intoto/0.0.2 as public-good Rekor stores it, sha512 subject ---------------


def test_npm_provenance_body_has_no_payload_only_its_hash() -> None:
    bundle = json.loads(NPM_BUNDLE.read_bytes())
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
    assert (entry["kindVersion"], body["kind"]) == ({"kind": "intoto", "version": "0.0.2"}, "intoto")
    assert "payload" not in body["spec"]["content"]["envelope"]
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    assert body["spec"]["content"]["payloadHash"]["value"] == hashlib.sha256(payload).hexdigest()
    assert list(json.loads(payload)["subject"][0]["digest"]) == ["sha512"]


def test_npm_provenance_verifies_against_public_good() -> None:
    assert _verify(NPM_BUNDLE, NPM_TARBALL, NPM_IDENTITY) == (True, "verified")


def test_npm_provenance_for_another_tarball_names_both_digests() -> None:
    data = GITHUB_WHEEL.read_bytes()
    assert _verify(NPM_BUNDLE, GITHUB_WHEEL, NPM_IDENTITY) == (
        False,
        "in-toto subject does not name the artifact "
        f"(sha256:{hashlib.sha256(data).hexdigest()} or sha512:{hashlib.sha512(data).hexdigest()})",
    )


def test_npm_provenance_from_another_workflow_says_what_was_expected() -> None:
    expected = "https://github.com/sigstore/sigstore-js/.github/workflows/publish.yml@refs/heads/main"
    assert _verify(NPM_BUNDLE, NPM_TARBALL, expected) == (
        False,
        f"expected identity {expected} from issuer {ACTIONS}, "
        f"certificate names {NPM_IDENTITY} from issuer {ACTIONS}",
    )


def test_npm_provenance_with_a_changed_payload_is_rejected(tmp_path: Path) -> None:
    bundle = json.loads(NPM_BUNDLE.read_bytes())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha512"] = hashlib.sha512(b"evil").hexdigest()
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    tampered = tmp_path / "tampered.sigstore.json"
    tampered.write_text(json.dumps(bundle))
    assert _verify(tampered, NPM_TARBALL, NPM_IDENTITY) == (False, "DSSE: invalid signature")


def test_npm_provenance_against_githubs_root_alone_lacks_the_certificate_authority() -> None:
    assert _verify(NPM_BUNDLE, NPM_TARBALL, NPM_IDENTITY, GITHUB_ROOT) == (
        False,
        f"no certificate authority in the configured trusted root ({GITHUB_ROOT}) issued the "
        "signing certificate (issuer CN=sigstore-intermediate,O=sigstore.dev) valid at "
        "2023-08-29T15:40:23Z",
    )


def test_npm_provenance_against_a_root_without_its_transparency_log(tmp_path: Path) -> None:
    root = json.loads(_public_good_json())
    root["tlogs"] = []
    path = tmp_path / "public-good-without-rekor.json"
    path.write_text(json.dumps(root))
    assert _verify(NPM_BUNDLE, NPM_TARBALL, NPM_IDENTITY, path) == (
        False,
        f"no transparency log in the configured trusted root ({path}): "
        "Did not find any Rekor keys in trusted root",
    )


# -- GitHub attestations: GitHub's Fulcio + TSA, no transparency log -------------------------------


def test_github_attestation_verifies_with_githubs_trusted_root() -> None:
    assert _verify(GITHUB_BUNDLE, GITHUB_WHEEL, GITHUB_IDENTITY, GITHUB_ROOT) == (True, "verified")


def test_both_real_bundles_verify_with_what_gh_attestation_trusted_root_prints(
    gh_trusted_root: Path,
) -> None:
    assert _verify(GITHUB_BUNDLE, GITHUB_WHEEL, GITHUB_IDENTITY, gh_trusted_root) == (
        True, "verified",
    )
    assert _verify(NPM_BUNDLE, NPM_TARBALL, NPM_IDENTITY, gh_trusted_root) == (True, "verified")


def test_github_attestation_without_githubs_root_fails_for_lack_of_trust() -> None:
    assert _verify(GITHUB_BUNDLE, GITHUB_WHEEL, GITHUB_IDENTITY) == (
        False,
        "no trusted timestamp authority in the configured trusted root (sigstore public-good) "
        "signed the bundle's timestamp",
    )


def _github_root_without(tmp_path: Path, key: str) -> Path:
    root = json.loads(GITHUB_ROOT.read_bytes())
    root[key] = []
    path = tmp_path / f"github-without-{key}.json"
    path.write_text(json.dumps(root))
    return path


def test_a_root_without_the_timestamp_authority_says_so(tmp_path: Path) -> None:
    root = _github_root_without(tmp_path, "timestampAuthorities")
    assert _verify(GITHUB_BUNDLE, GITHUB_WHEEL, GITHUB_IDENTITY, root) == (
        False,
        f"no trusted timestamp authority in the configured trusted root ({root}) "
        "for a bundle without a transparency log entry",
    )


def test_a_root_without_the_certificate_authority_says_so(tmp_path: Path) -> None:
    root = _github_root_without(tmp_path, "certificateAuthorities")
    assert _verify(GITHUB_BUNDLE, GITHUB_WHEEL, GITHUB_IDENTITY, root) == (
        False,
        f"no certificate authority in the configured trusted root ({root}): cannot trust the "
        "signing certificate issued by CN=Fulcio Intermediate l2,O=GitHub\\, Inc.",
    )


def test_public_good_ca_with_githubs_tsa_does_not_trust_githubs_certificate(
    tmp_path: Path,
) -> None:
    root = json.loads(_public_good_json())
    root["timestampAuthorities"] = json.loads(GITHUB_ROOT.read_bytes())["timestampAuthorities"]
    path = tmp_path / "public-good-plus-github-tsa.json"
    path.write_text(json.dumps(root))
    assert _verify(GITHUB_BUNDLE, GITHUB_WHEEL, GITHUB_IDENTITY, path) == (
        False,
        f"no certificate authority in the configured trusted root ({path}) issued the signing "
        "certificate (issuer CN=Fulcio Intermediate l2,O=GitHub\\, Inc.) valid at "
        "2024-04-22T17:33:26Z",
    )


def test_github_attestation_for_another_file_is_a_digest_mismatch() -> None:
    data = NPM_TARBALL.read_bytes()
    assert _verify(GITHUB_BUNDLE, NPM_TARBALL, GITHUB_IDENTITY, GITHUB_ROOT) == (
        False,
        "in-toto subject does not name the artifact "
        f"(sha256:{hashlib.sha256(data).hexdigest()} or sha512:{hashlib.sha512(data).hexdigest()})",
    )


def test_github_attestation_with_another_signature_is_not_covered_by_its_timestamp(
    tmp_path: Path,
) -> None:
    bundle = json.loads(GITHUB_BUNDLE.read_bytes())
    npm = json.loads(NPM_BUNDLE.read_bytes())
    bundle["dsseEnvelope"]["signatures"] = npm["dsseEnvelope"]["signatures"]
    swapped = tmp_path / "swapped.sigstore.json"
    swapped.write_text(json.dumps(bundle))
    assert _verify(swapped, GITHUB_WHEEL, GITHUB_IDENTITY, GITHUB_ROOT) == (
        False, "the signed timestamp is not over the bundle's signature",
    )


def test_github_attestation_from_another_identity(tmp_path: Path) -> None:
    other = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1"
    assert _verify(GITHUB_BUNDLE, GITHUB_WHEEL, other, GITHUB_ROOT) == (
        False,
        f"expected identity {other} from issuer {ACTIONS}, "
        f"certificate names {GITHUB_IDENTITY} from issuer {ACTIONS}",
    )


# -- trusted-root files ----------------------------------------------------------------------


def test_githubs_root_loads_although_it_has_no_transparency_logs() -> None:
    root = TrustRoot.from_json(GITHUB_ROOT.read_bytes(), name="github")
    assert root.root is not None
    assert len(root.root.get_timestamp_authorities()) == 6


def test_json_lines_are_merged(gh_trusted_root: Path) -> None:
    root = TrustRoot.from_json(gh_trusted_root.read_bytes())
    assert root.root is not None
    inner = root.root._inner
    assert len(inner.certificate_authorities) == 2 + 6
    assert len(inner.tlogs) >= 1 and len(inner.timestamp_authorities) == 1 + 6


def test_a_broken_line_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(GITHUB_ROOT.read_text().replace("\n", "") + "\n{not json\n")
    with pytest.raises(ConfigurationError) as caught:
        TrustRoot.from_json(path.read_bytes(), name=str(path))
    assert caught.value.message == (
        f"{path} is neither a JSON trusted root nor one trusted root per line"
    )


def test_a_root_that_is_not_a_trusted_root_names_the_field() -> None:
    with pytest.raises(ConfigurationError) as caught:
        TrustRoot.from_json(b'{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1", "tlogs": [{}]}', name="root.json")
    assert caught.value.message.startswith("root.json is not a valid Sigstore trusted root: tlogs.0")


# -- the real entry point --------------------------------------------------------------------


def _cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatekeeper", "verify-bundle", *arguments],
        capture_output=True, text=True, timeout=120, cwd=REPOSITORY,
    )


def test_cli_exit_codes_for_the_github_attestation() -> None:
    common = ["--bundle", str(GITHUB_BUNDLE), "--certificate-identity", GITHUB_IDENTITY,
              "--certificate-oidc-issuer", ACTIONS]
    trusted = _cli(*common, "--trusted-root", str(GITHUB_ROOT), str(GITHUB_WHEEL))
    assert (trusted.returncode, trusted.stdout.strip()) == (0, "verified"), trusted.stderr
    untrusted = _cli(*common, str(GITHUB_WHEEL))
    assert untrusted.returncode == 1
    assert untrusted.stderr == (
        "rejected: no trusted timestamp authority in the configured trusted root "
        "(sigstore public-good) signed the bundle's timestamp\n"
    )


def test_cli_verifies_npm_provenance() -> None:
    result = _cli("--bundle", str(NPM_BUNDLE), "--certificate-identity", NPM_IDENTITY,
                  "--certificate-oidc-issuer", ACTIONS, str(NPM_TARBALL))
    assert (result.returncode, result.stdout.strip()) == (0, "verified"), result.stderr


def test_statement_subjects_match_by_either_algorithm() -> None:
    from gatekeeper.verify.bundle import statement_names_digest

    statement = json.loads(base64.b64decode(json.loads(NPM_BUNDLE.read_bytes())["dsseEnvelope"]["payload"]))
    sha512 = hashlib.sha512(NPM_TARBALL.read_bytes()).hexdigest()
    assert statement_names_digest(statement, "sha512", sha512)
    assert not statement_names_digest(statement, "sha256", sha512)
    assert not statement_names_digest(statement, "sha512", "0" * 128)
