"""Finding cosign material: fetched in parallel rounds, recorded in the order of the listing."""

from __future__ import annotations

import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gatekeeper.domain.concurrency import EvaluationMemo, FanOut
from gatekeeper.domain.reference import Digest, ImageReference, parse_image_reference
from gatekeeper.errors import UpstreamUnavailableError
from gatekeeper.verify.discovery import BUNDLE_MEDIA_TYPE, Material, find_material
from tests.unit.verify.conftest import (
    OCI_MANIFEST,
    FakeDescriptor,
    FakeManifest,
    InMemoryRegistry,
    sign,
    simple_signing_payload,
)

IMAGE = parse_image_reference("registry.example.com/team/app:1.0")
DIGEST = Digest("sha256", "a" * 64)
MISSING = Digest("sha256", "e" * 64)
REFUSED = Digest("sha256", "f" * 64)


def _find(registry: InMemoryRegistry, *, max_items: int, fan_out: FanOut | None) -> Material:
    return find_material(
        registry, IMAGE, DIGEST, max_payload_bytes=1 << 20, max_items=max_items,
        deadline=time.monotonic() + 5, memo=EvaluationMemo(), fan_out=fan_out,
    )  # fmt: skip


def test_parallel_lookups_record_what_a_sequential_one_would(
    registry: InMemoryRegistry, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    payload = simple_signing_payload(DIGEST)
    registry.add_signature(DIGEST, payload, sign(signing_key, payload))
    registry.add_signature(DIGEST, payload, b"not the signature")
    registry.referrers = [
        FakeDescriptor(OCI_MANIFEST, MISSING, 10, artifact_type=BUNDLE_MEDIA_TYPE),
        FakeDescriptor(OCI_MANIFEST, REFUSED, 10, artifact_type=BUNDLE_MEDIA_TYPE),
    ]
    fan_out = FanOut(8, name="test-discovery")
    try:
        parallel = _find(registry, max_items=3, fan_out=fan_out)
    finally:
        fan_out.close()
    sequential = _find(registry, max_items=3, fan_out=None)

    assert parallel == sequential
    assert [len(s.signature) > 0 for s in parallel.signatures] == [True, True]
    assert parallel.signatures[1].signature == b"not the signature"  # the .sig layers' order
    assert parallel.sources == ("sig-tag", "referrers-api")
    # The accepted referrer's own problem first, then the one refused for the limit.
    assert parallel.problems == (
        f"referrer {MISSING}: manifest {MISSING} not found",
        f"referrers of {DIGEST}: more than 3 items, the rest ignored",
    )


class _GatedRegistry(InMemoryRegistry):
    """Answers the ``.att`` lookup only once the ``.sig`` blob was fetched (or after 5 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.sig_blob_fetched = threading.Event()
        self.waited_in_vain = False

    def find_manifest(self, reference: ImageReference, target: str | Digest, *,
                      deadline: float | None = None) -> FakeManifest | None:  # fmt: skip
        if str(target).endswith(".att"):
            self.waited_in_vain = not self.sig_blob_fetched.wait(5)
        return super().find_manifest(reference, target, deadline=deadline)

    def get_blob(self, reference: ImageReference, digest: Digest, *, size: int | None = None,
                 max_bytes: int | None = None, deadline: float | None = None) -> bytes:  # fmt: skip
        content = super().get_blob(reference, digest, size=size, max_bytes=max_bytes,
                                   deadline=deadline)  # fmt: skip
        self.sig_blob_fetched.set()
        return content


def test_a_signature_blob_is_fetched_while_the_other_lookups_are_under_way(
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:
    registry = _GatedRegistry()
    payload = simple_signing_payload(DIGEST)
    registry.add_signature(DIGEST, payload, sign(signing_key, payload))
    fan_out = FanOut(8, name="test-discovery")
    try:
        material = _find(registry, max_items=3, fan_out=fan_out)
    finally:
        fan_out.close()

    assert not registry.waited_in_vain, "the .sig blob waited for the .att lookup"
    assert [s.payload for s in material.signatures] == [payload]


class _SlowSignatures(InMemoryRegistry):
    """The ``.sig`` manifest answers last, so the ``.att`` and referrers are planned after it."""

    def find_manifest(self, reference: ImageReference, target: str | Digest, *,
                      deadline: float | None = None) -> FakeManifest | None:  # fmt: skip
        if str(target).endswith(".sig"):
            time.sleep(0.05)
        return super().find_manifest(reference, target, deadline=deadline)


def test_the_item_limit_counts_in_listing_order_whatever_answers_first(
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:
    registry = _SlowSignatures()
    payload = simple_signing_payload(DIGEST)
    for _ in range(2):
        registry.add_signature(DIGEST, payload, sign(signing_key, payload))
    registry.referrers = [
        FakeDescriptor(OCI_MANIFEST, MISSING, 10, artifact_type=BUNDLE_MEDIA_TYPE),
        FakeDescriptor(OCI_MANIFEST, REFUSED, 10, artifact_type=BUNDLE_MEDIA_TYPE),
    ]
    fan_out = FanOut(8, name="test-discovery")
    try:
        parallel = _find(registry, max_items=2, fan_out=fan_out)
    finally:
        fan_out.close()

    assert parallel == _find(registry, max_items=2, fan_out=None)
    assert len(parallel.signatures) == 2  # the .sig layers took the two items
    assert parallel.problems == (f"referrers of {DIGEST}: more than 2 items, the rest ignored",)


class _FailingAttestations(InMemoryRegistry):
    def find_manifest(self, reference: ImageReference, target: str | Digest, *,
                      deadline: float | None = None) -> FakeManifest | None:  # fmt: skip
        if str(target).endswith(".att"):
            raise UpstreamUnavailableError("registry fake answered 503 fetching the .att")
        return super().find_manifest(reference, target, deadline=deadline)


def test_a_lookup_that_fails_is_raised_and_nothing_after_it_is_planned(
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:
    registry = _FailingAttestations()
    payload = simple_signing_payload(DIGEST)
    registry.add_signature(DIGEST, payload, sign(signing_key, payload))
    fan_out = FanOut(8, name="test-discovery")
    try:
        with pytest.raises(UpstreamUnavailableError, match="fetching the .att"):
            _find(registry, max_items=3, fan_out=fan_out)
    finally:
        fan_out.close()
    with pytest.raises(UpstreamUnavailableError, match="fetching the .att"):
        _find(registry, max_items=3, fan_out=None)


def test_a_closed_pool_fails_the_lookup_instead_of_waiting_forever(
    registry: InMemoryRegistry, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    payload = simple_signing_payload(DIGEST)
    registry.add_signature(DIGEST, payload, sign(signing_key, payload))
    fan_out = FanOut(8, name="test-discovery")
    fan_out.submit(lambda: None)
    assert fan_out._pool is not None
    fan_out._pool.shutdown(wait=True)  # as at shutdown, while an evaluation is under way

    with pytest.raises(RuntimeError, match="shutdown"):
        _find(registry, max_items=3, fan_out=fan_out)


DSSE = "application/vnd.dsse.envelope.v1+json"


def _add_attestations(registry: InMemoryRegistry, count: int) -> None:
    layers = []
    for number in range(count):
        blob = registry.add_blob(b'{"payloadType": "x", "payload": "%d"}' % number)
        layers.append(FakeDescriptor(DSSE, blob.digest, blob.size))
    registry.tags[f"{DIGEST.cosign_tag_prefix}.att"] = FakeManifest(
        Digest("sha256", "1" * 64), OCI_MANIFEST, tuple(layers)
    )


class _SignaturesAfterAttestationBlobs(InMemoryRegistry):
    """Answers the ``.sig`` lookup only once an ``.att`` blob was fetched (or after 5 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.att_blob_fetched = threading.Event()
        self.waited_in_vain = False

    def find_manifest(self, reference: ImageReference, target: str | Digest, *,
                      deadline: float | None = None) -> FakeManifest | None:  # fmt: skip
        if str(target).endswith(".sig"):
            self.waited_in_vain = not self.att_blob_fetched.wait(5)
        return super().find_manifest(reference, target, deadline=deadline)

    def get_blob(self, reference: ImageReference, digest: Digest, *, size: int | None = None,
                 max_bytes: int | None = None, deadline: float | None = None) -> bytes:  # fmt: skip
        content = super().get_blob(reference, digest, size=size, max_bytes=max_bytes,
                                   deadline=deadline)  # fmt: skip
        if content.startswith(b'{"payloadType"'):
            self.att_blob_fetched.set()
        return content


def test_attestation_blobs_are_fetched_before_the_signatures_answer(
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:
    registry = _SignaturesAfterAttestationBlobs()
    payload = simple_signing_payload(DIGEST)
    registry.add_signature(DIGEST, payload, sign(signing_key, payload))
    _add_attestations(registry, 2)
    fan_out = FanOut(8, name="test-discovery")
    try:
        material = _find(registry, max_items=3, fan_out=fan_out)
    finally:
        fan_out.close()

    assert not registry.waited_in_vain, "the .att blobs waited for the .sig lookup"
    assert len(material.signatures) == 1
    assert len(material.attestations) == 2


def test_attestations_fetched_early_still_count_after_the_signatures(
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:
    registry = _SlowSignatures()
    payload = simple_signing_payload(DIGEST)
    registry.add_signature(DIGEST, payload, sign(signing_key, payload))
    _add_attestations(registry, 2)
    fan_out = FanOut(8, name="test-discovery")
    try:
        parallel = _find(registry, max_items=2, fan_out=fan_out)
    finally:
        fan_out.close()

    assert parallel == _find(registry, max_items=2, fan_out=None)
    assert (len(parallel.signatures), len(parallel.attestations)) == (1, 1)
    assert parallel.problems == (
        f"{DIGEST.cosign_tag_prefix}.att: more than 2 items, the rest ignored",
    )
