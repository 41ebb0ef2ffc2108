"""Helpers for tests against the real ``notation`` CLI and the loopback registry.

``scripts/test-servers`` exports ``GATEKEEPER_NOTATION`` (built by ``scripts/install-tools``).
Every CLI call runs with ``HOME`` and ``XDG_CONFIG_HOME`` under the test's own directory, so
keys, certificates and trust stores never leak into (or from) the machine's configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatekeeper.domain.reference import Digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def notation_binary() -> str:
    path = os.environ.get("GATEKEEPER_NOTATION")
    if not path:
        pytest.skip("GATEKEEPER_NOTATION is not set (scripts/test-servers sets it)")
    assert Path(path).is_file(), f"GATEKEEPER_NOTATION={path} does not exist"
    return path


@dataclass(frozen=True)
class NotationCli:
    """The real CLI with a private configuration directory."""

    binary: str
    home: Path

    @property
    def config_dir(self) -> Path:
        return self.home / ".config" / "notation"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTATION_")}
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"))
        return env

    def run(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [self.binary, *arguments], env=self._env(), capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert completed.returncode == 0, (
            f"notation {' '.join(arguments[:2])} failed: {completed.stderr[-2000:]}"
        )
        return completed

    def generate_test_key(self, name: str) -> str:
        """``notation cert generate-test NAME``: a self-signed RSA certificate (the CLI's local
        CA) and its key; returns the certificate PEM."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.run("cert", "generate-test", name)
        return (self.config_dir / "localkeys" / f"{name}.crt").read_text()

    def sign(
        self, image: str, *, key: str, signature_format: str, expiry: str | None = None
    ) -> None:
        arguments = ["sign", "--insecure-registry", "--key", key,
                     "--signature-format", signature_format]  # fmt: skip
        if expiry is not None:
            arguments += ["--expiry", expiry]
        self.run(*arguments, image)


class RegistryWriter:
    """Writes manifests and blobs to the plain-HTTP loopback registry (for tampered copies)."""

    def __init__(self, host: str) -> None:
        self.base = f"http://{host}/v2"
        self.client = httpx.Client(timeout=30)

    def close(self) -> None:
        self.client.close()

    def get_json(self, repository: str, reference: str, accept: str) -> dict[str, Any]:
        response = self.client.get(
            f"{self.base}/{repository}/manifests/{reference}", headers={"Accept": accept}
        )
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def get_blob(self, repository: str, digest: str) -> bytes:
        response = self.client.get(f"{self.base}/{repository}/blobs/{digest}")
        response.raise_for_status()
        return response.content

    def put_blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = self.client.post(f"{self.base}/{repository}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["Location"]
        if location.startswith("/"):
            location = self.base.rsplit("/v2", 1)[0] + location
        separator = "&" if "?" in location else "?"
        done = self.client.put(
            f"{location}{separator}digest={digest}", content=data,
            headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip
        assert done.status_code == 201, done.text
        return digest

    def put_manifest(
        self, repository: str, reference: str, document: dict[str, Any], media_type: str
    ) -> dict[str, Any]:
        data = json.dumps(document).encode()
        response = self.client.put(
            f"{self.base}/{repository}/manifests/{reference}", content=data,
            headers={"Content-Type": media_type},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        return {"mediaType": media_type, "size": len(data),
                "digest": "sha256:" + hashlib.sha256(data).hexdigest()}  # fmt: skip

    def add_signature(
        self, repository: str, subject: Digest, envelope: bytes, media_type: str
    ) -> None:
        """Store an envelope as a Notation signature of ``subject`` the way ``notation sign``
        does by default: a manifest with that subject, listed in the referrers tag index."""
        image = self.client.get(
            f"{self.base}/{repository}/manifests/{subject}", headers={"Accept": OCI_MANIFEST}
        )
        image.raise_for_status()
        empty = self.put_blob(repository, b"{}")
        layer = self.put_blob(repository, envelope)
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.cncf.notary.signature",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": media_type, "digest": layer, "size": len(envelope)}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": str(subject),
                        "size": len(image.content)},
        }  # fmt: skip
        written = self.put_manifest(repository, _digest_reference(manifest), manifest,
                                    OCI_MANIFEST)  # fmt: skip
        descriptor = written | {"artifactType": "application/vnd.cncf.notary.signature"}
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}
        self.put_manifest(repository, subject.cosign_tag_prefix, index, OCI_INDEX)

    def replace_signatures(
        self, repository: str, subject: Digest, change_envelope: Any
    ) -> None:
        """Rewrite every Notation signature of ``subject`` through ``change_envelope(bytes)``
        and point the referrers tag at the rewritten manifests only."""
        tag = subject.cosign_tag_prefix
        index = self.get_json(repository, tag, OCI_INDEX)
        descriptors = []
        for descriptor in index["manifests"]:
            manifest = self.get_json(repository, descriptor["digest"], OCI_MANIFEST)
            layer = manifest["layers"][0]
            changed = change_envelope(self.get_blob(repository, layer["digest"]))
            layer["digest"] = self.put_blob(repository, changed)
            layer["size"] = len(changed)
            written = self.put_manifest(repository, _digest_reference(manifest), manifest,
                                        OCI_MANIFEST)  # fmt: skip
            descriptors.append(descriptor | {"digest": written["digest"], "size": written["size"]})
        self.put_manifest(repository, tag, index | {"manifests": descriptors}, OCI_INDEX)


def _digest_reference(document: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(document).encode()).hexdigest()
