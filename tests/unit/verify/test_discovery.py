"""Finding cosign material: fetched in parallel rounds, recorded in the order of the listing."""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric import ec

from gatekeeper.domain.concurrency import EvaluationMemo, FanOut
from gatekeeper.domain.reference import Digest, parse_image_reference
from gatekeeper.verify.discovery import BUNDLE_MEDIA_TYPE, Material, find_material
from tests.unit.verify.conftest import (
    OCI_MANIFEST,
    FakeDescriptor,
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
