"""Notation authorities in the ``signatures`` collector: found through the referrers API of a
fake registry, counted towards the image policy's m-of-n threshold like cosign authorities,
and cached no longer than a verified signature stays valid."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from cryptography.x509.oid import NameOID

from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import parse_image_reference
from gatekeeper.verify import SignatureEvidenceCollector, SignaturePolicySettings, TrustRoot
from tests.unit.verify.conftest import InMemoryRegistry, pem_of, sign, simple_signing_payload
from tests.unit.verify.notation_helpers import (
    MANIFEST_TYPE,
    NOW,
    Chain,
    EnvelopeSpec,
    Target,
    make_chain,
    trust_config,
)

IMAGE = parse_image_reference("registry.example.com/team/app:1.0")

def context() -> EvidenceContext:
    """A new evaluation's context (each has its own memo: one discovery per evaluation)."""
    return EvidenceContext("production", "default")

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "layers": []}).encode()


def notation_authority(name: str, chain: Chain) -> dict[str, Any]:
    (organization,) = chain.root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    identity = f"x509.subject: C=US, ST=WA, O={organization.value!s}"
    return {"name": name, "notation": trust_config({f"ca:{name}": [chain.root_pem]},
                                                     identities=[identity])}  # fmt: skip


def collector(registry: InMemoryRegistry, authorities: list[dict[str, Any]], threshold: int,
              now: Any = lambda: NOW, monotonic: Any = None) -> SignatureEvidenceCollector:  # fmt: skip
    settings = SignaturePolicySettings.from_mapping({
        "authorities": authorities,
        "images": [{"glob": "registry.example.com/team/*", "threshold": threshold,
                    "authorities": [a["name"] for a in authorities]}],
    })  # fmt: skip
    extra = {"monotonic": monotonic} if monotonic is not None else {}
    return SignatureEvidenceCollector(settings, registry, TrustRoot.none(), now=now, **extra)


def signed_image(registry: InMemoryRegistry, *chains: Chain, expiry: datetime | None = None) -> Target:
    digest = registry.add_image(MANIFEST)
    target = Target(digest, len(MANIFEST), MANIFEST_TYPE)
    for index, chain in enumerate(chains):
        spec = EnvelopeSpec(chain, target.payload(), expiry=expiry)
        if index % 2:
            registry.add_notation_signature(digest, spec.cose(), "application/cose")
        else:
            registry.add_notation_signature(digest, spec.jws(), "application/jose+json")
    return target


def test_two_of_two_notation_authorities_need_both_signatures(registry: InMemoryRegistry) -> None:
    acme, partner = make_chain(organization="Acme"), make_chain(organization="Partner")
    authorities = [notation_authority("acme", acme), notation_authority("partner", partner)]
    one = signed_image(registry, acme)

    section = collector(registry, authorities, threshold=2).collect(IMAGE, one.digest, context())

    assert (section["status"], section["verified_count"]) == ("unverified", 1)
    assert section["reason"] == "threshold not met"
    assert section["message"] == (
        f"image {IMAGE.original}@{one.digest}: threshold not met; 1 of 2 required authorities "
        "verified [partner: certificate not trusted (authenticity: certificate chain of "
        "CN=SecureBuilder,O=Acme,L=Seattle,ST=WA,C=US (root CN=Acme Root CA,O=Acme,L=Seattle,"
        "ST=WA,C=US) does not lead to a certificate in ca:partner)]"
    )


def test_both_signatures_meet_the_threshold(registry: InMemoryRegistry) -> None:
    acme, partner = make_chain(organization="Acme"), make_chain(organization="Partner")
    authorities = [notation_authority("acme", acme), notation_authority("partner", partner)]
    both = signed_image(registry, acme, partner)

    section = collector(registry, authorities, threshold=2).collect(IMAGE, both.digest, context())

    assert (section["status"], section["verified_count"]) == ("verified", 2)
    assert section["material"]["sources"] == ["referrers-api"]
    assert {a["kind"] for a in section["authorities"].values()} == {"notation"}


def test_a_cosign_key_and_a_notation_authority_count_together(
    registry: InMemoryRegistry, signing_key: Any
) -> None:
    acme = make_chain(organization="Acme")
    image = signed_image(registry, acme)
    registry.add_signature(image.digest, simple_signing_payload(image.digest),
                           sign(signing_key, simple_signing_payload(image.digest)))  # fmt: skip
    authorities = [
        {"name": "release", "keys": [pem_of(signing_key)], "tlog": False},
        notation_authority("acme", acme),
    ]

    section = collector(registry, authorities, threshold=2).collect(IMAGE, image.digest, context())

    assert (section["status"], section["verified_count"]) == ("verified", 2), section["message"]
    assert "kind" not in section["authorities"]["release"]  # cosign evidence is unchanged


def test_a_verified_signature_is_not_cached_past_its_expiry(registry: InMemoryRegistry) -> None:
    acme = make_chain(organization="Acme")
    image = signed_image(registry, acme, expiry=NOW + timedelta(seconds=10))
    clock: dict[str, Any] = {"now": NOW, "monotonic": 1000.0}
    gate = collector(registry, [notation_authority("acme", acme)], threshold=1,
                     now=lambda: clock["now"], monotonic=lambda: clock["monotonic"])  # fmt: skip

    first = gate.collect(IMAGE, image.digest, context())
    clock["now"] += timedelta(seconds=11)
    clock["monotonic"] += 11
    second = gate.collect(IMAGE, image.digest, context())

    assert (first["status"], first["cache"]) == ("verified", "miss")
    assert (second["status"], second["cache"], second["reason"]) == (
        "unverified", "miss", "signature expired"
    )
