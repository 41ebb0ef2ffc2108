"""Images signed and attested by the real cosign CLI (v2 and v3) in the real loopback registry,
verified by the ``signatures`` collector: the happy paths and the adversarial cases."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import Digest, parse_image_reference
from gatekeeper.metrics import Metrics
from gatekeeper.registry import OciRegistryClient
from gatekeeper.verify import SignatureEvidenceCollector, SignaturePolicySettings, TrustRoot
from tests.integration.cosign_fixtures import (
    CYCLONEDX_PREDICATE,
    SLSA_V02_PREDICATE,
    KeyPair,
    cosign_attest,
    cosign_binary,
    cosign_sign,
    cosign_verify,
    generate_key_pair,
    push_image,
    registry_client,
    registry_host,
    unique_repository,
)

pytestmark = pytest.mark.integration


@dataclass
class World:
    host: str
    workdir: Path
    cosign_v2: str
    cosign_v3: str
    trusted: KeyPair
    stranger: KeyPair
    client: OciRegistryClient


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    host = registry_host()
    cosign_v2, cosign_v3 = cosign_binary("v2"), cosign_binary("v3")
    workdir = tmp_path_factory.mktemp("cosign")
    trusted = generate_key_pair(cosign_v2, workdir / "trusted")
    stranger = generate_key_pair(cosign_v2, workdir / "stranger")
    client = registry_client(host)
    yield World(host, workdir, cosign_v2, cosign_v3, trusted, stranger, client)
    client.close()


def _settings(world: World, **extra: Any) -> SignaturePolicySettings:
    document: dict[str, Any] = {
        "authorities": [{"name": "release", "keys": [world.trusted.public_pem], "tlog": False}],
        "images": [{"glob": f"{world.host}/**", "authorities": ["release"]}],
    }
    document.update(extra)
    return SignaturePolicySettings.from_mapping(document)


def _collect(
    world: World,
    image: str,
    settings: SignaturePolicySettings | None = None,
    *,
    collector: SignatureEvidenceCollector | None = None,
) -> dict[str, Any]:
    collector = collector or SignatureEvidenceCollector(
        settings or _settings(world), world.client, TrustRoot.none()
    )
    reference = parse_image_reference(image)
    digest = world.client.resolve_digest(reference)
    context = EvidenceContext("production", "default", deadline=time.monotonic() + 10)
    return dict(collector.collect(reference, digest, context))


def _image(world: World, content: str) -> tuple[str, Digest]:
    repository = unique_repository()
    digest = push_image(world.host, f"{repository}:1.0", content, world.workdir)
    return f"{world.host}/{repository}", digest


def _copy_manifest(world: World, repository: str, source_tag: str, target_tag: str) -> None:
    """Re-tag a manifest inside one repository (what an attacker with push rights can do)."""
    base = f"http://{world.host}/v2/{repository.split('/', 1)[1]}/manifests/"
    request = urllib.request.Request(
        base + source_tag, headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        content, media_type = answer.read(), answer.headers["Content-Type"]
    _put_manifest(world, repository, target_tag, content, media_type)


def _put_manifest(
    world: World, repository: str, tag: str, content: bytes, media_type: str
) -> None:
    url = f"http://{world.host}/v2/{repository.split('/', 1)[1]}/manifests/{tag}"
    request = urllib.request.Request(
        url, data=content, method="PUT", headers={"Content-Type": media_type}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        assert answer.status == 201


# -- happy paths -------------------------------------------------------------------------------


def test_image_signed_by_cosign_v2_is_verified(world: World) -> None:
    name, digest = _image(world, "v2-signed")
    cosign_sign(world.cosign_v2, world.trusted, f"{name}@{digest}", world.workdir)

    evidence = _collect(world, f"{name}:1.0")

    assert evidence["status"] == "verified"
    assert evidence["verified"] is True
    assert evidence["digest"] == str(digest)
    assert evidence["message"] == f"image {name}:1.0: signed by release"
    release = evidence["authorities"]["release"]
    assert release["verified"] is True
    assert release["signatures"][0]["source"] == "sig-tag"
    assert release["verified_signers"] == [
        {"key_id": world_key_id(world), "algorithm": "ecdsa-p256"}
    ]
    assert cosign_verify(world.cosign_v2, world.trusted, f"{name}@{digest}").returncode == 0


def world_key_id(world: World) -> str:
    from gatekeeper.verify import load_public_key

    return load_public_key(world.trusted.public_pem).key_id


def test_image_signed_by_cosign_v3_bundle_is_verified(world: World) -> None:
    name, digest = _image(world, "v3-signed")
    cosign_sign(world.cosign_v3, world.trusted, f"{name}@{digest}", world.workdir)

    evidence = _collect(world, f"{name}:1.0")

    assert evidence["status"] == "verified", evidence["message"]
    signature = evidence["authorities"]["release"]["signatures"][0]
    # The test registry has no referrers API: cosign v3 used the referrers tag fallback.
    assert signature["source"] == "referrers-tag"
    assert signature["tlog"] == "not-required"
    assert evidence["material"]["bundles"] == 1


def test_attestations_of_cosign_v2_are_handed_over(world: World) -> None:
    name, digest = _image(world, "v2-attested")
    image = f"{name}@{digest}"
    cosign_sign(world.cosign_v2, world.trusted, image, world.workdir)
    cosign_attest(world.cosign_v2, world.trusted, image, world.workdir,
                  predicate_type="slsaprovenance", predicate=SLSA_V02_PREDICATE)  # fmt: skip
    cosign_attest(world.cosign_v2, world.trusted, image, world.workdir,
                  predicate_type="cyclonedx", predicate=CYCLONEDX_PREDICATE)  # fmt: skip

    evidence = _collect(world, f"{name}:1.0")

    assert evidence["status"] == "verified"
    by_kind = {a["kind"]: a for a in evidence["attestations"]}
    assert set(by_kind) == {"slsa-provenance-v0.2", "cyclonedx"}
    provenance = by_kind["slsa-provenance-v0.2"]
    assert provenance["predicate_type"] == "https://slsa.dev/provenance/v0.2"
    assert provenance["builder_id"] == "https://ci.example.com/builders/trusted"
    assert provenance["authority"] == "release"
    assert provenance["source"] == "att-tag"
    assert by_kind["cyclonedx"]["predicate"]["components"][0]["name"] == "left-pad"


def test_attestation_of_cosign_v3_is_handed_over(world: World) -> None:
    name, digest = _image(world, "v3-attested")
    image = f"{name}@{digest}"
    cosign_sign(world.cosign_v3, world.trusted, image, world.workdir)
    cosign_attest(world.cosign_v3, world.trusted, image, world.workdir,
                  predicate_type="slsaprovenance", predicate=SLSA_V02_PREDICATE)  # fmt: skip

    evidence = _collect(world, f"{name}:1.0")

    assert evidence["status"] == "verified"
    [attestation] = evidence["attestations"]
    assert attestation["kind"] == "slsa-provenance-v0.2"
    assert attestation["builder_id"] == "https://ci.example.com/builders/trusted"
    assert attestation["source"] == "referrers-tag"


def test_second_evaluation_is_a_cache_hit_counted_in_metrics(world: World) -> None:
    name, digest = _image(world, "cached")
    cosign_sign(world.cosign_v2, world.trusted, f"{name}@{digest}", world.workdir)
    metrics = Metrics()
    collector = SignatureEvidenceCollector(
        _settings(world), world.client, TrustRoot.none(), metrics=metrics
    )

    first = _collect(world, f"{name}:1.0", collector=collector)
    second = _collect(world, f"{name}:1.0", collector=collector)

    assert (first["cache"], second["cache"]) == ("miss", "hit")
    assert {k: v for k, v in first.items() if k != "cache"} == {
        k: v for k, v in second.items() if k != "cache"
    }
    hits = metrics.registry.get_sample_value(
        "gatekeeper_evidence_cache_total", {"cache": "signatures", "result": "hit"}
    )
    assert hits == 1.0


def test_threshold_two_of_two_needs_both_authorities(world: World) -> None:
    name, digest = _image(world, "threshold")
    cosign_sign(world.cosign_v2, world.trusted, f"{name}@{digest}", world.workdir)
    settings = SignaturePolicySettings.from_mapping(
        {
            "authorities": [
                {"name": "release", "keys": [world.trusted.public_pem], "tlog": False},
                {"name": "security", "keys": [world.stranger.public_pem], "tlog": False},
            ],
            "images": [
                {"glob": f"{world.host}/**", "authorities": ["release", "security"], "threshold": 2}
            ],
        }
    )

    evidence = _collect(world, f"{name}:1.0", settings)

    assert evidence["status"] == "unverified"
    assert evidence["verified_count"] == 1
    assert evidence["reason"] == "threshold not met"
    assert evidence["authorities"]["security"]["reason"] == "signature by another key"


# -- adversarial cases -------------------------------------------------------------------------


def test_unsigned_image_is_reported_as_no_signature_found(world: World) -> None:
    name, digest = _image(world, "unsigned")

    evidence = _collect(world, f"{name}:1.0")

    assert evidence["status"] == "unverified"
    assert evidence["reason"] == "no signature found"
    assert evidence["message"].startswith(f"image {name}:1.0@{digest}: no signature found")


def test_tag_moved_to_an_unsigned_digest_after_signing(world: World) -> None:
    repository = unique_repository()
    name = f"{world.host}/{repository}"
    signed = push_image(world.host, f"{repository}:1.0", "before", world.workdir)
    cosign_sign(world.cosign_v2, world.trusted, f"{name}@{signed}", world.workdir)
    moved = push_image(world.host, f"{repository}:1.0", "after", world.workdir)

    evidence = _collect(world, f"{name}:1.0")

    assert moved != signed
    assert evidence["digest"] == str(moved)
    assert evidence["reason"] == "no signature found"


def test_signature_of_another_digest_copied_onto_this_sig_tag(world: World) -> None:
    repository = unique_repository()
    name = f"{world.host}/{repository}"
    signed = push_image(world.host, f"{repository}:signed", "signed", world.workdir)
    victim = push_image(world.host, f"{repository}:1.0", "victim", world.workdir)
    cosign_sign(world.cosign_v2, world.trusted, f"{name}@{signed}", world.workdir)
    _copy_manifest(
        world, name, f"{signed.cosign_tag_prefix}.sig", f"{victim.cosign_tag_prefix}.sig"
    )

    evidence = _collect(world, f"{name}:1.0")

    assert evidence["status"] == "unverified"
    assert evidence["reason"] == "digest mismatch"
    detail = evidence["authorities"]["release"]["detail"]
    assert detail == f"signature is for {signed}, not {victim}"


def test_signature_by_an_unconfigured_key(world: World) -> None:
    name, digest = _image(world, "stranger-signed")
    cosign_sign(world.cosign_v2, world.stranger, f"{name}@{digest}", world.workdir)

    evidence = _collect(world, f"{name}:1.0")

    assert evidence["reason"] == "signature by another key"
    assert evidence["authorities"]["release"]["reason_code"] == "other-key"


def test_attestation_whose_subject_is_another_digest_is_rejected(world: World) -> None:
    repository = unique_repository()
    name = f"{world.host}/{repository}"
    other = push_image(world.host, f"{repository}:other", "other", world.workdir)
    image = push_image(world.host, f"{repository}:1.0", "image", world.workdir)
    cosign_attest(world.cosign_v2, world.trusted, f"{name}@{other}", world.workdir,
                  predicate_type="slsaprovenance", predicate=SLSA_V02_PREDICATE)  # fmt: skip
    _copy_manifest(world, name, f"{other.cosign_tag_prefix}.att", f"{image.cosign_tag_prefix}.att")
    cosign_sign(world.cosign_v2, world.trusted, f"{name}@{image}", world.workdir)

    evidence = _collect(world, f"{name}:1.0")

    assert evidence["status"] == "verified"  # the signature itself is fine
    assert evidence["attestations"] == []
    [rejected] = evidence["authorities"]["release"]["rejected_attestations"]
    assert rejected["reason"] == "digest mismatch"
    assert rejected["predicate_type"] == "https://slsa.dev/provenance/v0.2"


def test_malformed_payload_signed_by_the_trusted_key(world: World) -> None:
    name, digest = _image(world, "malformed")
    payload = world.workdir / "malformed-payload.json"
    payload.write_text('{"critical": "not an object"}')
    cosign_sign(world.cosign_v2, world.trusted, f"{name}@{digest}", world.workdir, payload=payload)

    evidence = _collect(world, f"{name}:1.0")

    assert evidence["reason"] == "malformed signature payload"
    assert evidence["authorities"]["release"]["detail"] == "simple-signing payload is malformed"


def test_oversized_signature_manifest_is_refused(world: World) -> None:
    name, digest = _image(world, "oversized")
    huge = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
        "layers": [],
        "annotations": {f"padding-{i}": "x" * 1000 for i in range(100)},
    }  # fmt: skip
    # The registry needs the config blob to accept the manifest: push the empty JSON blob.
    _push_blob(world, name, b"{}")
    _put_manifest(world, name, f"{digest.cosign_tag_prefix}.sig", json.dumps(huge).encode(),
                  "application/vnd.oci.image.manifest.v1+json")  # fmt: skip
    client = registry_client(world.host, max_manifest_bytes=64 * 1024)
    collector = SignatureEvidenceCollector(_settings(world), client, TrustRoot.none())

    evidence = _collect(world, f"{name}:1.0", collector=collector)

    assert evidence["reason"] == "no signature found"
    [problem] = evidence["material"]["problems"]
    assert problem.startswith(
        f"{digest.cosign_tag_prefix}.sig: registry {world.host}: fetching manifest "
        f"{name.split('/', 1)[1]}:{digest.cosign_tag_prefix}.sig refused: "
    )
    assert problem.endswith("bytes, more than the limit of 65536 bytes")
    assert evidence["authorities"]["release"]["detail"] == problem


def _push_blob(world: World, name: str, data: bytes) -> None:
    import hashlib

    repository = name.split("/", 1)[1]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = urllib.request.Request(
        f"http://{world.host}/v2/{repository}/blobs/uploads/", data=b"", method="POST"
    )
    with urllib.request.urlopen(start, timeout=10) as answer:  # noqa: S310 - loopback
        location = answer.headers["Location"]
    separator = "&" if "?" in location else "?"
    if location.startswith("/"):
        location = f"http://{world.host}{location}"
    upload = urllib.request.Request(
        f"{location}{separator}digest={digest}", data=data, method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    with urllib.request.urlopen(upload, timeout=10) as answer:  # noqa: S310 - loopback
        assert answer.status == 201


def test_tlog_required_but_the_signature_has_no_entry(world: World) -> None:
    name, digest = _image(world, "no-tlog")
    cosign_sign(world.cosign_v2, world.trusted, f"{name}@{digest}", world.workdir)
    settings = SignaturePolicySettings.from_mapping(
        {
            "authorities": [{"name": "release", "keys": [world.trusted.public_pem]}],
            "images": [{"glob": f"{world.host}/**", "authorities": ["release"]}],
        }
    )
    collector = SignatureEvidenceCollector(settings, world.client, TrustRoot.public_good())

    evidence = _collect(world, f"{name}:1.0", collector=collector)

    assert evidence["reason"] == "tlog entry missing"


def test_image_matching_no_policy_follows_the_default(world: World) -> None:
    name, _ = _image(world, "unmatched")
    settings = _settings(world, images=[{"glob": "registry.example.com/**",
                                         "authorities": ["release"]}])  # fmt: skip

    evidence = _collect(world, f"{name}:1.0", settings)

    assert evidence["status"] == "unmatched"
    assert evidence["unmatched_default"] == "deny"
    assert evidence["authorities"] == {}
