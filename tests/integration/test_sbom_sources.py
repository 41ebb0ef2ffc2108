"""SBOMs from a verified cosign attestation and from an OCI referrer, end to end.

Real things only: images pushed with skopeo to the loopback registry, attestations made by the
real cosign CLI (v2, ``attest --type cyclonedx``), referrers pushed here over the registry's HTTP
API with the ``sha256-<hex>`` index tag fallback maintained the way cosign v3 and oras do (the
Debian registry has no referrers API), decided by the real embedded OPA with ``policies/``.
Only the audit log is the fake implementing the real port.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.bridges import AttestedSbomSource, ReferrerSbomSource
from gatekeeper.domain import EvaluationRequest, Source, Verdict
from gatekeeper.domain.decision import Decision
from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import Digest, parse_image_reference
from gatekeeper.policy import EmbeddedOpa
from gatekeeper.registry import OciRegistryClient
from gatekeeper.sbom import JsonLimits, SbomEvidenceCollector
from gatekeeper.service import EvaluationService
from gatekeeper.verify import SignatureEvidenceCollector, SignaturePolicySettings, TrustRoot
from tests.fakes import FakeAuditLog
from tests.integration.cosign_fixtures import (
    KeyPair,
    cosign_attest,
    cosign_binary,
    cosign_sign,
    generate_key_pair,
    push_image,
    registry_client,
    registry_host,
    unique_repository,
)
from tests.unit.sbom.factory import cyclonedx, cyclonedx_component

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
CYCLONEDX_JSON = "application/vnd.cyclonedx+json"
BANNED = "pkg:npm/event-stream@3.3.6"
BANNED_MESSAGE = (
    f"banned component {BANNED}: malicious release (flatmap-stream) "
    "(listed by attestation by release)"
)
REFERRED_MESSAGE = f"banned component {BANNED}: malicious release (flatmap-stream) (listed by referrer)"

OPA_SETTINGS: dict[str, Any] = {
    # Only SBOM evidence is under test: production's signature requirement is lifted (the
    # signatures collector still runs: it is what verifies the attestations).
    "signatures": {
        "environments": {"production": {"require_signature": False, "require_provenance": False}}
    },
    "sbom": {
        "environments": {"production": {"deny_when_not_collected": True}},
        "banned_components": [{"purl": BANNED, "reason": "malicious release (flatmap-stream)"}],
    },
}


@dataclass
class World:
    host: str
    workdir: Path
    cosign: str
    trusted: KeyPair
    stranger: KeyPair
    client: OciRegistryClient
    opa: EmbeddedOpa

    def signature_settings(self, **extra: Any) -> SignaturePolicySettings:
        return SignaturePolicySettings.from_mapping(
            extra
            | {
                "authorities": [
                    {"name": "release", "keys": [self.trusted.public_pem], "tlog": False}
                ],
                "images": [{"glob": f"{self.host}/**", "authorities": ["release"]}],
            }
        )

    def service(
        self,
        *,
        sbom_max_bytes: int = 32 << 20,
        referrer_max_bytes: int = 32 << 20,
        **signature_settings: Any,
    ) -> EvaluationService:
        signatures = SignatureEvidenceCollector(
            self.signature_settings(**signature_settings), self.client, TrustRoot.none()
        )
        sbom = SbomEvidenceCollector(
            sources=[
                AttestedSbomSource(signatures),
                ReferrerSbomSource(self.client, max_bytes=referrer_max_bytes),
            ],
            json_limits=JsonLimits(max_bytes=sbom_max_bytes),
        )
        return EvaluationService(
            policy_engine=self.opa.engine,
            audit_log=FakeAuditLog(),
            collectors=[signatures, sbom],
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    host = registry_host()
    cosign = cosign_binary("v2")
    workdir = tmp_path_factory.mktemp("sbom-sources")
    trusted = generate_key_pair(cosign, workdir / "trusted")
    stranger = generate_key_pair(cosign, workdir / "stranger")
    config_root = workdir / "opa-data"
    for key, value in OPA_SETTINGS.items():
        folder = config_root / "gatekeeper" / "config" / key
        folder.mkdir(parents=True)
        (folder / "data.json").write_text(json.dumps(value))
    opa_binary = os.environ.get("GATEKEEPER_OPA_BINARY") or str(REPO / ".tools/bin/opa")
    opa = EmbeddedOpa(opa_binary=opa_binary, policy_dir=REPO / "policies", data_paths=[config_root])
    opa.start()
    client = registry_client(host)
    try:
        yield World(host, workdir, cosign, trusted, stranger, client, opa)
    finally:
        client.close()
        opa.stop()


# -- helpers -----------------------------------------------------------------------------------


def _image(world: World, content: str, repository: str | None = None) -> tuple[str, Digest]:
    repository = repository or unique_repository("sbom")
    digest = push_image(world.host, f"{repository}:{content}", content, world.workdir)
    return f"{world.host}/{repository}", digest


def _attest(world: World, image: str, document: object, keys: KeyPair | None = None) -> None:
    cosign_attest(world.cosign, keys or world.trusted, image, world.workdir,
                  predicate_type="cyclonedx", predicate=document)  # fmt: skip


def _evaluate(service: EvaluationService, image: str) -> Decision:
    return service.evaluate(
        EvaluationRequest(
            images=(parse_image_reference(image),),
            source=Source.PIPELINE,
            environment="production",
            namespace="shop",
        )  # fmt: skip
    )


def _document(decision: Decision) -> dict[str, Any]:
    """The one SBOM document found for the decision's only image (with the section's state)."""
    section = decision.images[0].evidence["sbom"]
    [document] = section["documents"]
    assert document["state"] == section["state"]
    return dict(document)


def _messages(decision: Decision) -> set[tuple[str, str]]:
    return {(v.policy, v.message) for v in decision.violations}


def _with_banned(count: int = 2) -> dict[str, Any]:
    components = [cyclonedx_component(i) for i in range(count)]
    components.append(cyclonedx_component(count, purl=BANNED, name="event-stream"))
    return cyclonedx(components)


def _url(world: World, name: str, path: str) -> str:
    return f"http://{world.host}/v2/{name.split('/', 1)[1]}/{path}"


def _push_blob(world: World, name: str, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = urllib.request.Request(_url(world, name, "blobs/uploads/"), data=b"", method="POST")
    with urllib.request.urlopen(start, timeout=10) as answer:  # noqa: S310 - loopback
        location = answer.headers["Location"]
    if location.startswith("/"):
        location = f"http://{world.host}{location}"
    separator = "&" if "?" in location else "?"
    upload = urllib.request.Request(
        f"{location}{separator}digest={digest}", data=data, method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    with urllib.request.urlopen(upload, timeout=10) as answer:  # noqa: S310 - loopback
        assert answer.status == 201
    return {"digest": digest, "size": len(data)}


def _put_manifest(world: World, name: str, reference: str, content: bytes, media_type: str) -> None:
    request = urllib.request.Request(
        _url(world, name, f"manifests/{reference}"), data=content, method="PUT",
        headers={"Content-Type": media_type},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        assert answer.status == 201


def _get_index(world: World, name: str, tag: str) -> dict[str, Any] | None:
    request = urllib.request.Request(
        _url(world, name, f"manifests/{tag}"), headers={"Accept": OCI_INDEX}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            document: dict[str, Any] = json.loads(answer.read())
            return document
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def push_referrer(
    world: World,
    name: str,
    subject: Digest,
    sbom: bytes,
    *,
    listed_under: Digest | None = None,
    layer_media_type: str = CYCLONEDX_JSON,
) -> str:
    """Push an SBOM artifact whose ``subject`` is ``subject`` and list it in the referrers tag
    fallback index of ``listed_under`` (default: the subject), as oras/cosign v3 do on a
    registry without the referrers API. Returns the referrer manifest digest."""
    subject_manifest = world.client.get_manifest(parse_image_reference(name), subject)
    config = _push_blob(world, name, b"{}") | {"mediaType": OCI_EMPTY}
    layer = _push_blob(world, name, sbom) | {
        "mediaType": layer_media_type,
        "annotations": {"org.opencontainers.image.title": "sbom.cdx.json"},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": CYCLONEDX_JSON,
        "config": config,
        "layers": [layer],
        "subject": {
            "mediaType": subject_manifest.media_type,
            "digest": str(subject),
            "size": len(subject_manifest.content),
        },
    }
    content = json.dumps(manifest).encode()
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    _put_manifest(world, name, digest, content, OCI_MANIFEST)
    tag = (listed_under or subject).cosign_tag_prefix
    index = _get_index(world, name, tag) or {
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
    }  # fmt: skip
    index["manifests"].append(
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(content),
         "artifactType": CYCLONEDX_JSON}
    )  # fmt: skip
    _put_manifest(world, name, tag, json.dumps(index).encode(), OCI_INDEX)
    return digest


# -- attestations ------------------------------------------------------------------------------


def test_banned_component_in_an_attested_sbom_is_denied_by_name(world: World) -> None:
    name, digest = _image(world, "attested-banned")
    image = f"{name}@{digest}"
    cosign_sign(world.cosign, world.trusted, image, world.workdir)
    _attest(world, image, _with_banned())

    decision = _evaluate(world.service(), image)

    assert decision.verdict is Verdict.DENY
    assert _messages(decision) == {("sbom", BANNED_MESSAGE)}
    sbom = _document(decision)
    assert sbom["state"] == "bound"
    assert sbom["binding"] == {"method": "attestation", "named_digests": [str(digest)]}
    assert sbom["origin"].startswith("attestation verified by release (att-tag)")
    assert sbom["component_count"] == 3
    assert BANNED in {c["purl"] for c in sbom["components"]}


def test_sbom_attested_by_cosign_v3_as_a_bundle_referrer_is_bound(world: World) -> None:
    name, digest = _image(world, "attested-v3")
    image = f"{name}@{digest}"
    cosign_attest(cosign_binary("v3"), world.trusted, image, world.workdir,
                  predicate_type="cyclonedx", predicate=_with_banned())  # fmt: skip

    decision = _evaluate(world.service(), image)

    assert _messages(decision) == {("sbom", BANNED_MESSAGE)}
    sbom = _document(decision)
    assert sbom["binding"] == {"method": "attestation", "named_digests": [str(digest)]}
    assert sbom["origin"].startswith("attestation verified by release (referrers-tag)")


def test_clean_attested_sbom_is_allowed_without_any_other_sbom(world: World) -> None:
    name, digest = _image(world, "attested-clean")
    image = f"{name}@{digest}"
    _attest(world, image, cyclonedx(3))  # attested, not signed: require_signature is lifted

    decision = _evaluate(world.service(), image)

    assert decision.violations == ()
    assert decision.verdict is Verdict.ALLOW
    assert _document(decision)["binding"]["method"] == "attestation"


def test_attested_sbom_of_another_digest_is_not_counted(world: World) -> None:
    repository = unique_repository("sbom")
    name, other = _image(world, "other", repository)
    _, digest = _image(world, "image", repository)
    _attest(world, f"{name}@{other}", _with_banned())
    # Someone with push rights copies the other digest's attestation onto this digest's tag.
    attestation = world.client.get_manifest(
        parse_image_reference(name), f"{other.cosign_tag_prefix}.att"
    )
    _put_manifest(world, name, f"{digest.cosign_tag_prefix}.att", attestation.content,
                  attestation.media_type)  # fmt: skip

    decision = _evaluate(world.service(), f"{name}@{digest}")

    assert _messages(decision) == {
        ("sbom", "an SBOM is required in production: no SBOM found for the image")
    }
    sbom = decision.images[0].evidence["sbom"]
    assert sbom["state"] == "missing"
    assert sbom["documents"] == []
    [rejected] = decision.images[0].evidence["signatures"]["authorities"]["release"][
        "rejected_attestations"
    ]
    assert rejected["reason"] == "digest mismatch"
    # ... while the other digest itself is denied for its banned component.
    assert _messages(_evaluate(world.service(), f"{name}@{other}")) == {("sbom", BANNED_MESSAGE)}


def test_attested_sbom_by_an_untrusted_key_is_not_counted(world: World) -> None:
    name, digest = _image(world, "stranger")
    image = f"{name}@{digest}"
    _attest(world, image, _with_banned(), keys=world.stranger)

    decision = _evaluate(world.service(), image)

    assert decision.images[0].evidence["sbom"]["state"] == "missing"
    assert ("sbom", BANNED_MESSAGE) not in _messages(decision)


def test_attested_sbom_naming_another_image_in_its_metadata_is_another_artifact(
    world: World,
) -> None:
    name, digest = _image(world, "metadata-other")
    image = f"{name}@{digest}"
    other = "sha256:" + "b" * 64
    subject = {
        "type": "container",
        "name": "app",
        "purl": f"pkg:oci/app@{other.replace(':', '%3A')}",
    }
    _attest(world, image, cyclonedx(2, subject=subject))

    decision = _evaluate(world.service(), image)

    sbom = _document(decision)
    assert sbom["state"] == "another_artifact"
    assert sbom["binding"]["method"] == "attestation"
    [violation] = decision.violations
    assert violation.message.startswith(
        "the SBOM must be bound to the image digest in production: SBOM for another artifact"
    )


def test_oversized_attested_sbom_is_invalid_evidence(world: World) -> None:
    name, digest = _image(world, "attested-big")
    image = f"{name}@{digest}"
    _attest(world, image, cyclonedx(20))

    decision = _evaluate(world.service(sbom_max_bytes=1024), image)

    sbom = _document(decision)
    assert sbom["state"] == "invalid"
    assert sbom["present"] is True
    assert "larger than the limit of 1024 bytes" in sbom["reason"]
    assert decision.verdict is Verdict.DENY


def test_attestation_too_large_to_verify_is_invalid_evidence_not_missing(world: World) -> None:
    name, digest = _image(world, "attested-huge")
    image = f"{name}@{digest}"
    _attest(world, image, cyclonedx(40))

    decision = _evaluate(world.service(max_payload_bytes=4096), image)

    sbom = _document(decision)
    assert sbom["state"] == "invalid"
    assert sbom["origin"] == "attestation (att-tag, claims https://cyclonedx.org/bom)"
    assert sbom["reason"].endswith(
        "larger than the limit of 4096 bytes (signatures max_payload_bytes): not read, not verified"
    )
    assert sbom["binding"]["named_digests"] == []


def test_invalid_attested_sbom_is_invalid_evidence(world: World) -> None:
    name, digest = _image(world, "attested-invalid")
    image = f"{name}@{digest}"
    broken = cyclonedx(2)
    broken["components"][1]["type"] = "not-a-component-type"
    _attest(world, image, broken)

    decision = _evaluate(world.service(), image)

    sbom = _document(decision)
    assert sbom["state"] == "invalid"
    assert "$.components[1].type" in sbom["reason"]


# -- referrers ---------------------------------------------------------------------------------


def test_banned_component_in_a_referrer_sbom_is_denied_by_name(world: World) -> None:
    name, digest = _image(world, "referred-banned")
    referrer = push_referrer(world, name, digest, json.dumps(_with_banned()).encode())

    decision = _evaluate(world.service(), f"{name}@{digest}")

    assert _messages(decision) == {("sbom", REFERRED_MESSAGE)}
    sbom = _document(decision)
    assert sbom["state"] == "bound"
    assert sbom["binding"] == {"method": "referrer", "named_digests": [str(digest)]}
    assert sbom["origin"] == f"referrer {referrer}"


def test_referrer_sbom_with_a_generic_layer_type_is_read_by_its_artifact_type(
    world: World,
) -> None:
    name, digest = _image(world, "referred-tar")
    push_referrer(world, name, digest, json.dumps(cyclonedx(4)).encode(),
                  layer_media_type="application/vnd.oci.image.layer.v1.tar")  # fmt: skip

    decision = _evaluate(world.service(), f"{name}@{digest}")

    # A referrer alone is accepted with a warning in production (the proof is an attestation).
    assert decision.verdict is Verdict.WARN
    assert decision.violations == ()
    assert [(w.policy, w.message) for w in decision.warnings] == [
        ("sbom", "no SBOM from attestation in production: accepted with a warning on the SBOM "
                 "from referrer"),
    ]
    assert _document(decision)["component_count"] == 4


def test_referrer_whose_subject_is_another_digest_is_another_artifact(world: World) -> None:
    repository = unique_repository("sbom")
    name, other = _image(world, "other", repository)
    _, digest = _image(world, "image", repository)
    # Listed in this digest's fallback index, but its own subject is the other image.
    push_referrer(world, name, other, json.dumps(_with_banned()).encode(), listed_under=digest)

    decision = _evaluate(world.service(), f"{name}@{digest}")

    sbom = _document(decision)
    assert sbom["state"] == "another_artifact"
    assert sbom["binding"] == {"method": "referrer", "named_digests": [str(other)]}
    assert sbom["components"] == []
    [violation] = decision.violations
    assert violation.message.startswith(
        "the SBOM must be bound to the image digest in production: SBOM for another artifact: "
        "its referrer names sha256:"
    )


def test_oversized_referrer_sbom_is_invalid_without_being_downloaded(world: World) -> None:
    name, digest = _image(world, "referred-big")
    push_referrer(world, name, digest, json.dumps(cyclonedx(50)).encode())

    decision = _evaluate(world.service(referrer_max_bytes=2048), f"{name}@{digest}")

    sbom = _document(decision)
    assert sbom["state"] == "invalid"
    assert sbom["sha256"] is None
    assert "larger than the limit of 2048 bytes" in sbom["reason"]
    assert decision.verdict is Verdict.DENY


def test_malformed_referrer_sbom_is_invalid(world: World) -> None:
    name, digest = _image(world, "referred-malformed")
    push_referrer(world, name, digest, b'{"bomFormat": "CycloneDX", "specVersion": ')

    decision = _evaluate(world.service(), f"{name}@{digest}")

    sbom = _document(decision)
    assert sbom["state"] == "invalid"
    assert sbom["reason"].startswith("SBOM is invalid: malformed JSON")


def test_attestation_and_referrer_are_both_read_and_both_count(world: World) -> None:
    name, digest = _image(world, "both")
    image = f"{name}@{digest}"
    _attest(world, image, cyclonedx(2))
    push_referrer(world, name, digest, json.dumps(_with_banned()).encode())

    decision = _evaluate(world.service(), image)

    # Issue 10.1: no document hides another; the referrer's banned component denies beside the
    # clean attested SBOM (which alone is proof in production, so no warning).
    assert _messages(decision) == {("sbom", REFERRED_MESSAGE)}
    documents = decision.images[0].evidence["sbom"]["documents"]
    assert [(d["source"], d["component_count"]) for d in documents] == [
        ("attestation", 2), ("referrer", 3),
    ]
    assert decision.warnings == ()


def test_registry_down_is_an_error_not_a_missing_sbom(world: World) -> None:
    name, digest = _image(world, "down")
    down = registry_client(world.host.split(":")[0] + ":1", max_retries=0)
    source = ReferrerSbomSource(down, max_bytes=1 << 20)
    reference = parse_image_reference(f"{world.host.split(':')[0]}:1/{name.split('/', 1)[1]}")
    from gatekeeper.errors import UpstreamUnavailableError

    with pytest.raises(UpstreamUnavailableError):
        source.find(reference, digest, EvidenceContext("production", "shop", time.monotonic() + 5))
    down.close()


# -- cosign attach sbom, and the wiring ---------------------------------------------------------


def test_sbom_attached_by_cosign_is_bound_by_its_tag(world: World) -> None:
    import subprocess

    name, digest = _image(world, "attached")
    document = world.workdir / "attached.cdx.json"
    document.write_text(json.dumps(_with_banned()))
    completed = subprocess.run(
        [world.cosign, "attach", "sbom", "--allow-http-registry", "--type", "cyclonedx",
         "--sbom", str(document), f"{name}@{digest}"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")[-2000:]

    decision = _evaluate(world.service(), f"{name}@{digest}")

    assert _messages(decision) == {("sbom", REFERRED_MESSAGE)}
    sbom = _document(decision)
    assert sbom["origin"] == f"attached sbom tag {digest.cosign_tag_prefix}.sbom"
    assert sbom["binding"] == {"method": "referrer", "named_digests": [str(digest)]}


def test_build_container_wires_attestation_and_referrer_sources(
    world: World, tmp_path: Path
) -> None:
    from gatekeeper.config import Settings
    from gatekeeper.wiring import build_container

    attested_name, attested = _image(world, "wired-attested")
    _attest(world, f"{attested_name}@{attested}", _with_banned())
    referred_name, referred = _image(world, "wired-referred")
    push_referrer(world, referred_name, referred, json.dumps(cyclonedx(5)).encode())
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'gatekeeper.db'}",
        policy_state_dir=tmp_path / "policy-state",
        audit_spool_dir=tmp_path / "spool",
        registry={"hosts": [{"host": world.host, "plain_http": True}]},
        signatures={
            "authorities": [{"name": "release", "keys": [world.trusted.public_pem], "tlog": False}],
            "images": [{"glob": f"{world.host}/**", "authorities": ["release"]}],
        },
    )
    container = build_container(settings)
    try:
        container.sbom_store.create_tables()
        by_name = {c.name: c for c in container.collectors}
        assert list(by_name)[:2] == ["signatures", "sbom"]
        context = EvidenceContext("production", "shop", time.monotonic() + 10)

        def sbom_of(image: str) -> dict[str, Any]:
            reference = parse_image_reference(image)
            for collector in container.collectors[:2]:  # signatures first, as the service does
                section = dict(collector.collect(reference, reference.digest, context))
            return section

        attested_sbom = sbom_of(f"{attested_name}@{attested}")["documents"][0]
        assert attested_sbom["state"] == "bound"
        assert attested_sbom["binding"]["method"] == "attestation"
        assert BANNED in {c["purl"] for c in attested_sbom["components"]}
        referred_sbom = sbom_of(f"{referred_name}@{referred}")["documents"][0]
        assert referred_sbom["state"] == "bound"
        assert referred_sbom["binding"]["method"] == "referrer"
        assert referred_sbom["component_count"] == 5
    finally:
        container.stop()
