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

The lookups run in parallel on the caller's :class:`FanOut`, each the moment what it needs has
arrived (:mod:`gatekeeper.verify.discovery_flow`): the ``.sig`` and ``.att`` manifests and the
referrers listing at once; a manifest's blobs as soon as it is in (the ``.att`` ones even
before the ``.sig`` answers); the Sigstore-bundle and Notation referrer manifests as soon as
the listing is, and their blobs after them. The referrers listing goes through the
evaluation's memo, so the SBOM referrer source of the same evaluation reuses it. What is
found is planned and recorded in a fixed order (``.sig``, ``.att``, referrers), as a
sequential lookup would: the item limit counts in that order whatever answers first.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import cast

from gatekeeper.domain.concurrency import EvaluationMemo, FanOut
from gatekeeper.domain.ports.attestations import OversizedAttestation
from gatekeeper.domain.ports.registry import (
    DescriptorView,
    ManifestView,
    ReferrersView,
    RegistryReader,
)
from gatekeeper.domain.reference import Digest, ImageReference
from gatekeeper.errors import (
    GatekeeperError,
    InvalidInputError,
    NotFoundError,
    VerificationError,
)
from gatekeeper.verify.discovery_flow import Flow, Task

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
    "referrers_of",
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
    memo: EvaluationMemo | None = None,
    fan_out: FanOut | None = None,
) -> Material:
    """Collect every signature/attestation candidate for ``digest`` in ``reference``'s repo.

    ``memo`` (the evaluation's) shares the referrers listing with other readers of the same
    evaluation; ``fan_out`` runs the lookups in parallel (one after the other without)."""
    repository = ImageReference(
        reference.original, reference.registry, reference.repository, None, digest
    )
    finder = _Finder(registry, repository, max_payload_bytes, max_items, deadline)
    plan = _Plan(finder, digest)
    # The two cosign tags and the referrers listing; each answer starts what it makes known.
    Flow(fan_out).run([
        ((1, 0), lambda: plan.arrived(0, finder.lookup_tag(plan.sig_tag))),
        ((1, 1), lambda: plan.arrived(1, finder.lookup_tag(plan.att_tag))),
        ((1, 2), lambda: plan.arrived(2, finder.lookup_referrers(digest, memo))),
    ])  # fmt: skip
    for step in finder.steps:
        step()
    return Material(
        tuple(finder.signatures),
        tuple(finder.attestations),
        tuple(finder.bundles),
        tuple(finder.sources),
        tuple(finder.problems),
        tuple(finder.oversized),
        tuple(finder.notation),
    )


_PENDING = object()


class _Plan:
    """Plans the fetches in the order a one-by-one lookup makes them (``.sig``, ``.att``, the
    referrers, each referrer in listing order), as soon as the answers before them are in: the
    item limit counts in that order and ``steps`` record in it. Thread-safe."""

    def __init__(self, finder: _Finder, digest: Digest) -> None:
        self.finder = finder
        self.digest = digest
        self.sig_tag = f"{digest.cosign_tag_prefix}.sig"
        self.att_tag = f"{digest.cosign_tag_prefix}.att"
        self._lock = threading.Lock()
        self._found: list[object] = [_PENDING, _PENDING, _PENDING]
        self._planned = 0  # answers of the first round planned
        self._items: list[_Referrer] | None = None
        self._fetched: set[int] = set()
        self._finished = 0  # referrer manifests recorded
        self._started = 0  # blobs started

    def arrived(self, index: int, found: object) -> list[Task]:
        """A first-round answer: ``.sig`` (0), ``.att`` (1) or the referrers listing (2)."""
        with self._lock:
            self._found[index] = found
            early: list[_Blob] = []
            if (
                index == 1
                and self._planned == 0
                and found is not None
                and not isinstance(found, VerificationError)
            ):  # the .sig is still out
                early = self.finder.prefetch_attestations(cast("ManifestView", found))
            return self._start(early) + self._advance()

    def _referrer_fetched(self, number: int) -> list[Task]:
        assert self._items is not None
        self._items[number].fetch(self.finder)
        with self._lock:
            self._fetched.add(number)
            return self._advance()

    def _advance(self) -> list[Task]:
        finder = self.finder
        tasks: list[Task] = []
        while self._planned < 3 and self._found[self._planned] is not _PENDING:
            found = self._found[self._planned]
            if self._planned < 2:
                tag, source = (self.sig_tag, "sig-tag") if self._planned == 0 else (
                    self.att_tag, "att-tag")  # fmt: skip
                finder.tagged(tag, source, cast("ManifestView | VerificationError | None", found))
            else:
                self._items = finder.referrers(
                    self.digest, cast("ReferrersView | VerificationError", found)
                )
                tasks += [
                    ((2, number), partial(self._referrer_fetched, number))
                    for number in range(len(self._items))
                ]
            self._planned += 1
        if self._items is not None:
            self._finish_referrers()
        tasks += self._start(finder.blobs[self._started :], first=self._started)
        self._started = len(finder.blobs)
        return tasks

    def _start(self, blobs: list[_Blob], *, first: int = 0) -> list[Task]:
        """Fetch tasks for the blobs not started yet (a prefetched one is started once)."""
        tasks: list[Task] = []
        for number, blob in enumerate(blobs, start=first):
            if not blob.started:
                blob.started = True
                tasks.append(((3, number), partial(_fetch_blob, self.finder, blob)))
        return tasks

    def _finish_referrers(self) -> None:
        """Record the fetched referrer manifests in listing order; after the last one, the
        referrers refused for the item limit."""
        assert self._items is not None
        total = len(self._items)
        if self._finished > total:
            return
        while self._finished < total and self._finished in self._fetched:
            self._items[self._finished].finish(self.finder, self.digest)
            self._finished += 1
        if self._finished == total:
            self.finder.steps += self.finder.refused
            self._finished += 1  # recorded once


def _fetch_blob(finder: _Finder, blob: _Blob) -> list[Task]:
    finder.fetch_blob(blob)
    return []


def referrers_of(
    registry: RegistryReader,
    reference: ImageReference,
    digest: Digest,
    *,
    deadline: float | None,
    memo: EvaluationMemo | None,
) -> ReferrersView:
    """The referrers listing of ``digest``, once per evaluation when ``memo`` is given (the
    cosign discovery and the SBOM referrer source read the same one). Raises like
    :meth:`RegistryReader.get_referrers`."""

    def fetch() -> ReferrersView:
        return registry.get_referrers(reference, digest, deadline=deadline)

    if memo is None:
        return fetch()
    return memo.once(("referrers", reference.registry, reference.repository, str(digest)), fetch)


class _Blob:
    """A blob to fetch in round 3, and what came of it."""

    __slots__ = ("content", "error", "layer", "started")

    def __init__(self, layer: DescriptorView) -> None:
        self.layer = layer
        self.content: bytes | None = None
        self.error: GatekeeperError | None = None
        self.started = False


class _Referrer:
    """A referrer manifest to fetch in round 2 (a Sigstore bundle or a Notation signature)."""

    __slots__ = ("descriptor", "error", "manifest", "notation", "via")

    def __init__(self, descriptor: DescriptorView, via: str, *, notation: bool) -> None:
        self.descriptor = descriptor
        self.via = via
        self.notation = notation
        self.manifest: ManifestView | None = None
        self.error: GatekeeperError | None = None

    def fetch(self, finder: _Finder) -> None:
        try:
            self.manifest = finder.registry.get_manifest(
                finder.reference, self.descriptor.digest, deadline=finder.deadline
            )
        except (VerificationError, InvalidInputError, NotFoundError) as exc:
            self.error = exc

    def finish(self, finder: _Finder, digest: Digest) -> None:
        if self.notation:
            finder.notation_manifest(self, digest)
        else:
            finder.bundle_manifest(self, digest)


class _Finder:
    """Plans the lookups and records their outcome in order: ``steps`` run after round 3, so
    problems and items keep the order a one-by-one lookup would give them."""

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
        self.blobs: list[_Blob] = []
        #: Blobs of the ``.att`` layers fetched before the ``.sig`` answered, by layer index.
        self.prefetched: dict[int, _Blob] = {}
        self.steps: list[Callable[[], None]] = []
        #: Problems of referrers refused for the item limit, recorded after the others.
        self.refused: list[Callable[[], None]] = []
        self.count = 0

    # -- round 1 -------------------------------------------------------------------------------

    def lookup_tag(self, tag: str) -> ManifestView | VerificationError | None:
        try:
            return self.registry.find_manifest(self.reference, tag, deadline=self.deadline)
        except VerificationError as exc:
            return exc

    def lookup_referrers(
        self, digest: Digest, memo: EvaluationMemo | None
    ) -> ReferrersView | VerificationError:
        try:
            return referrers_of(
                self.registry, self.reference, digest, deadline=self.deadline, memo=memo
            )
        except VerificationError as exc:
            return exc

    # -- recording -----------------------------------------------------------------------------

    def problem(self, text: str) -> None:
        self.steps.append(lambda: self.problems.append(text))

    def _room(self, where: str) -> bool:
        if self.count >= self.max_items:
            self.problem(f"{where}: more than {self.max_items} items, the rest ignored")
            return False
        self.count += 1
        return True

    def _with_blob(
        self, layer: DescriptorView, where: str, use: Callable[[bytes], None],
        prefetched: _Blob | None = None,
    ) -> None:  # fmt: skip
        """Fetch ``layer`` (or take the fetch started early for it); then ``use`` its bytes,
        or record why it is unusable."""
        blob = prefetched if prefetched is not None and prefetched.layer is layer else _Blob(layer)
        self.blobs.append(blob)

        def step() -> None:
            if blob.error is not None:
                self.problems.append(f"{where}: {blob.error.message}")
            elif blob.content is not None:
                use(blob.content)

        self.steps.append(step)

    def fetch_blob(self, blob: _Blob) -> None:
        layer = blob.layer
        try:
            if layer.size > self.max_payload_bytes:
                raise InvalidInputError(
                    f"payload of {layer.size} bytes exceeds the limit of {self.max_payload_bytes}"
                )
            blob.content = self.registry.get_blob(
                self.reference, layer.digest, size=layer.size,
                max_bytes=self.max_payload_bytes, deadline=self.deadline,
            )  # fmt: skip
        except (VerificationError, InvalidInputError, NotFoundError) as exc:
            blob.error = exc

    # -- cosign tags ---------------------------------------------------------------------------

    def tagged(self, tag: str, source: str, found: ManifestView | VerificationError | None) -> None:
        if isinstance(found, VerificationError):
            self.problem(f"{tag}: {found.message}")
            return
        if found is None:
            return
        self.sources.append(source)
        for index, layer in enumerate(found.layers):
            where = f"{tag} layer {index}"
            if not self._room(tag):
                return
            if layer.media_type == SIMPLE_SIGNING_MEDIA_TYPE:
                self._signature(layer, source, where)
            elif layer.media_type == DSSE_MEDIA_TYPE:
                self._note_size(layer.annotations.get(PREDICATE_TYPE_ANNOTATION), layer, source)
                prefetched = self.prefetched.pop(index, None) if source == "att-tag" else None
                self._attestation(layer, source, where, prefetched)
            else:
                self.problem(f"{where}: unexpected media type {layer.media_type}")

    def _attestation(
        self, layer: DescriptorView, source: str, where: str, prefetched: _Blob | None
    ) -> None:
        self._with_blob(layer, where, lambda content: self.attestations.append(CosignAttestation(
            content,
            _annotation_bytes(layer, CERTIFICATE_ANNOTATION),
            _annotation_bytes(layer, CHAIN_ANNOTATION),
            _annotation_bytes(layer, REKOR_BUNDLE_ANNOTATION),
            source,
        )), prefetched)  # fmt: skip

    def prefetch_attestations(self, found: ManifestView) -> list[_Blob]:
        """Start the blobs of the ``.att`` layers before the ``.sig`` is in: the ones its
        planning would fetch if the ``.sig`` took no item (at most ``max_items``). Only when
        the two together hold more than ``max_items`` layers is one fetched for nothing."""
        blobs = []
        for index, layer in enumerate(found.layers[: self.max_items]):
            if layer.media_type == DSSE_MEDIA_TYPE:
                self.prefetched[index] = _Blob(layer)
                blobs.append(self.prefetched[index])
        return blobs

    def _signature(self, layer: DescriptorView, source: str, where: str) -> None:
        encoded = layer.annotations.get(SIGNATURE_ANNOTATION)
        if not encoded:
            self.problem(f"{where}: signature annotation missing")
            return
        try:
            signature = decode_standard_base64(encoded)
        except binascii.Error:
            self.problem(f"{where}: signature annotation is not base64")
            return
        self._with_blob(layer, where, lambda content: self.signatures.append(CosignSignature(
            content,
            signature,
            _annotation_bytes(layer, CERTIFICATE_ANNOTATION),
            _annotation_bytes(layer, CHAIN_ANNOTATION),
            _annotation_bytes(layer, REKOR_BUNDLE_ANNOTATION),
            source,
        )))  # fmt: skip

    def _note_size(self, predicate_type: str | None, layer: DescriptorView, source: str) -> None:
        if layer.size > self.max_payload_bytes:
            self.oversized.append(
                OversizedAttestation(predicate_type, layer.size, self.max_payload_bytes, source)
            )

    # -- referrers -----------------------------------------------------------------------------

    def referrers(
        self, digest: Digest, index: ReferrersView | VerificationError
    ) -> list[_Referrer]:
        """The referrer manifests to fetch in round 2, within the item limit."""
        if isinstance(index, VerificationError):
            self.problem(f"referrers of {digest}: {index.message}")
            return []
        if not index.manifests:
            return []
        self.sources.append(index.via)
        pending: list[_Referrer] = []
        # Past the item limit every later referrer is refused; those problems are recorded
        # after the accepted referrers' own (see ``finish``), as a one-by-one lookup would.
        steps, self.steps = self.steps, []
        for descriptor in index.manifests:
            artifact_type = descriptor.artifact_type or ""
            if artifact_type == NOTATION_ARTIFACT_TYPE:
                if self._room(f"referrers of {digest}"):
                    pending.append(_Referrer(descriptor, index.via, notation=True))
                continue
            if not artifact_type.startswith(_BUNDLE_MEDIA_PREFIX):
                continue  # SBOMs and other referrers belong to other collectors
            if not self._room(f"referrers of {digest}"):
                break
            pending.append(_Referrer(descriptor, index.via, notation=False))
        self.refused, self.steps = self.steps, steps
        return pending

    def bundle_manifest(self, item: _Referrer, digest: Digest) -> None:
        where = f"referrer {item.descriptor.digest}"
        manifest = item.manifest
        if item.error is not None or manifest is None:
            self.problem(f"{where}: {item.error.message if item.error else 'unreadable'}")
            return
        if manifest.subject is not None and manifest.subject.digest != digest:
            self.problem(f"{where}: its subject is another digest")
            return
        layers = [
            layer for layer in manifest.layers if layer.media_type.startswith(_BUNDLE_MEDIA_PREFIX)
        ]
        if len(layers) != 1:
            self.problem(f"{where}: expected exactly one bundle layer")
            return
        predicate_type = manifest.annotations.get(BUNDLE_PREDICATE_ANNOTATION)
        self._note_size(predicate_type, layers[0], item.via)
        self._with_blob(layers[0], where, lambda content: self.bundles.append(
            BundleArtifact(content, predicate_type, item.via)
        ))  # fmt: skip

    def notation_manifest(self, item: _Referrer, digest: Digest) -> None:
        where = f"notation signature {item.descriptor.digest}"
        manifest = item.manifest
        if item.error is not None or manifest is None:
            self.problem(f"{where}: {item.error.message if item.error else 'unreadable'}")
            return
        if manifest.subject is None or manifest.subject.digest != digest:
            self.problem(f"{where}: its subject is not {digest}")
            return
        config_type = manifest.config.media_type if manifest.config is not None else None
        if NOTATION_ARTIFACT_TYPE not in (manifest.artifact_type, config_type):
            self.problem(f"{where}: not a Notary Project signature manifest")
            return
        if len(manifest.layers) != 1 or manifest.layers[0].media_type not in (
            NOTATION_ENVELOPE_TYPES
        ):
            self.problem(f"{where}: expected exactly one JWS or COSE envelope layer")
            return
        layer = manifest.layers[0]
        self._with_blob(layer, where, lambda content: self.notation.append(NotationSignature(
            content, layer.media_type, str(item.descriptor.digest), f"notation:{item.via}"
        )))  # fmt: skip


def _annotation_bytes(layer: DescriptorView, key: str) -> bytes | None:
    value = layer.annotations.get(key)
    return value.encode() if value else None
