"""What ``gatekeeper verify`` with a key authority may not import (issue 18: the command's start
is mostly imports). A fresh interpreter builds what the command builds (settings from a YAML
file, the registry client, the signature collector) and checks one cosign simple-signing
signature made with the authority's key, then lists its modules. The same check over a real
registry and cosign signature: ``tests/integration/test_cli_signatures.py``."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parents[3]

#: Loaded only by keyless, bundle, transparency-log or Notation checks, by the server, or never.
FORBIDDEN = (
    "sigstore", "sigstore_models", "rekor_types", "tuf", "securesystemslib", "rfc3161_client",
    "requests", "urllib3", "rich", "pygments", "click", "boto3", "botocore", "cbor2",
    "cryptography.x509", "pydantic_settings", "httpx._main", "fastapi", "starlette",
    "sqlalchemy", "opentelemetry", "prometheus_client", "gatekeeper.wiring",
    "gatekeeper.verify.bundle", "gatekeeper.verify.keyless", "gatekeeper.verify.tlog",
    "gatekeeper.verify.identity", "gatekeeper.verify.notation",
    "gatekeeper.verify.notation_policy", "gatekeeper.verify.notation_envelope",
    "gatekeeper.verify.notation_x509", "gatekeeper.domain.ports.sbom",
    "gatekeeper.domain.ports.scans", "gatekeeper.domain.ports.vex",
)

SCRIPT = """
import json, sys
import gatekeeper.cli
from gatekeeper.cli.common import load_settings
from gatekeeper.domain import parse_digest
from gatekeeper.evidence_wiring import build_registry_client, build_signature_collector
from gatekeeper.verify import CosignVerifier, SignaturePolicySettings
from gatekeeper.verify.discovery import CosignSignature, Material

settings = load_settings()
registry = build_registry_client(settings)
collector = build_signature_collector(settings, registry)
assert collector is not None
authority = SignaturePolicySettings.from_mapping(settings.signatures).authority("release")
candidate = CosignSignature(
    payload=bytes.fromhex(sys.argv[2]), signature=bytes.fromhex(sys.argv[3]),
    certificate=None, chain=None, rekor_bundle=bytes.fromhex(sys.argv[4]) or None, source="test",
)
material = Material(signatures=(candidate,), attestations=(), bundles=(), sources=(), problems=())
# the command's own verifier, over the trust root the collector loaded as the command does
verifier = collector._verifier
assert isinstance(verifier, CosignVerifier)
result = verifier.verify(
    material, authority, parse_digest(sys.argv[1]), repository="127.0.0.1:5000/app",
)
print(json.dumps({
    "verified": result.verified,
    "tlog": [check.get("tlog") for check in result.as_evidence().get("signatures", [])],
    "modules": sorted(name for name, module in sys.modules.items() if module is not None),
}))
"""


def _shipped_root_with_log(log_key: ec.EllipticCurvePrivateKey) -> dict[str, object]:
    """The public-good trusted root (Fulcio CAs, CT logs, TSAs: all of it) with our own Rekor
    key as its only transparency log."""
    shipped = REPO / ".venv" / "lib"
    paths = sorted(shipped.glob(
        "python3*/site-packages/sigstore/_store/https%3A%2F%2Ftuf-repo-cdn.sigstore.dev/"
        "trusted_root.json"
    ))
    assert paths, "sigstore-python's shipped trusted root not found"
    document: dict[str, object] = json.loads(paths[0].read_bytes())
    der = log_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    document["tlogs"] = [{
        "baseUrl": "https://rekor.internal.example", "hashAlgorithm": "SHA2_256",
        "publicKey": {"rawBytes": base64.b64encode(der).decode(),
                      "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                      "validFor": {"start": "2020-01-01T00:00:00Z"}},
        "logId": {"keyId": base64.b64encode(hashlib.sha256(der).digest()).decode()},
    }]
    return document


def _rekor_bundle(
    log_key: ec.EllipticCurvePrivateKey, signature: bytes, payload: bytes, signer_pem: str
) -> bytes:
    body = {
        "apiVersion": "0.0.1", "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
            "signature": {"content": base64.b64encode(signature).decode(),
                          "publicKey": {"content": base64.b64encode(signer_pem.encode()).decode()}},
        },
    }
    der = log_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    entry = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "integratedTime": 1_700_000_000,
        "logID": hashlib.sha256(der).hexdigest(),
        "logIndex": 7,
    }
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    set_ = log_key.sign(canonical, ec.ECDSA(hashes.SHA256()))
    return json.dumps({"SignedEntryTimestamp": base64.b64encode(set_).decode(),
                       "Payload": entry}).encode()


@pytest.mark.parametrize("tlog", [False, True], ids=["tlog-false", "tlog-true"])
def test_a_key_based_check_loads_no_sigstore_notation_or_server_stack(
    tmp_path: Path, tlog: bool
) -> None:
    """With ``tlog: true`` the Rekor bundle's SET and body are checked against the trusted
    root's log key, still without sigstore-python or X.509 (issue 18)."""
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    digest = "sha256:" + "ab" * 32
    payload = json.dumps({
        "critical": {
            "identity": {"docker-reference": "127.0.0.1:5000/app"},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }).encode()
    signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    trusted_root = "none"
    bundle = b""
    if tlog:
        log_key = ec.generate_private_key(ec.SECP256R1())
        root_file = tmp_path / "trusted_root.json"
        root_file.write_text(json.dumps(_shipped_root_with_log(log_key)))
        trusted_root = str(root_file)
        bundle = _rekor_bundle(log_key, signature, payload, public_pem)
    config = tmp_path / "gatekeeper.yaml"
    config.write_text(yaml.safe_dump({
        "registry": {"hosts": [{"host": "127.0.0.1:5000", "plain_http": True}]},
        "signatures": {
            "authorities": [{"name": "release", "keys": [public_pem], "tlog": tlog}],
            "images": [{"glob": "127.0.0.1:5000/**", "authorities": ["release"]}],
            "version": 2,
        },
        "trusted_root": trusted_root,
        "ecr_auth": False,
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env.update(GATEKEEPER_CONFIG=str(config), PYTHONPATH=str(REPO))
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, digest, payload.hex(), signature.hex(), bundle.hex()],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout)
    assert answer["verified"] is True
    assert answer["tlog"] == (["verified"] if tlog else ["not-required"])
    assert "gatekeeper.verify.cosign_signer" in answer["modules"]  # the check really ran
    assert ("gatekeeper.verify.tlog" in answer["modules"]) is tlog
    allowed = {"gatekeeper.verify.tlog"} if tlog else set()
    loaded = sorted(
        name for name in answer["modules"]
        if name not in allowed
        and any(name == forbidden or name.startswith(forbidden + ".") for forbidden in FORBIDDEN)
    )
    assert loaded == []


def test_the_server_root_preloads_what_the_configuration_can_use(tmp_path: Path) -> None:
    """``wiring`` builds the collector with ``preload=True``: the bundle and transparency-log
    verifiers are imported at start, not inside the first evaluation's deadline; Notation only
    when an authority uses it."""
    config = tmp_path / "gatekeeper.yaml"
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    config.write_text(yaml.safe_dump({
        "signatures": {
            "authorities": [{"name": "release", "keys": [key], "tlog": False}],
            "images": [{"glob": "**", "authorities": ["release"]}],
            "version": 2,
        },
        "trusted_root": "none",
        "ecr_auth": False,
    }))
    script = (
        "import json, sys\n"
        "from gatekeeper.config import load_settings\n"
        "from gatekeeper.evidence_wiring import build_registry_client, "
        "build_signature_collector\n"
        "settings = load_settings()\n"
        "build_signature_collector(settings, build_registry_client(settings), "
        "preload=sys.argv[1] == 'yes')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env.update(GATEKEEPER_CONFIG=str(config), PYTHONPATH=str(REPO))
    loaded: dict[str, set[str]] = {}
    for preload in ("yes", "no"):
        completed = subprocess.run(
            [sys.executable, "-c", script, preload],
            capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
        )
        assert completed.returncode == 0, completed.stderr
        loaded[preload] = set(json.loads(completed.stdout))
    assert {"gatekeeper.verify.bundle", "gatekeeper.verify.tlog"} <= loaded["yes"]
    assert "gatekeeper.verify.notation" not in loaded["yes"]
    assert not {"gatekeeper.verify.bundle", "gatekeeper.verify.tlog"} & loaded["no"]


def test_settings_from_the_environment_alone_do_not_load_pyyaml(tmp_path: Path) -> None:
    """PyYAML is imported when a configuration file is read, not for settings given only by
    environment variables."""
    script = (
        "import json, sys\n"
        "from gatekeeper.config import load_settings\n"
        "settings = load_settings()\n"
        "print(json.dumps({'trusted_root': settings.trusted_root, "
        "'yaml': any(n == 'yaml' or n.startswith('yaml.') for n in sys.modules)}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env.update(GATEKEEPER_TRUSTED_ROOT="none", PYTHONPATH=str(REPO))
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"trusted_root": "none", "yaml": False}
