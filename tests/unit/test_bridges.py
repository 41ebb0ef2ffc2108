"""The SBOM sources of ``gatekeeper.bridges`` over the in-memory registry of the verify tests:
verified statements handed over without verifying twice, referrer binding, problems, cache."""

from __future__ import annotations

import base64
import json
import threading
import traceback
from types import MappingProxyType
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sigstore import dsse

from gatekeeper.bridges import AttestedSbomSource, ReferrerSbomSource
from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import Digest, ImageReference, parse_image_reference
from gatekeeper.errors import UpstreamUnavailableError, VerificationError
from gatekeeper.sbom import SbomEvidenceCollector
from gatekeeper.sbom.binding import BindingMethod
from gatekeeper.verify import SignatureEvidenceCollector, SignaturePolicySettings, TrustRoot
from tests.unit.sbom.factory import cyclonedx, encode
from tests.unit.verify.conftest import (
    FakeDescriptor,
    FakeManifest,
    FakeReferrers,
    InMemoryRegistry,
    other_key,  # noqa: F401 - fixture
    pem_of,
    sign,
    signing_key,  # noqa: F401 - fixture
    simple_signing_payload,
)

IMAGE = parse_image_reference("registry.example.com/team/app:1.0")
DIGEST = Digest("sha256", "a" * 64)
OTHER = Digest("sha256", "b" * 64)


def context() -> EvidenceContext:
    """A new evaluation's context (each has its own memo: one discovery per evaluation)."""
    return EvidenceContext("production", "default")


IN_TOTO = "application/vnd.in-toto+json"
CDX = "application/vnd.cyclonedx+json"


class Registry(InMemoryRegistry):
    """Adds referrers (tag fallback shape) to the verify tests' fake."""

    def __init__(self) -> None:
        super().__init__()
        self.referrers_by_subject: dict[str, list[FakeDescriptor]] = {}
        self.broken_index = False

    def get_referrers(self, reference: ImageReference, digest: Digest, *,
                      artifact_type: str | None = None,
                      deadline: float | None = None) -> FakeReferrers:  # fmt: skip
        self._tick()
        if self.broken_index:
            raise VerificationError("referrers tag sha256-... is not an index")
        listed = tuple(self.referrers_by_subject.get(str(digest), ()))
        return FakeReferrers(listed, "referrers-tag" if listed else "none")

    def add_referrer(
        self, listed_under: Digest, subject: Digest | None, content: bytes, *,
        layer_type: str = CDX, artifact_type: str = CDX, layers: int = 1,
    ) -> Digest:  # fmt: skip
        blob = self.add_blob(content)
        layer = FakeDescriptor(layer_type, blob.digest, blob.size)
        manifest_digest = Digest("sha256", f"{len(self.tags):064x}")
        self.tags[str(manifest_digest)] = FakeManifest(
            manifest_digest, "application/vnd.oci.image.manifest.v1+json", (layer,) * layers,
            artifact_type=artifact_type,
            subject=FakeDescriptor("application/vnd.oci.image.manifest.v1+json", subject, 1)
            if subject is not None else None,
        )  # fmt: skip
        self.referrers_by_subject.setdefault(str(listed_under), []).append(
            FakeDescriptor("application/vnd.oci.image.manifest.v1+json", manifest_digest, 1,
                           artifact_type=artifact_type)
        )  # fmt: skip
        return manifest_digest


def _statement(predicate_type: str, predicate: Any, digest: Digest = DIGEST) -> bytes:
    return json.dumps({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "registry.example.com/team/app", "digest": {"sha256": digest.hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }).encode()  # fmt: skip


def _attest(registry: Registry, key: ec.EllipticCurvePrivateKey, statement: bytes) -> None:
    signature = sign(key, dsse._pae(IN_TOTO, statement))
    envelope = json.dumps({
        "payloadType": IN_TOTO,
        "payload": base64.b64encode(statement).decode(),
        "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
    }).encode()  # fmt: skip
    blob = registry.add_blob(envelope)
    layer = FakeDescriptor("application/vnd.dsse.envelope.v1+json", blob.digest, blob.size,
                           MappingProxyType({"predicateType": "x"}))  # fmt: skip
    tag = f"{DIGEST.cosign_tag_prefix}.att"
    existing = registry.tags.get(tag)
    registry.tags[tag] = FakeManifest(
        Digest("sha256", "1" * 64), "application/vnd.oci.image.manifest.v1+json",
        (existing.layers if existing else ()) + (layer,),
    )  # fmt: skip


def _signatures(registry: Registry, key: ec.EllipticCurvePrivateKey) -> SignatureEvidenceCollector:
    settings = SignaturePolicySettings.from_mapping({
        "authorities": [{"name": "release", "keys": [pem_of(key)], "tlog": False}],
        "images": [{"glob": "registry.example.com/team/*", "authorities": ["release"]}],
    })  # fmt: skip
    return SignatureEvidenceCollector(settings, registry, TrustRoot.none())


# -- attestations ------------------------------------------------------------------------------


def test_verified_cyclonedx_statement_is_handed_over_without_verifying_again(
    signing_key: ec.EllipticCurvePrivateKey,  # noqa: F811
) -> None:
    registry = Registry()
    _attest(registry, signing_key, _statement("https://cyclonedx.org/bom", cyclonedx(2)))
    _attest(registry, signing_key, _statement("https://slsa.dev/provenance/v1", {"x": 1}))
    signatures = _signatures(registry, signing_key)
    signatures.collect(IMAGE, DIGEST, context())
    calls = registry.calls

    [candidate] = AttestedSbomSource(signatures).find(IMAGE, DIGEST, context())

    assert registry.calls == calls  # answered from the signatures collector's cache
    assert candidate.method is BindingMethod.ATTESTATION
    assert candidate.subjects == (str(DIGEST),)
    assert candidate.origin.startswith("attestation verified by release (att-tag)")
    evidence = SbomEvidenceCollector(sources=[AttestedSbomSource(signatures)]).collect(
        IMAGE, DIGEST, context()
    )
    [document] = evidence["documents"]
    assert evidence["state"] == "bound" and document["component_count"] == 2
    assert (document["source"], document["authority"]) == ("attestation", "release")


def test_statement_signed_by_another_key_or_for_another_digest_is_not_handed_over(
    signing_key: ec.EllipticCurvePrivateKey,  # noqa: F811
    other_key: ec.EllipticCurvePrivateKey,  # noqa: F811
) -> None:
    registry = Registry()
    _attest(registry, other_key, _statement("https://cyclonedx.org/bom", cyclonedx(2)))
    _attest(registry, signing_key, _statement("https://cyclonedx.org/bom", cyclonedx(3), OTHER))
    signatures = _signatures(registry, signing_key)

    assert AttestedSbomSource(signatures).find(IMAGE, DIGEST, context()) == ()
    assert signatures.verified_statements(IMAGE, DIGEST, context()) == ()


def test_statements_are_verified_on_a_cache_miss_and_not_for_unmatched_images(
    signing_key: ec.EllipticCurvePrivateKey,  # noqa: F811
) -> None:
    registry = Registry()
    _attest(registry, signing_key, _statement("https://cyclonedx.org/bom/v1.6", cyclonedx(1)))
    signatures = _signatures(registry, signing_key)

    [verified] = signatures.verified_statements(IMAGE, DIGEST, context())  # no collect before
    assert verified.predicate_type == "https://cyclonedx.org/bom/v1.6"
    assert verified.authority == "release"
    unmatched = parse_image_reference("other.example.com/app:1")
    assert signatures.verified_statements(unmatched, DIGEST, context()) == ()


def test_unreadable_wrapped_predicate_is_an_invalid_candidate(
    signing_key: ec.EllipticCurvePrivateKey,  # noqa: F811
) -> None:
    registry = Registry()
    wrapped = {"Data": "{not json", "Timestamp": "2026-01-01T00:00:00Z"}
    _attest(registry, signing_key, _statement("https://cyclonedx.org/bom", wrapped))
    signatures = _signatures(registry, signing_key)

    evidence = SbomEvidenceCollector(sources=[AttestedSbomSource(signatures)]).collect(
        IMAGE, DIGEST, context()
    )

    assert evidence["state"] == "invalid"
    assert evidence["reason"].startswith("SBOM is invalid: attestation predicate is not JSON")
    assert evidence["documents"][0]["sha256"] is None


def test_no_digest_no_candidates(
    signing_key: ec.EllipticCurvePrivateKey,  # noqa: F811
) -> None:
    registry = Registry()
    assert AttestedSbomSource(_signatures(registry, signing_key)).find(IMAGE, None, context()) == ()
    assert ReferrerSbomSource(registry, max_bytes=1024).find(IMAGE, None, context()) == ()
    assert registry.calls == 0


# -- referrers ---------------------------------------------------------------------------------


def _collect(registry: Registry, **options: Any) -> dict[str, Any]:
    source = ReferrerSbomSource(registry, max_bytes=options.pop("max_bytes", 1 << 20), **options)
    return dict(SbomEvidenceCollector(sources=[source]).collect(IMAGE, DIGEST, context()))


def test_referrer_is_bound_by_its_own_subject_not_by_the_index_listing_it() -> None:
    registry = Registry()
    registry.add_referrer(DIGEST, OTHER, encode(cyclonedx(2)))

    evidence = _collect(registry)

    assert evidence["state"] == "another_artifact"
    assert evidence["documents"][0]["binding"] == {
        "method": "referrer", "named_digests": [str(OTHER)]
    }


def test_referrer_without_subject_binds_to_nothing() -> None:
    registry = Registry()
    registry.add_referrer(DIGEST, None, encode(cyclonedx(2)))

    assert _collect(registry)["state"] == "another_artifact"


def test_referrers_of_other_artifact_types_are_ignored() -> None:
    registry = Registry()
    registry.add_referrer(DIGEST, DIGEST, b"{}", artifact_type="application/vnd.example+json")

    assert _collect(registry)["state"] == "missing"


def test_referrer_with_two_sbom_layers_is_invalid() -> None:
    registry = Registry()
    registry.add_referrer(DIGEST, DIGEST, encode(cyclonedx(2)), layers=2)

    evidence = _collect(registry)

    assert evidence["state"] == "invalid"
    assert evidence["reason"] == "SBOM is invalid: referrer has no single SBOM layer"


def test_oversized_referrer_is_invalid_and_never_fetched() -> None:
    registry = Registry()
    registry.add_referrer(DIGEST, DIGEST, encode(cyclonedx(30)))
    registry.blobs.clear()  # a fetch would raise KeyError

    evidence = _collect(registry, max_bytes=1000)

    assert evidence["state"] == "invalid"
    assert "larger than the limit of 1000 bytes" in evidence["reason"]


def test_dangling_referrer_is_skipped_and_a_broken_index_finds_nothing() -> None:
    registry = Registry()
    registry.referrers_by_subject[str(DIGEST)] = [
        FakeDescriptor("application/vnd.oci.image.manifest.v1+json", OTHER, 1, artifact_type=CDX)
    ]
    assert _collect(registry)["state"] == "missing"
    registry.broken_index = True
    assert _collect(registry)["state"] == "missing"


def test_only_max_items_referrers_are_read() -> None:
    registry = Registry()
    for _ in range(5):
        registry.add_referrer(DIGEST, OTHER, encode(cyclonedx(1)))
    source = ReferrerSbomSource(registry, max_bytes=1 << 20, max_items=2)

    assert len(source.find(IMAGE, DIGEST, context())) == 2


def test_lookups_are_cached_per_digest_and_transient_errors_are_not() -> None:
    registry = Registry()
    clock = [0.0]
    source = ReferrerSbomSource(registry, max_bytes=1 << 20, negative_ttl_seconds=30,
                                monotonic=lambda: clock[0])  # fmt: skip
    registry.failures_left = 1
    with pytest.raises(UpstreamUnavailableError):
        source.find(IMAGE, DIGEST, context())
    assert source.find(IMAGE, DIGEST, context()) == ()
    calls = registry.calls
    registry.add_referrer(DIGEST, DIGEST, encode(cyclonedx(2)))
    assert source.find(IMAGE, DIGEST, context()) == ()  # "nothing" remembered for a while
    assert registry.calls == calls
    clock[0] = 31.0
    [candidate] = source.find(IMAGE, DIGEST, context())
    assert candidate.subjects == (str(DIGEST),)
    calls = registry.calls
    clock[0] = 100.0
    assert len(source.find(IMAGE, DIGEST, context())) == 1
    assert registry.calls == calls


# -- one discovery per evaluation --------------------------------------------------------------


class CountingRegistry(Registry):
    """Records every lookup (thread-safe: the discovery fetches in parallel)."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[str] = []
        self._lock = threading.Lock()

    def _tick(self) -> None:
        with self._lock:
            self.lookups.append(traceback.extract_stack(limit=2)[0].name)
        super()._tick()


def test_one_evaluation_discovers_once_even_with_the_cache_off(
    signing_key: ec.EllipticCurvePrivateKey,  # noqa: F811
) -> None:
    registry = CountingRegistry()
    registry.add_signature(DIGEST, simple_signing_payload(DIGEST),
                           sign(signing_key, simple_signing_payload(DIGEST)))  # fmt: skip
    _attest(registry, signing_key, _statement("https://cyclonedx.org/bom", cyclonedx(2)))
    _attest(registry, signing_key, _statement("https://slsa.dev/provenance/v1", {"x": 1}))
    settings = SignaturePolicySettings.from_mapping({
        "authorities": [{"name": "release", "keys": [pem_of(signing_key)], "tlog": False}],
        "images": [{"glob": "registry.example.com/team/*", "authorities": ["release"]}],
        "cache_ttl_seconds": 0, "negative_cache_ttl_seconds": 0,
    })  # fmt: skip
    signatures = SignatureEvidenceCollector(settings, registry, TrustRoot.none())
    sbom = SbomEvidenceCollector(sources=[
        AttestedSbomSource(signatures), ReferrerSbomSource(registry, max_bytes=1 << 20),
    ])  # fmt: skip
    evaluation = context()

    section = signatures.collect(IMAGE, DIGEST, evaluation)
    evidence = sbom.collect(IMAGE, DIGEST, evaluation)
    statements = signatures.verified_statements(IMAGE, DIGEST, evaluation)
    oversized = signatures.oversized_attestations(IMAGE, DIGEST, evaluation)

    assert section["status"] == "verified" and len(section["attestations"]) == 2
    assert evidence["state"] == "bound"
    assert len(statements) == 2 and oversized == ()
    # .sig and .att manifests, their three blobs, the referrers listing (once, shared with
    # the referrer SBOM source) and the .sbom tag of the referrer SBOM source.
    assert sorted(registry.lookups) == sorted([
        "find_manifest", "find_manifest", "get_blob", "get_blob", "get_blob", "get_referrers",
        "find_manifest",
    ])  # fmt: skip
    registry.lookups.clear()

    signatures.collect(IMAGE, DIGEST, context())  # the next evaluation looks again (TTL 0)

    assert len(registry.lookups) == 6


# -- the order of the lookups ------------------------------------------------------------------


class OrderedRegistry(Registry):
    """Records the order of the manifest and referrers lookups."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []

    def find_manifest(self, reference: ImageReference, target: str | Digest, *,
                      deadline: float | None = None) -> FakeManifest | None:  # fmt: skip
        self.order.append(f"manifest {target}")
        return super().find_manifest(reference, target, deadline=deadline)

    def get_referrers(self, reference: ImageReference, digest: Digest, *,
                      artifact_type: str | None = None,
                      deadline: float | None = None) -> FakeReferrers:  # fmt: skip
        self.order.append("referrers")
        return super().get_referrers(reference, digest, artifact_type=artifact_type,
                                     deadline=deadline)  # fmt: skip


def test_the_sbom_tag_is_read_before_the_listing_and_listed_after_the_referrers() -> None:
    registry = OrderedRegistry()
    registry.add_referrer(DIGEST, DIGEST, encode(cyclonedx(2)))
    attached = registry.add_blob(encode(cyclonedx(3)))
    registry.tags[f"{DIGEST.cosign_tag_prefix}.sbom"] = FakeManifest(
        Digest("sha256", "2" * 64), "application/vnd.oci.image.manifest.v1+json",
        (FakeDescriptor(CDX, attached.digest, attached.size),),
    )  # fmt: skip

    found = ReferrerSbomSource(registry, max_bytes=1 << 20).find(IMAGE, DIGEST, context())

    assert registry.order[:2] == [f"manifest {DIGEST.cosign_tag_prefix}.sbom", "referrers"]
    assert [c.origin.split(" ")[0] for c in found] == ["referrer", "attached"]


class BrokenListing(Registry):
    def get_referrers(self, reference: ImageReference, digest: Digest, *,
                      artifact_type: str | None = None,
                      deadline: float | None = None) -> FakeReferrers:  # fmt: skip
        raise UpstreamUnavailableError("registry fake timed out listing referrers")

    def find_manifest(self, reference: ImageReference, target: str | Digest, *,
                      deadline: float | None = None) -> FakeManifest | None:  # fmt: skip
        raise UpstreamUnavailableError(f"registry fake timed out fetching manifest {target}")


def test_when_both_lookups_fail_the_listing_failure_is_raised() -> None:
    source = ReferrerSbomSource(BrokenListing(), max_bytes=1 << 20)

    with pytest.raises(UpstreamUnavailableError, match="listing referrers"):
        source.find(IMAGE, DIGEST, context())
