"""Fixtures for verifier unit tests: keys, a private Rekor key in a trusted root, an in-memory
registry implementing the verifier's ``RegistryReader`` port, and cosign-shaped material."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gatekeeper.domain.ports import RegistryReader
from gatekeeper.domain.reference import Digest, ImageReference
from gatekeeper.errors import NotFoundError, UpstreamUnavailableError
from gatekeeper.verify.trust import TrustRoot

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
NOTATION_SIGNATURE = "application/vnd.cncf.notary.signature"


def pem_of(private_key: ec.EllipticCurvePrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def simple_signing_payload(digest: Digest, reference: str = "example.com/app") -> bytes:
    return json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": str(digest)},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()


def sign(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return private_key.sign(data, ec.ECDSA(hashes.SHA256()))


@dataclass
class PrivateRekor:
    """A Rekor log key of our own, in a trusted root; it issues SETs like rekor.sigstore.dev."""

    key: ec.EllipticCurvePrivateKey
    trust: TrustRoot

    @property
    def log_id(self) -> str:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()

    def hashedrekord_bundle(
        self,
        signature: bytes,
        payload: bytes,
        signer_pem: str,
        *,
        integrated_time: int = 1_700_000_000,
    ) -> bytes:
        body = {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256",
                                  "value": hashlib.sha256(payload).hexdigest()}},
                "signature": {
                    "content": base64.b64encode(signature).decode(),
                    "publicKey": {"content": base64.b64encode(signer_pem.encode()).decode()},
                },
            },
        }  # fmt: skip
        return self.bundle_for_body(body, integrated_time=integrated_time)

    def bundle_for_body(self, body: Mapping[str, Any], *, integrated_time: int) -> bytes:
        payload: dict[str, str | int] = {
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "integratedTime": integrated_time,
            "logID": self.log_id,
            "logIndex": 42,
        }
        signed_entry_timestamp = sign(self.key, rfc8785.dumps(payload))
        return json.dumps(
            {
                "SignedEntryTimestamp": base64.b64encode(signed_entry_timestamp).decode(),
                "Payload": payload,
            }
        ).encode()


@pytest.fixture(scope="session")
def private_rekor() -> PrivateRekor:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    shipped = resources.files("sigstore").joinpath(
        "_store", "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev", "trusted_root.json"
    )
    document = json.loads(shipped.read_bytes())
    document["tlogs"] = [
        {
            "baseUrl": "https://rekor.internal.example",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": base64.b64encode(der).decode(),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            },
            "logId": {"keyId": base64.b64encode(hashlib.sha256(der).digest()).decode()},
        }
    ]
    return PrivateRekor(key, TrustRoot.from_json(json.dumps(document).encode(), name="private"))


@dataclass(frozen=True)
class FakeDescriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    artifact_type: str | None = None


@dataclass(frozen=True)
class FakeManifest:
    digest: Digest
    media_type: str
    layers: tuple[FakeDescriptor, ...] = ()
    manifests: tuple[FakeDescriptor, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    artifact_type: str | None = None
    subject: FakeDescriptor | None = None
    config: FakeDescriptor | None = None
    content: bytes = b""


@dataclass(frozen=True)
class FakeReferrers:
    manifests: tuple[FakeDescriptor, ...]
    via: str


class InMemoryRegistry(RegistryReader):
    """Implements ``gatekeeper.domain.ports.registry.RegistryReader`` over dictionaries."""

    def __init__(self) -> None:
        self.tags: dict[str, FakeManifest] = {}
        self.blobs: dict[str, bytes] = {}
        self.failures_left = 0
        self.calls = 0
        self.referrers: list[FakeDescriptor] = []

    def add_blob(self, data: bytes) -> FakeDescriptor:
        digest = Digest("sha256", hashlib.sha256(data).hexdigest())
        self.blobs[str(digest)] = data
        return FakeDescriptor(SIMPLE_SIGNING, digest, len(data))

    def add_signature(self, digest: Digest, payload: bytes, signature: bytes,
                      **annotations: str) -> None:  # fmt: skip
        blob = self.add_blob(payload)
        layer = FakeDescriptor(
            SIMPLE_SIGNING, blob.digest, blob.size,
            MappingProxyType({"dev.cosignproject.cosign/signature":
                              base64.b64encode(signature).decode(), **annotations}),
        )  # fmt: skip
        tag = f"{digest.cosign_tag_prefix}.sig"
        existing = self.tags.get(tag)
        layers = (existing.layers if existing else ()) + (layer,)
        self.tags[tag] = FakeManifest(
            Digest("sha256", "0" * 64), "application/vnd.oci.image.manifest.v1+json", layers
        )

    def add_image(self, content: bytes) -> Digest:
        """An image manifest (``content`` as served), findable by its digest."""
        digest = Digest("sha256", hashlib.sha256(content).hexdigest())
        self.tags[str(digest)] = FakeManifest(digest, OCI_MANIFEST, content=content)
        return digest

    def add_notation_signature(self, subject: Digest, envelope: bytes, media_type: str) -> None:
        """A Notation signature manifest referring to ``subject``, listed by the referrers API."""
        blob = self.add_blob(envelope)
        manifest_digest = Digest("sha256", hashlib.sha256(envelope + b"manifest").hexdigest())
        image = self.tags[str(subject)]
        self.tags[str(manifest_digest)] = FakeManifest(
            manifest_digest, OCI_MANIFEST,
            layers=(FakeDescriptor(media_type, blob.digest, blob.size),),
            artifact_type=NOTATION_SIGNATURE,
            subject=FakeDescriptor(image.media_type, subject, len(image.content)),
            config=FakeDescriptor("application/vnd.oci.empty.v1+json", Digest("sha256", "4" * 64), 2),
        )  # fmt: skip
        self.referrers.append(
            FakeDescriptor(OCI_MANIFEST, manifest_digest, 700, artifact_type=NOTATION_SIGNATURE)
        )

    def _tick(self) -> None:
        self.calls += 1
        if self.failures_left:
            self.failures_left -= 1
            raise UpstreamUnavailableError("registry fake answered 503 (after 3 attempts)")

    def resolve_digest(self, reference: ImageReference, *, deadline: float | None = None) -> Digest:
        self._tick()
        raise NotFoundError("not used")

    def get_manifest(self, reference: ImageReference, target: str | Digest, *,
                     deadline: float | None = None) -> FakeManifest:  # fmt: skip
        found = self.find_manifest(reference, target, deadline=deadline)
        if found is None:
            raise NotFoundError(f"manifest {target} not found")
        return found

    def find_manifest(self, reference: ImageReference, target: str | Digest, *,
                      deadline: float | None = None) -> FakeManifest | None:  # fmt: skip
        self._tick()
        return self.tags.get(str(target))

    def get_blob(self, reference: ImageReference, digest: Digest, *, size: int | None = None,
                 max_bytes: int | None = None, deadline: float | None = None) -> bytes:  # fmt: skip
        self._tick()
        return self.blobs[str(digest)]

    def get_referrers(self, reference: ImageReference, digest: Digest, *,
                      artifact_type: str | None = None,
                      deadline: float | None = None) -> FakeReferrers:  # fmt: skip
        self._tick()
        if not self.referrers:
            return FakeReferrers((), "none")
        return FakeReferrers(tuple(self.referrers), "referrers-api")


@pytest.fixture
def registry() -> InMemoryRegistry:
    return InMemoryRegistry()


@pytest.fixture(scope="session")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def other_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())
