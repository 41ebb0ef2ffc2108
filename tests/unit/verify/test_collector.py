"""The ``signatures`` collector over an in-memory registry (a fake of the verifier's port):
tlog checks against a private Rekor key, and what the cache keeps and what it never keeps."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import Digest, parse_image_reference
from gatekeeper.errors import UpstreamUnavailableError
from gatekeeper.metrics import Metrics
from gatekeeper.verify import SignatureEvidenceCollector, SignaturePolicySettings, TrustRoot
from tests.unit.verify.conftest import (
    InMemoryRegistry,
    PrivateRekor,
    pem_of,
    sign,
    simple_signing_payload,
)

IMAGE = parse_image_reference("registry.example.com/team/app:1.0")
DIGEST = Digest("sha256", "a" * 64)

def context() -> EvidenceContext:
    """A new evaluation's context (each has its own memo: one discovery per evaluation)."""
    return EvidenceContext("production", "default")


def _settings(key_pem: str, *, tlog: bool) -> SignaturePolicySettings:
    return SignaturePolicySettings.from_mapping(
        {
            "authorities": [{"name": "release", "keys": [key_pem], "tlog": tlog}],
            "images": [{"glob": "registry.example.com/team/*", "authorities": ["release"]}],
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_signature_with_a_valid_tlog_entry_is_verified(
    registry: InMemoryRegistry, signing_key: ec.EllipticCurvePrivateKey, private_rekor: PrivateRekor
) -> None:
    payload = simple_signing_payload(DIGEST)
    signature = sign(signing_key, payload)
    bundle = private_rekor.hashedrekord_bundle(signature, payload, pem_of(signing_key))
    registry.add_signature(
        DIGEST, payload, signature, **{"dev.sigstore.cosign/bundle": bundle.decode()}
    )
    collector = SignatureEvidenceCollector(
        _settings(pem_of(signing_key), tlog=True), registry, private_rekor.trust
    )

    evidence = collector.collect(IMAGE, DIGEST, context())

    assert evidence["status"] == "verified"
    assert evidence["authorities"]["release"]["signatures"][0]["tlog"] == "verified"
    assert evidence["trust_root"] == private_rekor.trust.version


def test_tlog_entry_signed_by_another_log_is_invalid(
    registry: InMemoryRegistry, signing_key: ec.EllipticCurvePrivateKey, other_key: ec.EllipticCurvePrivateKey, private_rekor: PrivateRekor
) -> None:
    payload = simple_signing_payload(DIGEST)
    signature = sign(signing_key, payload)
    forged = PrivateRekor(other_key, private_rekor.trust)  # same log id claimed, other key
    bundle = json.loads(forged.hashedrekord_bundle(signature, payload, pem_of(signing_key)))
    bundle["Payload"]["logID"] = private_rekor.log_id
    registry.add_signature(DIGEST, payload, signature,
                           **{"dev.sigstore.cosign/bundle": json.dumps(bundle)})  # fmt: skip
    collector = SignatureEvidenceCollector(
        _settings(pem_of(signing_key), tlog=True), registry, private_rekor.trust
    )

    evidence = collector.collect(IMAGE, DIGEST, context())

    assert evidence["reason"] == "tlog entry invalid"
    assert evidence["authorities"]["release"]["detail"] == (
        "tlog entry's signed timestamp does not verify"
    )


def test_tlog_entry_of_another_signature_does_not_count(
    registry: InMemoryRegistry, signing_key: ec.EllipticCurvePrivateKey, private_rekor: PrivateRekor
) -> None:
    payload = simple_signing_payload(DIGEST)
    signature = sign(signing_key, payload)
    other_payload = simple_signing_payload(Digest("sha256", "b" * 64))
    other_signature = sign(signing_key, other_payload)
    bundle = private_rekor.hashedrekord_bundle(other_signature, other_payload, pem_of(signing_key))
    registry.add_signature(DIGEST, payload, signature,
                           **{"dev.sigstore.cosign/bundle": bundle.decode()})  # fmt: skip
    collector = SignatureEvidenceCollector(
        _settings(pem_of(signing_key), tlog=True), registry, private_rekor.trust
    )

    evidence = collector.collect(IMAGE, DIGEST, context())

    assert evidence["reason"] == "tlog entry does not match the signature"


def test_tlog_entry_integrated_in_the_future_is_invalid(
    registry: InMemoryRegistry, signing_key: ec.EllipticCurvePrivateKey, private_rekor: PrivateRekor
) -> None:
    payload = simple_signing_payload(DIGEST)
    signature = sign(signing_key, payload)
    bundle = private_rekor.hashedrekord_bundle(
        signature, payload, pem_of(signing_key), integrated_time=4_000_000_000
    )
    registry.add_signature(DIGEST, payload, signature,
                           **{"dev.sigstore.cosign/bundle": bundle.decode()})  # fmt: skip
    collector = SignatureEvidenceCollector(
        _settings(pem_of(signing_key), tlog=True), registry, private_rekor.trust
    )

    assert collector.collect(IMAGE, DIGEST, context())["authorities"]["release"]["detail"] == (
        "tlog entry is integrated in the future"
    )


def test_transient_failure_is_never_cached(registry: InMemoryRegistry, signing_key: ec.EllipticCurvePrivateKey) -> None:
    payload = simple_signing_payload(DIGEST)
    registry.add_signature(DIGEST, payload, sign(signing_key, payload))
    metrics = Metrics()
    collector = SignatureEvidenceCollector(
        _settings(pem_of(signing_key), tlog=False), registry, TrustRoot.none(), metrics=metrics
    )
    registry.failures_left = 1

    with pytest.raises(UpstreamUnavailableError):
        collector.collect(IMAGE, DIGEST, context())
    evidence = collector.collect(IMAGE, DIGEST, context())

    assert (evidence["status"], evidence["cache"]) == ("verified", "miss")
    sample = metrics.registry.get_sample_value
    assert sample("gatekeeper_evidence_cache_total", {"cache": "signatures", "result": "miss"}) == 2


def test_definitive_failure_is_cached_briefly(registry: InMemoryRegistry, signing_key: ec.EllipticCurvePrivateKey) -> None:
    clock = Clock()
    collector = SignatureEvidenceCollector(
        _settings(pem_of(signing_key), tlog=False), registry, TrustRoot.none(), monotonic=clock
    )

    first = collector.collect(IMAGE, DIGEST, context())
    clock.now += 29
    second = collector.collect(IMAGE, DIGEST, context())
    calls = registry.calls
    clock.now += 2
    third = collector.collect(IMAGE, DIGEST, context())

    assert first["reason"] == "no signature found"
    assert [first["cache"], second["cache"], third["cache"]] == ["miss", "hit", "miss"]
    assert registry.calls > calls


def test_verified_result_lives_for_the_positive_ttl(
    registry: InMemoryRegistry, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    payload = simple_signing_payload(DIGEST)
    registry.add_signature(DIGEST, payload, sign(signing_key, payload))
    clock = Clock()
    collector = SignatureEvidenceCollector(
        _settings(pem_of(signing_key), tlog=False), registry, TrustRoot.none(), monotonic=clock
    )

    collector.collect(IMAGE, DIGEST, context())
    clock.now += 299
    assert collector.collect(IMAGE, DIGEST, context())["cache"] == "hit"
    clock.now += 2
    assert collector.collect(IMAGE, DIGEST, context())["cache"] == "miss"


def test_cached_evidence_cannot_be_changed_by_a_caller(
    registry: InMemoryRegistry, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    payload = simple_signing_payload(DIGEST)
    registry.add_signature(DIGEST, payload, sign(signing_key, payload))
    collector = SignatureEvidenceCollector(
        _settings(pem_of(signing_key), tlog=False), registry, TrustRoot.none()
    )

    first = collector.collect(IMAGE, DIGEST, context())
    first["authorities"]["release"]["verified"] = False

    assert collector.collect(IMAGE, DIGEST, context())["authorities"]["release"]["verified"] is True


def test_several_signatures_one_good_is_enough(
    registry: InMemoryRegistry, signing_key: ec.EllipticCurvePrivateKey, other_key: ec.EllipticCurvePrivateKey
) -> None:
    payload = simple_signing_payload(DIGEST)
    registry.add_signature(DIGEST, payload, sign(other_key, payload))
    registry.add_signature(DIGEST, payload, sign(signing_key, payload))
    collector = SignatureEvidenceCollector(
        _settings(pem_of(signing_key), tlog=False), registry, TrustRoot.none()
    )

    evidence = collector.collect(IMAGE, DIGEST, context())

    assert evidence["status"] == "verified"
    reasons = [s["reason"] for s in evidence["authorities"]["release"]["signatures"]]
    assert reasons == ["signature by another key", "verified"]
