"""Finding cosign material for an image digest in its repository.

Three places, all read (cosign v2 writes the first two, cosign v3 the third by default):

* ``sha256-<hex>.sig``: an image manifest whose layers are simple-signing payloads, each with
  ``dev.cosignproject.cosign/signature`` and optionally ``dev.sigstore.cosign/certificate``,
  ``.../chain`` and ``.../bundle`` (the Rekor SET) annotations;
* ``sha256-<hex>.att``: the same with DSSE envelopes (in-toto attestations) as layers;
* referrers of the digest (OCI 1.1 API, or the ``sha256-<hex>`` index tag fallback) whose
  artifact type is a Sigstore bundle; the bundle's DSSE statement says whether it is a
  signature (predicate ``https://sigstore.dev/cosign/sign/v1``) or an attestation.

The same referrers listing yields Notation signatures (artifact type
``application/vnd.cncf.notary.signature``): a manifest whose subject is the digest and whose one
layer is a JWS (``application/jose+json``) or COSE (``application/cose``) envelope.

Material that is unusable (too big, malformed) is recorded as a *problem* and skipped, so a
broken item never hides a good one; transient registry errors propagate (never cached).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from gatekeeper.domain.ports.attestations import OversizedAttestation
from gatekeeper.domain.ports.registry import DescriptorView, RegistryReader
from gatekeeper.domain.reference import Digest, ImageReference
from gatekeeper.errors import InvalidInputError, NotFoundError, VerificationError

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "NOTATION_ARTIFACT_TYPE",
    "BundleArtifact",
    "CosignAttestation",
    "CosignSignature",
    "Material",
    "NotationSignature",
    "OversizedAttestation",
    "decode_standard_base64",
    "find_material",
]

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
_BUNDLE_MEDIA_PREFIX = "application/vnd.dev.sigstore.bundle"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
REKOR_BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
BUNDLE_PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
NOTATION_ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
NOTATION_ENVELOPE_TYPES = frozenset({"application/jose+json", "application/cose"})
#: cosign v2 annotates ``.att`` layers with the predicate type (unsigned: a claim only).
PREDICATE_TYPE_ANNOTATION = "predicateType"


def decode_standard_base64(text: str) -> bytes:
    """Standard base64 as Go's ``base64.StdEncoding`` decodes it (what cosign reads): padding
    required, no other alphabet, but carriage returns and newlines anywhere are ignored, so a
    line-wrapped annotation decodes. Raises ``binascii.Error`` for anything else."""
    return base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)


@dataclass(frozen=True, slots=True)
class CosignSignature:
    """One layer of a ``.sig`` manifest: a simple-signing payload and its signature."""

    payload: bytes
    signature: bytes
    certificate: bytes | None
    chain: bytes | None
    rekor_bundle: bytes | None
    source: str


@dataclass(frozen=True, slots=True)
class CosignAttestation:
    """One layer of an ``.att`` manifest: a DSSE envelope (JSON)."""

    envelope: bytes
    certificate: bytes | None
    chain: bytes | None
    rekor_bundle: bytes | None
    source: str


@dataclass(frozen=True, slots=True)
class BundleArtifact:
    """A Sigstore bundle attached as a referrer of the image."""

    bundle: bytes
    predicate_type: str | None
    source: str


@dataclass(frozen=True, slots=True)
class NotationSignature:
    """One Notation signature manifest that refers to the image: its envelope, unverified."""

    envelope: bytes
    media_type: str
    manifest_digest: str
    source: str


@dataclass(frozen=True, slots=True)
class Material:
    signatures: tuple[CosignSignature, ...]
    attestations: tuple[CosignAttestation, ...]
    bundles: tuple[BundleArtifact, ...]
    sources: tuple[str, ...]
    problems: tuple[str, ...]
    oversized: tuple[OversizedAttestation, ...] = ()
    notation: tuple[NotationSignature, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.signatures or self.attestations or self.bundles)


def find_material(
    registry: RegistryReader,
    reference: ImageReference,
    digest: Digest,
    *,
    max_payload_bytes: int,
    max_items: int,
    deadline: float | None,
) -> Material:
    """Collect every signature/attestation candidate for ``digest`` in ``reference``'s repo."""
    repository = ImageReference(
        reference.original, reference.registry, reference.repository, None, digest
    )
    finder = _Finder(registry, repository, max_payload_bytes, max_items, deadline)
    finder.tagged(f"{digest.cosign_tag_prefix}.sig", "sig-tag")
    finder.tagged(f"{digest.cosign_tag_prefix}.att", "att-tag")
    finder.referrers(digest)
    return Material(
        tuple(finder.signatures),
        tuple(finder.attestations),
        tuple(finder.bundles),
        tuple(finder.sources),
        tuple(finder.problems),
        tuple(finder.oversized),
        tuple(finder.notation),
    )


class _Finder:
    def __init__(
        self,
        registry: RegistryReader,
        reference: ImageReference,
        max_payload_bytes: int,
        max_items: int,
        deadline: float | None,
    ) -> None:
        self.registry = registry
        self.reference = reference
        self.max_payload_bytes = max_payload_bytes
        self.max_items = max_items
        self.deadline = deadline
        self.signatures: list[CosignSignature] = []
        self.attestations: list[CosignAttestation] = []
        self.bundles: list[BundleArtifact] = []
        self.sources: list[str] = []
        self.problems: list[str] = []
        self.oversized: list[OversizedAttestation] = []
        self.notation: list[NotationSignature] = []
        self.count = 0

    def _room(self, where: str) -> bool:
        if self.count >= self.max_items:
            self.problems.append(f"{where}: more than {self.max_items} items, the rest ignored")
            return False
        self.count += 1
        return True

    def tagged(self, tag: str, source: str) -> None:
        try:
            manifest = self.registry.find_manifest(self.reference, tag, deadline=self.deadline)
        except VerificationError as exc:
            self.problems.append(f"{tag}: {exc.message}")
            return
        if manifest is None:
            return
        self.sources.append(source)
        for index, layer in enumerate(manifest.layers):
            where = f"{tag} layer {index}"
            if not self._room(tag):
                return
            try:
                if layer.media_type == SIMPLE_SIGNING_MEDIA_TYPE:
                    self.signatures.append(self._signature(layer, source))
                elif layer.media_type == DSSE_MEDIA_TYPE:
                    self._note_size(layer.annotations.get(PREDICATE_TYPE_ANNOTATION), layer, source)
                    self.attestations.append(
                        CosignAttestation(
                            self._blob(layer),
                            _annotation_bytes(layer, CERTIFICATE_ANNOTATION),
                            _annotation_bytes(layer, CHAIN_ANNOTATION),
                            _annotation_bytes(layer, REKOR_BUNDLE_ANNOTATION),
                            source,
                        )
                    )
                else:
                    self.problems.append(f"{where}: unexpected media type {layer.media_type}")
            except (VerificationError, InvalidInputError, NotFoundError) as exc:
                self.problems.append(f"{where}: {exc.message}")

    def _signature(self, layer: DescriptorView, source: str) -> CosignSignature:
        encoded = layer.annotations.get(SIGNATURE_ANNOTATION)
        if not encoded:
            raise InvalidInputError("signature annotation missing")
        try:
            signature = decode_standard_base64(encoded)
        except binascii.Error as exc:
            raise InvalidInputError("signature annotation is not base64") from exc
        return CosignSignature(
            self._blob(layer),
            signature,
            _annotation_bytes(layer, CERTIFICATE_ANNOTATION),
            _annotation_bytes(layer, CHAIN_ANNOTATION),
            _annotation_bytes(layer, REKOR_BUNDLE_ANNOTATION),
            source,
        )

    def _note_size(self, predicate_type: str | None, layer: DescriptorView, source: str) -> None:
        if layer.size > self.max_payload_bytes:
            self.oversized.append(
                OversizedAttestation(predicate_type, layer.size, self.max_payload_bytes, source)
            )

    def _blob(self, layer: DescriptorView) -> bytes:
        if layer.size > self.max_payload_bytes:
            raise InvalidInputError(
                f"payload of {layer.size} bytes exceeds the limit of {self.max_payload_bytes}"
            )
        return self.registry.get_blob(
            self.reference,
            layer.digest,
            size=layer.size,
            max_bytes=self.max_payload_bytes,
            deadline=self.deadline,
        )

    def referrers(self, digest: Digest) -> None:
        try:
            index = self.registry.get_referrers(self.reference, digest, deadline=self.deadline)
        except VerificationError as exc:
            self.problems.append(f"referrers of {digest}: {exc.message}")
            return
        if not index.manifests:
            return
        self.sources.append(index.via)
        for descriptor in index.manifests:
            artifact_type = descriptor.artifact_type or ""
            if artifact_type == NOTATION_ARTIFACT_TYPE:
                if self._room(f"referrers of {digest}"):
                    self._notation(descriptor, digest, index.via)
                continue
            if not artifact_type.startswith(_BUNDLE_MEDIA_PREFIX):
                continue  # SBOMs and other referrers belong to other collectors
            if not self._room(f"referrers of {digest}"):
                return
            where = f"referrer {descriptor.digest}"
            try:
                manifest = self.registry.get_manifest(
                    self.reference, descriptor.digest, deadline=self.deadline
                )
                if manifest.subject is not None and manifest.subject.digest != digest:
                    self.problems.append(f"{where}: its subject is another digest")
                    continue
                layers = [
                    layer
                    for layer in manifest.layers
                    if layer.media_type.startswith(_BUNDLE_MEDIA_PREFIX)
                ]
                if len(layers) != 1:
                    self.problems.append(f"{where}: expected exactly one bundle layer")
                    continue
                predicate_type = manifest.annotations.get(BUNDLE_PREDICATE_ANNOTATION)
                self._note_size(predicate_type, layers[0], index.via)
                self.bundles.append(
                    BundleArtifact(
                        self._blob(layers[0]),
                        manifest.annotations.get(BUNDLE_PREDICATE_ANNOTATION),
                        index.via,
                    )
                )
            except (VerificationError, InvalidInputError, NotFoundError) as exc:
                self.problems.append(f"{where}: {exc.message}")

    def _notation(self, descriptor: DescriptorView, digest: Digest, via: str) -> None:
        where = f"notation signature {descriptor.digest}"
        try:
            manifest = self.registry.get_manifest(
                self.reference, descriptor.digest, deadline=self.deadline
            )
            if manifest.subject is None or manifest.subject.digest != digest:
                self.problems.append(f"{where}: its subject is not {digest}")
                return
            config_type = manifest.config.media_type if manifest.config is not None else None
            if NOTATION_ARTIFACT_TYPE not in (manifest.artifact_type, config_type):
                self.problems.append(f"{where}: not a Notary Project signature manifest")
                return
            if len(manifest.layers) != 1 or manifest.layers[0].media_type not in (
                NOTATION_ENVELOPE_TYPES
            ):
                self.problems.append(f"{where}: expected exactly one JWS or COSE envelope layer")
                return
            layer = manifest.layers[0]
            self.notation.append(
                NotationSignature(
                    self._blob(layer), layer.media_type, str(descriptor.digest), f"notation:{via}"
                )
            )
        except (VerificationError, InvalidInputError, NotFoundError) as exc:
            self.problems.append(f"{where}: {exc.message}")


def _annotation_bytes(layer: DescriptorView, key: str) -> bytes | None:
    value = layer.annotations.get(key)
    return value.encode() if value else None
