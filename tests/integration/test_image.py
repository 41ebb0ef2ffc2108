"""The project's own container image, built by ``scripts/build-image`` with no Docker daemon.

One build per session (the Debian rootfs is cached by ``scripts/build-image``), pushed to the
loopback registry, signed, with its SBOM and SLSA provenance attested by the real cosign. The
tests read what a cluster would see: the pushed manifest and config (``skopeo``), the image run
with ``buildah run`` (chroot isolation), and the attestations (``cosign verify-attestation``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.app import evaluated
from tests.helpers.types import MakeSettings
from tests.integration.cosign_fixtures import (
    COSIGN_PASSWORD,
    KeyPair,
    cosign_binary,
    generate_key_pair,
    registry_host,
)

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.image]


@dataclass(frozen=True)
class BuiltImage:
    reference: str          # host/repository@sha256:…
    repository: str         # host/repository
    digest: str
    out: Path               # SBOM, provenance, OCI archive
    keys: KeyPair
    build_log: str
    cosign: str             # read before make_settings clears the GATEKEEPER_* environment


def _storage_args() -> list[str]:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "forge-gatekeeper"
    return ["--storage-driver", "vfs", "--root", str(cache / "containers/storage"),
            "--runroot", str(cache / "containers/run")]


def build(target: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    if not (shutil.which("buildah") and shutil.which("mmdebstrap")):
        pytest.fail("buildah and mmdebstrap are required: scripts/install-tools --test installs them")
    return subprocess.run(
        [str(REPO / "scripts" / "build-image"), "--target", target, "--out", str(out), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
        env=os.environ | {"COSIGN_PASSWORD": COSIGN_PASSWORD},
    )


@pytest.fixture(scope="session")
def gatekeeper_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    host = registry_host()
    cosign = cosign_binary("v2")
    work = tmp_path_factory.mktemp("image")
    keys = generate_key_pair(cosign, work / "keys")
    repository = f"{host}/forge/gatekeeper"
    result = build("gatekeeper", work / "out", "--push", repository, "--plain-http",
                   "--sign-key", str(keys.private))
    assert result.returncode == 0, result.stderr
    reference = result.stdout.strip()
    digest = reference.rsplit("@", 1)[1]
    return BuiltImage(reference, repository, digest, work / "out", keys, result.stderr, cosign)


def skopeo_inspect(reference: str, *flags: str) -> dict[str, Any]:
    output = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", *flags, f"docker://{reference}"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    document: dict[str, Any] = json.loads(output)
    return document


def test_image_runs_as_non_root_without_a_shell_entrypoint_and_says_what_it_is(
    gatekeeper_image: BuiltImage,
) -> None:
    config = skopeo_inspect(gatekeeper_image.reference, "--config")
    runtime = config["config"]
    assert runtime["User"] == "65532:65532"
    assert runtime["Entrypoint"] == ["/usr/local/bin/gatekeeper"]
    assert runtime["Cmd"] == ["serve", "--host", "0.0.0.0", "--port", "8443"]
    labels = runtime["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.source"] == "https://github.com/forge/gatekeeper"
    assert len(labels["org.opencontainers.image.revision"]) == 40
    assert labels["dev.forge.gatekeeper.opa-version"] == "1.22.2"
    env = dict(item.split("=", 1) for item in runtime["Env"])
    assert env["GATEKEEPER_OPA_BINARY"] == "/usr/local/bin/opa"
    assert env["GATEKEEPER_POLICY_DIR"] == "/app/policies"


def test_the_image_runs_the_gatekeeper_and_the_pinned_opa(gatekeeper_image: BuiltImage) -> None:
    name = "localhost/forge/gatekeeper:0.1.0"
    container = subprocess.run(["buildah", *_storage_args(), "from", "--pull-never", name],
                               check=True, capture_output=True, text=True).stdout.strip()
    try:
        def run(*command: str) -> str:
            return subprocess.run(
                ["buildah", *_storage_args(), "run", "--isolation", "chroot", "--user",
                 "65532:65532", container, "--", *command],
                check=True, capture_output=True, text=True, timeout=120,
            ).stdout

        assert "Usage" in run("/usr/local/bin/gatekeeper", "--help")
        assert "Version: 1.22.2" in run("/usr/local/bin/opa", "version")
        # The shipped policies pass their own tests with the opa inside the image.
        assert "PASS" in run("/usr/local/bin/opa", "test", "/app/policies", "/app/rego-tests")
    finally:
        subprocess.run(["buildah", *_storage_args(), "rm", container], capture_output=True)


def test_sbom_lists_the_debian_python_and_opa_packages_of_the_image(
    gatekeeper_image: BuiltImage,
) -> None:
    sbom = json.loads((gatekeeper_image.out / "sbom.cdx.json").read_text())
    assert sbom["specVersion"] == "1.6"
    subject = sbom["metadata"]["component"]
    assert subject["hashes"] == [{"alg": "SHA-256", "content": gatekeeper_image.digest[7:]}]
    purls = {component["purl"] for component in sbom["components"]}
    assert any(purl.startswith("pkg:deb/debian/python3.11-minimal@") for purl in purls)
    assert any(purl.startswith("pkg:pypi/sigstore@") for purl in purls)
    assert any(purl.startswith("pkg:pypi/fastapi@") for purl in purls)
    assert "pkg:golang/github.com/open-policy-agent/opa@v1.22.2" in purls
    # The validator the gatekeeper applies to every SBOM accepts its own.
    result = subprocess.run(
        [str(REPO / ".venv/bin/gatekeeper"), "sbom", "validate",
         str(gatekeeper_image.out / "sbom.cdx.json")],
        capture_output=True, text=True, timeout=120, env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_signature_sbom_and_provenance_are_attested_to_the_pushed_digest(
    gatekeeper_image: BuiltImage,
) -> None:
    cosign = cosign_binary("v2")
    common = ["--key", str(gatekeeper_image.keys.public), "--allow-http-registry",
              "--insecure-ignore-tlog=true"]
    subprocess.run([cosign, "verify", *common, gatekeeper_image.reference],
                   check=True, capture_output=True, timeout=120)
    for kind, check in (("cyclonedx", "components"), ("slsaprovenance1", "buildDefinition")):
        result = subprocess.run(
            [cosign, "verify-attestation", *common, "--type", kind, gatekeeper_image.reference],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        envelope = json.loads(result.stdout.splitlines()[0])
        statement = json.loads(base64.b64decode(envelope["payload"]))
        assert statement["subject"][0]["digest"] == {"sha256": gatekeeper_image.digest[7:]}
        assert check in statement["predicate"]
    provenance = json.loads((gatekeeper_image.out / "provenance.json").read_text())
    assert provenance["runDetails"]["builder"]["id"] == (
        "https://github.com/forge/gatekeeper/scripts/build-image@v1")


def test_same_inputs_build_the_same_digest(gatekeeper_image: BuiltImage, tmp_path: Path) -> None:
    again = build("gatekeeper", tmp_path / "again")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "digest").read_text().strip() == (
        gatekeeper_image.out / "digest").read_text().strip()


def test_opa_sidecar_image_is_the_pinned_static_opa_alone(tmp_path: Path) -> None:
    host = registry_host()
    result = build("opa", tmp_path / "opa", "--push", f"{host}/forge/opa", "--plain-http")
    assert result.returncode == 0, result.stderr
    reference = result.stdout.strip()
    assert reference.startswith(f"{host}/forge/opa@sha256:")
    config = skopeo_inspect(reference, "--config")
    assert config["config"]["Entrypoint"] == ["/opa"]
    assert config["config"]["User"] == "65532:65532"
    manifest = skopeo_inspect(reference, "--raw")
    assert len(manifest["layers"]) == 1
    assert config["config"]["Labels"]["org.opencontainers.image.version"] == "1.22.2"


# ---- the project gates itself --------------------------------------------------------------------
BUILDER_ID = "https://github.com/forge/gatekeeper/scripts/build-image@v1"


@pytest.fixture
def own_gate(
    make_settings: MakeSettings, gatekeeper_image: BuiltImage, policy_dir: Path
) -> Iterator[TestClient]:
    """The gatekeeper as production builds it, trusting the release key that signed the image and
    allowing the build script's builder id (the shipped rules; data configured as a user would)."""
    from fastapi.testclient import TestClient

    from gatekeeper.app import create_app

    host = gatekeeper_image.repository.split("/", 1)[0]
    data_file = policy_dir / "data.json"
    data = json.loads(data_file.read_text())
    # added beside the shipped builders (the shipped rego-tests check those still match)
    data["gatekeeper"]["config"]["signatures"]["environments"]["production"][
        "allowed_builders"].append(BUILDER_ID)
    data_file.write_text(json.dumps(data))
    settings = make_settings(
        registry={"hosts": [{"host": host, "plain_http": True}]},
        signatures={
            "authorities": [{"name": "release", "keys": [gatekeeper_image.keys.public_pem],
                             "tlog": False}],
            "images": [{"glob": f"{host}/**", "authorities": ["release"]}],
        },
        policy_watch_interval_seconds=0,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def copy_image(source: str, repository: str) -> str:
    """The same image bytes under another repository, without its signature or attestations."""
    digest_file = Path(subprocess.run(["mktemp"], capture_output=True, text=True,
                                      check=True).stdout.strip())
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
         "--preserve-digests", "--digestfile", str(digest_file), f"docker://{source}",
         f"docker://{repository}:0.1.0"],
        check=True, capture_output=True, timeout=300,
    )
    return f"{repository}@{digest_file.read_text().strip()}"


def evaluate(client: TestClient, image: str) -> dict[str, Any]:
    return evaluated(client, {
        "images": [image], "environment": "production", "namespace": "gatekeeper-system"})


def messages(decision: dict[str, Any]) -> list[str]:
    return [v["message"] for v in decision["violations"]]


def test_its_own_production_policy_allows_the_signed_attested_image(
    own_gate: TestClient, gatekeeper_image: BuiltImage,
) -> None:
    decision = evaluate(own_gate, gatekeeper_image.reference)
    assert decision["verdict"] == "allow", messages(decision)
    assert decision["violations"] == []


def test_each_missing_proof_is_denied_with_its_reason(
    own_gate: TestClient, gatekeeper_image: BuiltImage, tmp_path: Path,
) -> None:
    from tests.integration.cosign_fixtures import cosign_attest, cosign_sign

    cosign = gatekeeper_image.cosign
    host = gatekeeper_image.repository.split("/", 1)[0]
    sbom = json.loads((gatekeeper_image.out / "sbom.cdx.json").read_text())
    provenance = json.loads((gatekeeper_image.out / "provenance.json").read_text())

    unsigned = copy_image(gatekeeper_image.reference, f"{host}/forge/unsigned")
    decision = evaluate(own_gate, unsigned)
    assert decision["verdict"] == "deny"
    assert any("no signature found" in m for m in messages(decision)), messages(decision)

    no_sbom = copy_image(gatekeeper_image.reference, f"{host}/forge/no-sbom")
    cosign_sign(cosign, gatekeeper_image.keys, no_sbom, tmp_path)
    cosign_attest(cosign, gatekeeper_image.keys, no_sbom, tmp_path,
                  predicate_type="slsaprovenance1", predicate=provenance)
    decision = evaluate(own_gate, no_sbom)
    assert decision["verdict"] == "deny"
    assert any("an SBOM is required in production" in m for m in messages(decision)), (
        messages(decision))

    no_provenance = copy_image(gatekeeper_image.reference, f"{host}/forge/no-provenance")
    cosign_sign(cosign, gatekeeper_image.keys, no_provenance, tmp_path)
    cosign_attest(cosign, gatekeeper_image.keys, no_provenance, tmp_path,
                  predicate_type="cyclonedx", predicate=sbom)
    decision = evaluate(own_gate, no_provenance)
    assert decision["verdict"] == "deny"
    assert any("provenance" in m for m in messages(decision)), messages(decision)
    assert not any("SBOM" in m for m in messages(decision)), messages(decision)
