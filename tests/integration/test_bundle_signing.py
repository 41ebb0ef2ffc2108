"""Served policy bundles are signed; the real OPA sidecar verifies them with its configured key.

The gatekeeper serves ``GET /v1/policies/bundle`` over loopback (uvicorn), a real ``opa run``
configured as the chart's sidecar (bundle service + ``keys`` + ``signing.keyid``) loads it.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from gatekeeper.policy.bundle_signing import file_hash
from tests.helpers.types import MakeSettings
from tests.integration.test_policy_lifecycle_sidecar import (
    bundle_revision,
    free_port,
    wait_for,
)


def _write_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path.chmod(0o600)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _member(archive: tarfile.TarFile, member: tarfile.TarInfo | str) -> bytes:
    extracted = archive.extractfile(member)
    assert extracted is not None, f"{member} is not a file in the bundle"
    return extracted.read()


@pytest.fixture(params=["RS256", "ES256"])
def signed_gate(
    request: pytest.FixtureRequest, tmp_path: Path, make_settings: MakeSettings
) -> Iterator[tuple[str, str, str]]:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
           if request.param == "RS256" else ec.generate_private_key(ec.SECP256R1()))
    public_pem = _write_key(tmp_path / "bundle-key.pem", key)
    settings = make_settings(bundle_signing_key_file=tmp_path / "bundle-key.pem",
                             bundle_signing_key_id="release-bundles")
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the gatekeeper to listen", timeout=60)
    try:
        yield f"http://127.0.0.1:{port}", public_pem, request.param
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _sidecar(
    opa_binary: str, tmp_path: Path, url: str, public_pem: str, algorithm: str
) -> tuple[subprocess.Popen[bytes], httpx.Client, Path]:
    port = free_port()
    config = {
        "services": {"gatekeeper": {"url": url}},
        "bundles": {"gatekeeper": {
            "service": "gatekeeper", "resource": "/v1/policies/bundle",
            "polling": {"min_delay_seconds": 1, "max_delay_seconds": 1},
            "signing": {"keyid": "release-bundles"},
        }},
        "keys": {"release-bundles": {"algorithm": algorithm, "key": public_pem}},
    }
    config_file = tmp_path / f"opa-{port}.json"
    config_file.write_text(json.dumps(config))
    log_path = tmp_path / f"sidecar-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [opa_binary, "run", "--server", "--addr", f"127.0.0.1:{port}", "--skip-version-check",
         "--config-file", str(config_file)],
        stdout=log, stderr=log,
    )
    return process, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5), log_path


def test_sidecar_loads_the_signed_bundle_with_its_key(
    signed_gate: tuple[str, str, str], opa_binary: str, tmp_path: Path
) -> None:
    url, public_pem, algorithm = signed_gate
    bundle = httpx.get(f"{url}/v1/policies/bundle")
    assert bundle.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(bundle.content), mode="r:gz") as archive:
        members = {m.name.lstrip("/"): _member(archive, m) for m in archive}
    signatures = json.loads(members.pop(".signatures.json"))
    token = signatures["signatures"][0]
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    payload = jwt.decode(token, public_pem, algorithms=[algorithm])
    assert payload["keyid"] == "release-bundles"
    assert {f["name"]: f["hash"] for f in payload["files"]} == {
        name: file_hash(name, content) for name, content in members.items()
    }
    revision = json.loads(members[".manifest"])["revision"]

    process, sidecar, _log = _sidecar(opa_binary, tmp_path, url, public_pem, algorithm)
    try:
        assert wait_for(lambda: bundle_revision(sidecar) == revision, "the verified bundle")
        answer = sidecar.post("/v1/data/gatekeeper/main/decision", json={"input": {
            "environment": "production", "images": []}}).json()
        assert "result" in answer
    finally:
        sidecar.close()
        process.terminate()
        process.wait(timeout=10)


def test_sidecar_with_another_key_refuses_the_bundle(
    signed_gate: tuple[str, str, str], opa_binary: str, tmp_path: Path
) -> None:
    url, _public_pem, algorithm = signed_gate
    other = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
             if algorithm == "RS256" else ec.generate_private_key(ec.SECP256R1()))
    other_pem = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    process, sidecar, log_path = _sidecar(opa_binary, tmp_path, url, other_pem, algorithm)
    try:
        refusal = "Bundle load failed: failed to verify JWT signature"
        wait_for(lambda: refusal in log_path.read_text(), "the sidecar to refuse", timeout=30)
        assert bundle_revision(sidecar) is None
    finally:
        sidecar.close()
        process.terminate()
        process.wait(timeout=10)


def test_file_hashes_match_what_opa_sign_computes(opa_binary: str, tmp_path: Path) -> None:
    """The canonical form of structured documents is the one the real ``opa sign`` hashes."""
    bundle = tmp_path / "bundle"
    (bundle / "gatekeeper" / "config").mkdir(parents=True)
    files = {
        ".manifest": b'{"roots": ["gatekeeper"],\n "revision": "r1"}',
        "main.rego": b"package gatekeeper.main\n\nallow := true\n",
        "gatekeeper/config/data.json": (
            '{"z": 1e3, "a": "<b>&\u00e9\\n\\t\\"q\\"", "n": [1.50, {"y": 2, "b": null}],'
            ' "t": true, "u": "\u2028"}'
        ).encode(),
    }
    for name, content in files.items():
        (bundle / name).write_bytes(content)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(tmp_path / "key.pem", key)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([opa_binary, "sign", "--signing-key", str(tmp_path / "key.pem"),
                    "--bundle", ".", "-o", str(out)], cwd=bundle, check=True, capture_output=True)
    token = json.loads((out / ".signatures.json").read_text())["signatures"][0]
    signed = {f["name"]: f["hash"] for f in jwt.decode(token, options={"verify_signature": False})["files"]}
    assert signed == {name: file_hash(name, content) for name, content in files.items()}


def test_an_uploaded_bundles_signatures_are_kept(client: TestClient, tmp_path: Path) -> None:
    from gatekeeper.policy.bundle import PolicyFiles, build_opa_bundle
    from gatekeeper.policy.bundle_signing import BundleSigner

    repo = Path(__file__).resolve().parents[2]
    shipped = PolicyFiles.from_directory(repo / "policies")
    extra = b"package gatekeeper.rules.extra\n\nimport rego.v1\n\ndeny contains msg if {\n" \
            b"\tinput.environment == \"nowhere\"\n\tmsg := \"nowhere\"\n}\n"
    candidate = PolicyFiles({**shipped.policies, "extra.rego": extra})
    bundle = build_opa_bundle(candidate, BundleSigner(ec.generate_private_key(ec.SECP256R1()),
                                                      "security-team"))
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as archive:
        sent = json.loads(_member(archive, "/.signatures.json"))
    answer = client.post("/v1/policies/revisions", content=bundle,
                         headers={"Content-Type": "application/gzip"})
    assert answer.status_code in (201, 422), answer.text  # an OPA bundle ships no tests
    revision = candidate.revision_id
    stored = client.get(f"/v1/policies/revisions/{revision}").json()
    assert stored["uploaded_signatures"] == sent

    broken = io.BytesIO()
    with tarfile.open(fileobj=broken, mode="w:gz") as archive:
        for name, content in {".manifest": b'{"revision": "x"}', "main.rego": extra,
                              ".signatures.json": b'{"signatures": "nope"}'}.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    refused = client.post("/v1/policies/revisions", content=broken.getvalue(),
                          headers={"Content-Type": "application/gzip"})
    assert refused.status_code == 422
    assert refused.json()["message"] == (
        '.signatures.json: .signatures.json must be {"signatures": ["<JWT>", ...]}')
