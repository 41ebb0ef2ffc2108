"""Helpers for tests against the real registry and the real cosign CLI (imported explicitly).

``scripts/test-servers`` starts Debian's ``docker-registry`` on loopback and exports
``GATEKEEPER_TEST_REGISTRY`` (``127.0.0.1:PORT``), ``GATEKEEPER_COSIGN_V2`` and
``GATEKEEPER_COSIGN_V3``. Tests skip only when those are unset; CI always sets them.
Images are OCI layouts built here in Python and pushed with ``skopeo``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from gatekeeper.domain.reference import Digest, parse_digest
from gatekeeper.registry import OciRegistryClient, RegistryClientSettings

COSIGN_PASSWORD = "gatekeeper-test"  # noqa: S105 - a throwaway test key's password
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

#: A signing config with no Fulcio, Rekor or TSA: cosign v3 signs with the key, offline.
OFFLINE_SIGNING_CONFIG = {
    "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
    "caUrls": [],
    "oidcUrls": [],
    "rekorTlogUrls": [],
    "tsaUrls": [],
    "rekorTlogConfig": {"selector": "ANY"},
    "tsaConfig": {"selector": "ANY"},
}


def registry_host() -> str:
    host = os.environ.get("GATEKEEPER_TEST_REGISTRY")
    if not host:
        pytest.skip("GATEKEEPER_TEST_REGISTRY is not set (scripts/test-servers sets it)")
    return host


def cosign_binary(version: str) -> str:
    variable = f"GATEKEEPER_COSIGN_{version.upper()}"
    path = os.environ.get(variable)
    if not path:
        pytest.skip(f"{variable} is not set (scripts/test-servers sets it)")
    assert Path(path).is_file(), f"{variable}={path} does not exist"
    return path


def skopeo_binary() -> str:
    path = shutil.which("skopeo")
    assert path, "skopeo is required to push test images (apt-get install skopeo)"
    return path


def registry_client(host: str, **overrides: object) -> OciRegistryClient:
    settings = RegistryClientSettings.from_mapping(
        {"hosts": [{"host": host, "plain_http": True}], **overrides}
    )
    return OciRegistryClient(settings)


def unique_repository(prefix: str = "gk") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def _write_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def build_oci_layout(layout: Path, content: str) -> None:
    """A one-layer image whose only file is ``hello.txt`` with ``content``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = content.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime = len(data), 0
        archive.addfile(info, io.BytesIO(data))
    layer = _write_blob(layout, buffer.getvalue()) | {
        "mediaType": "application/vnd.oci.image.layer.v1.tar"
    }
    config_document = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
        "config": {},
    }
    config = _write_blob(layout, json.dumps(config_document).encode()) | {
        "mediaType": "application/vnd.oci.image.config.v1+json"
    }
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}
    descriptor = _write_blob(layout, json.dumps(manifest).encode()) | {"mediaType": OCI_MANIFEST}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')


def push_image(host: str, repository_tag: str, content: str, workdir: Path) -> Digest:
    """Build an OCI layout and push it with skopeo; return the digest the registry stores."""
    layout = workdir / f"layout-{uuid.uuid4().hex[:8]}"
    build_oci_layout(layout, content)
    digest_file = workdir / f"digest-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [
            skopeo_binary(), "copy", "--quiet", "--dest-tls-verify=false",
            "--digestfile", str(digest_file), f"oci:{layout}", f"docker://{host}/{repository_tag}",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return parse_digest(digest_file.read_text().strip())


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path

    @property
    def public_pem(self) -> str:
        return self.public.read_text()


def generate_key_pair(cosign: str, directory: Path) -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [cosign, "generate-key-pair"], cwd=directory, check=True, capture_output=True,
        env=_cosign_env(), timeout=60,
    )  # fmt: skip
    return KeyPair(directory / "cosign.key", directory / "cosign.pub")


def _cosign_env() -> dict[str, str]:
    return {
        **os.environ,
        "COSIGN_PASSWORD": COSIGN_PASSWORD,
        "COSIGN_YES": "true",
        "TUF_ROOT": os.environ.get("TUF_ROOT", "/tmp/gatekeeper-test-tuf"),  # noqa: S108
    }


def _offline_flags(cosign: str, workdir: Path) -> list[str]:
    if cosign.endswith("v3") or "cosign-v3" in cosign:
        config = workdir / "offline-signing-config.json"
        config.write_text(json.dumps(OFFLINE_SIGNING_CONFIG))
        return ["--signing-config", str(config)]
    return ["--tlog-upload=false"]


def cosign_sign(
    cosign: str, keys: KeyPair, image: str, workdir: Path, *, payload: Path | None = None
) -> None:
    arguments = [cosign, "sign", "--key", str(keys.private), "--allow-http-registry", "--yes"]
    arguments += _offline_flags(cosign, workdir)
    if payload is not None:
        arguments += ["--payload", str(payload)]
    _run_cosign([*arguments, image])


def cosign_attest(
    cosign: str, keys: KeyPair, image: str, workdir: Path, *, predicate_type: str, predicate: object
) -> None:
    predicate_file = workdir / f"predicate-{uuid.uuid4().hex[:8]}.json"
    predicate_file.write_text(json.dumps(predicate))
    arguments = [
        cosign, "attest", "--key", str(keys.private), "--allow-http-registry", "--yes",
        "--type", predicate_type, "--predicate", str(predicate_file),
    ]  # fmt: skip
    arguments += _offline_flags(cosign, workdir)
    _run_cosign([*arguments, image])


def cosign_verify(cosign: str, keys: KeyPair, image: str) -> subprocess.CompletedProcess[bytes]:
    arguments = [
        cosign, "verify", "--key", str(keys.public), "--allow-http-registry",
        "--insecure-ignore-tlog=true",
    ]  # fmt: skip
    return subprocess.run(
        [*arguments, image], capture_output=True, env=_cosign_env(), timeout=60, check=False
    )


def _run_cosign(arguments: list[str]) -> None:
    completed = subprocess.run(arguments, capture_output=True, env=_cosign_env(), timeout=120)
    assert completed.returncode == 0, (
        f"{' '.join(arguments[:2])} failed: {completed.stderr.decode(errors='replace')[-2000:]}"
    )


SLSA_V02_PREDICATE = {
    "builder": {"id": "https://ci.example.com/builders/trusted"},
    "buildType": "https://ci.example.com/build/v1",
    "invocation": {"configSource": {"uri": "git+https://git.example.com/app", "digest": {}}},
}
CYCLONEDX_PREDICATE = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.5",
    "version": 1,
    "components": [{"type": "library", "name": "left-pad", "version": "1.3.0"}],
}
