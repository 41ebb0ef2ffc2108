"""SBOM and VEX sources that bridge independent packages: verified attestations, OCI referrers.

``gatekeeper.sbom``, ``gatekeeper.verify`` and ``gatekeeper.registry`` are independent siblings
in the layer contract (pyproject ``[tool.importlinter]``); the adapters that let the SBOM
collector read what the other two found live here, one layer up, and ``wiring`` plugs them in.

* :class:`AttestedSbomSource` - CycloneDX/SPDX predicates of in-toto statements the
  ``signatures`` collector *verified* for the image digest (signature by an authority of the
  image policy, subject naming the digest). It reads the collector's one discovery result of
  the same evaluation (the evaluation's memo), so nothing is fetched or verified twice. Bound by the
  attestation subject. An SBOM attestation too large to be read (``max_payload_bytes``) is
  reported as an invalid SBOM, never silently "missing".
* :class:`ReferrerSbomSource` - OCI referrers of the digest (referrers API, or the
  ``sha256-<hex>`` index tag fallback) whose artifact type is an SBOM, and the artifact cosign
  ``attach sbom`` tags ``sha256-<hex>.sbom``. The referrers listing is the one the cosign
  discovery of the same evaluation read. Bound by the referrer manifest's own ``subject``
  (never by the index entry that lists it), or by the digest the ``.sbom`` tag names.

* :class:`AttestedVexSource` - OpenVEX / CycloneDX VEX predicates of statements the
  ``signatures`` collector verified for the digest (``gatekeeper.vex`` reads no registry).

Unreadable documents (too large, corrupt blob, no SBOM layer) become candidates with a
``problem``, i.e. the evidence state ``invalid``; transient registry trouble raises
:class:`~gatekeeper.errors.UpstreamUnavailableError`, as every collector does.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from gatekeeper.domain.ports import EvidenceContext, VerifiedAttestations
from gatekeeper.domain.ports.registry import DescriptorView, ManifestView, RegistryReader
from gatekeeper.domain.ports.sbom import BindingMethod, SbomCandidate, SbomSourceKind
from gatekeeper.domain.reference import Digest, ImageReference
from gatekeeper.errors import (
    GatekeeperError,
    InvalidInputError,
    NotFoundError,
    VerificationError,
)
from gatekeeper.sbom.attestation import (
    SBOM_ARTIFACT_TYPES,
    candidate_from_referrer,
    candidate_from_statement,
    is_sbom_predicate,
)
from gatekeeper.sbom.parsing import SbomDocumentError
from gatekeeper.verify.cache import TtlCache
from gatekeeper.verify.discovery import referrers_of
from gatekeeper.vex import (
    VexCandidate,
    VexDocument,
    VexDocumentError,
    VexLimits,
    is_openvex_predicate,
    parse_vex_document,
)

__all__ = ["SBOM_MEDIA_TYPES", "AttestedSbomSource", "AttestedVexSource", "ReferrerSbomSource"]

log = logging.getLogger(__name__)

#: Layer media types that carry an SBOM document (oras ``file:type``, cosign ``attach sbom``).
SBOM_MEDIA_TYPES = (
    *SBOM_ARTIFACT_TYPES,
    "text/spdx+json",
    "application/vnd.cyclonedx",
    "application/vnd.cyclonedx+xml",
    "text/spdx",
    "application/vnd.syft+json",
)


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _is_sbom_artifact(artifact_type: str | None) -> bool:
    return _media_type(artifact_type) in SBOM_ARTIFACT_TYPES


class AttestedSbomSource:
    """SBOMs from cosign attestations verified by the ``signatures`` collector."""

    name = "attestation"

    def __init__(self, signatures: VerifiedAttestations) -> None:
        self._signatures = signatures

    def find(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Sequence[SbomCandidate]:
        if digest is None:
            return ()
        candidates: list[SbomCandidate] = []
        seen: set[str] = set()
        for verified in self._signatures.verified_statements(reference, digest, context):
            if not is_sbom_predicate(verified.predicate_type):
                continue
            origin = f"attestation verified by {verified.authority} ({verified.source})"
            try:
                candidate = candidate_from_statement(verified.statement, origin=origin)
            except SbomDocumentError as exc:
                candidate = SbomCandidate(
                    b"", BindingMethod.ATTESTATION, (str(digest),),
                    f"{origin} ({verified.predicate_type})", problem=exc.message,
                )  # fmt: skip
            if candidate is None:
                continue
            candidate = replace(
                candidate, source=SbomSourceKind.ATTESTATION.value, authority=verified.authority
            )
            key = hashlib.sha256(candidate.content).hexdigest() + (candidate.problem or "")
            if key not in seen:  # one statement verified by several authorities
                seen.add(key)
                candidates.append(candidate)
        for item in self._signatures.oversized_attestations(reference, digest, context):
            if item.predicate_type is None or not is_sbom_predicate(item.predicate_type):
                continue
            # Never read, so never verified: it binds nothing, but says why no SBOM counts.
            candidates.append(
                SbomCandidate(
                    b"", BindingMethod.ATTESTATION, (),
                    f"attestation ({item.source}, claims {item.predicate_type})",
                    problem=f"the attestation is {item.size} bytes, larger than the limit of "
                    f"{item.limit} bytes (signatures max_payload_bytes): not read, not verified",
                )
            )  # fmt: skip
        return tuple(candidates)


class ReferrerSbomSource:
    """SBOMs attached to the image digest in its repository (OCI referrers, cosign ``.sbom``)."""

    name = "referrer"

    def __init__(
        self,
        registry: RegistryReader,
        *,
        max_bytes: int,
        max_items: int = 4,
        ttl_seconds: float = 300.0,
        negative_ttl_seconds: float = 30.0,
        cache_max_entries: int = 64,
        cache_max_entry_bytes: int = 2 << 20,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._max_bytes = max_bytes
        self._max_items = max_items
        self._ttl = ttl_seconds
        self._negative_ttl = negative_ttl_seconds
        self._cache_max_entry_bytes = cache_max_entry_bytes
        # Digests are immutable, but SBOMs get attached after the push: "nothing found" is
        # remembered for less time than what was found. Transient failures are never cached,
        # nor documents larger than ``cache_max_entry_bytes`` together (memory stays bounded).
        self._cache: TtlCache[tuple[SbomCandidate, ...]] = TtlCache(
            max_entries=cache_max_entries, monotonic=monotonic
        )

    def find(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Sequence[SbomCandidate]:
        if digest is None:
            return ()
        key = (reference.registry, reference.repository, str(digest), self._max_bytes)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        pinned = ImageReference(
            reference.original, reference.registry, reference.repository, None, digest
        )
        # The ``.sbom`` tag first: it needs no listing, so it is read while the cosign
        # discovery of the same evaluation fetches the listing. Candidates (and the failure
        # raised, should both fail) keep the order referrers, then the tag.
        attached: list[SbomCandidate] | GatekeeperError
        try:
            attached = self._attached(pinned, digest, context.deadline)
        except GatekeeperError as exc:  # raised after the referrers' own failure, if any
            attached = exc
        candidates = list(self._referrers(pinned, digest, context))
        if isinstance(attached, GatekeeperError):
            raise attached
        found = (*candidates, *attached)
        if sum(len(c.content) for c in found) <= self._cache_max_entry_bytes:
            self._cache.put(key, found, self._ttl if found else self._negative_ttl)
        return found

    # -- OCI referrers -----------------------------------------------------------------------

    def _referrers(
        self, reference: ImageReference, digest: Digest, context: EvidenceContext
    ) -> list[SbomCandidate]:
        deadline = context.deadline
        try:
            # The listing the cosign discovery of the same evaluation reads (one lookup).
            index = referrers_of(
                self._registry, reference, digest, deadline=deadline, memo=context.memo
            )
        except VerificationError as exc:
            # An unreadable referrers index says nothing about SBOMs in particular.
            log.warning("referrers of %s@%s unreadable: %s", reference.name, digest, exc.message)
            return []
        found = [d for d in index.manifests if _is_sbom_artifact(d.artifact_type)]
        if len(found) > self._max_items:
            log.warning(
                "%s@%s has %d SBOM referrers; only the first %d are read",
                reference.name, digest, len(found), self._max_items,
            )  # fmt: skip
        candidates: list[SbomCandidate] = []
        for descriptor in found[: self._max_items]:
            candidate = self._referrer(reference, digest, descriptor, index.via, deadline)
            if candidate is not None:
                candidates.append(candidate)
        return candidates

    def _referrer(
        self,
        reference: ImageReference,
        digest: Digest,
        descriptor: DescriptorView,
        via: str,
        deadline: float | None,
    ) -> SbomCandidate | None:
        origin = f"referrer {descriptor.digest} ({via})"
        try:
            manifest = self._registry.get_manifest(reference, descriptor.digest, deadline=deadline)
        except NotFoundError:
            log.warning("%s lists %s, which does not exist", via, descriptor.digest)
            return None
        except (VerificationError, InvalidInputError) as exc:
            return self._problem(origin, (), f"referrer manifest unreadable: {exc.message}")
        # The binding statement is the referrer's own ``subject``, not the index listing it.
        subjects = (str(manifest.subject.digest),) if manifest.subject is not None else ()
        layer = self._sbom_layer(manifest, descriptor.artifact_type)
        if layer is None:
            return self._problem(origin, subjects, "referrer has no single SBOM layer")
        content, problem = self._blob(reference, layer, deadline)
        if problem is not None:
            return self._problem(origin, subjects, problem)
        if manifest.subject is None:  # listed as a referrer, but binds to nothing
            return SbomCandidate(content, BindingMethod.REFERRER, (), origin)
        return candidate_from_referrer(
            content, manifest.subject.digest, referrer_digest=str(descriptor.digest)
        )

    @staticmethod
    def _sbom_layer(manifest: ManifestView, artifact_type: str | None) -> DescriptorView | None:
        layers = list(manifest.layers)
        typed = [layer for layer in layers if _media_type(layer.media_type) in SBOM_MEDIA_TYPES]
        if len(typed) == 1:
            return typed[0]
        # ``oras attach --artifact-type application/vnd.cyclonedx+json sbom.json`` stores the
        # file as one generic layer; the artifact type says what it is.
        if not typed and len(layers) == 1 and _is_sbom_artifact(artifact_type):
            return layers[0]
        return None

    # -- cosign attach sbom ------------------------------------------------------------------

    def _attached(
        self, reference: ImageReference, digest: Digest, deadline: float | None
    ) -> list[SbomCandidate]:
        tag = f"{digest.cosign_tag_prefix}.sbom"
        origin = f"attached sbom tag {tag}"
        try:
            manifest = self._registry.find_manifest(reference, tag, deadline=deadline)
        except (VerificationError, InvalidInputError) as exc:
            return [self._problem(origin, (str(digest),), f"manifest unreadable: {exc.message}")]
        if manifest is None:
            return []
        layers = [
            layer for layer in manifest.layers if _media_type(layer.media_type) in SBOM_MEDIA_TYPES
        ]
        candidates: list[SbomCandidate] = []
        for layer in layers[: self._max_items]:
            content, problem = self._blob(reference, layer, deadline)
            # The tag names the digest: the same trust as the referrers tag fallback.
            candidates.append(
                SbomCandidate(content, BindingMethod.REFERRER, (str(digest),), origin, problem)
            )
        if not layers:
            candidates.append(self._problem(origin, (str(digest),), "no SBOM layer"))
        return candidates

    # -- shared ------------------------------------------------------------------------------

    def _blob(
        self, reference: ImageReference, layer: DescriptorView, deadline: float | None
    ) -> tuple[bytes, str | None]:
        if layer.size > self._max_bytes:
            return b"", (
                f"document is {layer.size} bytes, larger than the limit of {self._max_bytes} bytes"
            )
        try:
            content = self._registry.get_blob(
                reference, layer.digest, size=layer.size, max_bytes=self._max_bytes,
                deadline=deadline,
            )  # fmt: skip
        except (VerificationError, NotFoundError, InvalidInputError) as exc:
            return b"", f"SBOM blob unreadable: {exc.message}"
        return content, None

    @staticmethod
    def _problem(origin: str, subjects: tuple[str, ...], problem: str) -> SbomCandidate:
        return SbomCandidate(b"", BindingMethod.REFERRER, subjects, origin, problem)


class AttestedVexSource:
    """VEX from in-toto statements the ``signatures`` collector verified for the digest: an
    OpenVEX predicate (``cosign attest --type openvex``), or a CycloneDX predicate whose
    ``vulnerabilities`` carry an ``analysis``. An attestation by an unknown key is never
    verified, so it never gets here."""

    name = "attestation"

    def __init__(self, signatures: VerifiedAttestations, limits: VexLimits) -> None:
        self._signatures = signatures
        self._limits = limits

    def find(
        self, reference: ImageReference, digest: Digest, context: EvidenceContext
    ) -> Sequence[VexCandidate]:
        candidates: list[VexCandidate] = []
        seen: set[str] = set()
        for verified in self._signatures.verified_statements(reference, digest, context):
            openvex = is_openvex_predicate(verified.predicate_type)
            if not openvex and not verified.predicate_type.startswith("https://cyclonedx.org/bom"):
                continue
            predicate = verified.statement.get("predicate")
            if isinstance(predicate, Mapping) and set(predicate) <= {"Data", "Timestamp"}:
                predicate = predicate.get("Data")  # cosign before 2.x wrapped predicates
            if not openvex and not (
                isinstance(predicate, Mapping) and predicate.get("vulnerabilities")
            ):
                continue  # an SBOM without vulnerabilities says nothing about exploitability
            origin = f"attestation verified by {verified.authority} ({verified.source})"
            try:
                document: VexDocument | None = parse_vex_document(predicate, self._limits)
                problem = None
            except VexDocumentError as exc:
                document, problem = None, exc.message
            key = (document.sha256 if document else "") + (problem or "")
            if key in seen:  # one statement verified by several authorities
                continue
            seen.add(key)
            candidates.append(
                VexCandidate(document, "attestation", origin, authority=verified.authority,
                             problem=problem)  # fmt: skip
            )
        return tuple(candidates)
