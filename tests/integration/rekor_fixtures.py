"""A Rekor of our own for tests and benchmarks against the real registry: cosign cannot reach a
transparency log here, so it signs offline (``--tlog-upload=false``) and this plays the log.

:meth:`PrivateLog.log_signature` writes the hashedrekord entry Rekor would record for the
signature of a ``.sig`` manifest, signs its SET (ECDSA P-256 over the canonical JSON of
``{body, integratedTime, logID, logIndex}``) and adds the ``dev.sigstore.cosign/bundle``
annotation to the layer, as cosign does when it uploads. :meth:`PrivateLog.trusted_root` is the
public-good trusted root shipped with sigstore-python (Fulcio CAs, CT logs, TSAs) with this log
as its only transparency log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gatekeeper.domain import Digest

REPO = Path(__file__).resolve().parents[2]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LOG_URL = "https://rekor.internal.example"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"


def _get(url: str, accept: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        data: bytes = answer.read()
        return data


def _put_manifest(url: str, manifest: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(manifest).encode(), method="PUT",
        headers={"Content-Type": OCI_MANIFEST},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        assert answer.status == 201


def shipped_trusted_root() -> dict[str, Any]:
    """sigstore-python's public-good ``trusted_root.json`` (read as a file)."""
    paths = sorted(REPO.glob(
        ".venv/lib/python3*/site-packages/sigstore/_store/"
        "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev/trusted_root.json"
    ))  # fmt: skip
    assert paths, "sigstore-python's shipped trusted root not found"
    document: dict[str, Any] = json.loads(paths[0].read_bytes())
    return document


class PrivateLog:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.log_id = hashlib.sha256(self.der).hexdigest()

    def trusted_root(self, path: Path, valid_for: dict[str, str] | None = None) -> Path:
        root = shipped_trusted_root()
        root["tlogs"] = [{
            "baseUrl": LOG_URL, "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": base64.b64encode(self.der).decode(),
                          "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                          "validFor": valid_for or {"start": "2020-01-01T00:00:00Z"}},
            "logId": {"keyId": base64.b64encode(hashlib.sha256(self.der).digest()).decode()},
        }]  # fmt: skip
        path.write_text(json.dumps(root))
        return path

    def bundle(
        self, payload: bytes, signature_b64: str, signer_pem: str, integrated_time: int
    ) -> dict[str, Any]:
        body = {
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256",
                                  "value": hashlib.sha256(payload).hexdigest()}},
                "signature": {"content": signature_b64, "publicKey": {
                    "content": base64.b64encode(signer_pem.encode()).decode()}},
            },
        }  # fmt: skip
        entry = {
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "integratedTime": integrated_time,
            "logID": self.log_id,
            "logIndex": 123456,
        }
        canonical = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
        set_ = self.key.sign(canonical, ec.ECDSA(hashes.SHA256()))
        return {"SignedEntryTimestamp": base64.b64encode(set_).decode(), "Payload": entry}

    def log_signature(
        self, host: str, repository: str, digest: Digest, signer_pem: str, *,
        integrated_time: int = 1_700_000_000,
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:  # fmt: skip
        """Add a Rekor bundle annotation to the cosign ``.sig`` manifest of ``digest``."""
        url = f"http://{host}/v2/{repository}/manifests/{digest.algorithm}-{digest.hex}.sig"
        manifest = json.loads(_get(url, OCI_MANIFEST))
        [layer] = manifest["layers"]
        payload = _get(f"http://{host}/v2/{repository}/blobs/{layer['digest']}")
        signature_b64 = layer["annotations"]["dev.cosignproject.cosign/signature"]
        bundle = self.bundle(payload, signature_b64, signer_pem, integrated_time)
        if edit is not None:
            edit(bundle)
        layer["annotations"][BUNDLE_ANNOTATION] = json.dumps(bundle)
        _put_manifest(url, manifest)
