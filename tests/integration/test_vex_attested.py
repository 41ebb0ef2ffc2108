"""Issue 14.4: VEX attested with the real cosign CLI (``attest --type openvex`` / ``cyclonedx``)
into the loopback registry, verified like every other attestation, read only when an authority
of the image policy signed it and only for the digest its statements name."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.bridges import AttestedVexSource
from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import Digest, parse_digest, parse_image_reference
from gatekeeper.registry import OciRegistryClient
from gatekeeper.verify import SignatureEvidenceCollector, SignaturePolicySettings, TrustRoot
from gatekeeper.vex import VexEvidenceCollector, VexLimits
from tests.integration.cosign_fixtures import (
    KeyPair,
    cosign_attest,
    cosign_binary,
    generate_key_pair,
    push_image,
    registry_client,
    registry_host,
    unique_repository,
)

pytestmark = pytest.mark.integration

XZ = "CVE-2024-3094"


@dataclass
class World:
    host: str
    cosign: str
    trusted: KeyPair
    stranger: KeyPair
    client: OciRegistryClient
    workdir: Path

    def image(self, content: str) -> tuple[str, Digest]:
        repository = unique_repository("vex")
        digest = push_image(self.host, f"{repository}:1.0", content, self.workdir)
        return f"{self.host}/{repository}@{digest}", digest

    def vex(self, image: str) -> dict[str, Any]:
        signatures = SignatureEvidenceCollector(
            SignaturePolicySettings.from_mapping({
                "authorities": [{"name": "release", "keys": [self.trusted.public_pem],
                                 "tlog": False}],
                "images": [{"glob": f"{self.host}/**", "authorities": ["release"]}],
            }),
            self.client, TrustRoot.none(),
        )  # fmt: skip
        collector = VexEvidenceCollector([AttestedVexSource(signatures, VexLimits())])
        reference = parse_image_reference(image)
        context = EvidenceContext("production", "shop", time.monotonic() + 30)
        signatures.collect(reference, reference.digest, context)  # as the service does, first
        return dict(collector.collect(reference, reference.digest, context))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    host = registry_host()
    cosign = cosign_binary("v2")
    workdir = tmp_path_factory.mktemp("vex")
    client = registry_client(host)
    try:
        yield World(host, cosign, generate_key_pair(cosign, workdir / "trusted"),
                    generate_key_pair(cosign, workdir / "stranger"), client, workdir)  # fmt: skip
    finally:
        client.close()


def openvex(digest: Digest, cve: str = XZ) -> dict[str, Any]:
    return {
        "@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.com/vex/attested",
        "author": "release@example.com", "timestamp": "2026-11-20T00:00:00Z", "version": 1,
        "statements": [{
            "vulnerability": {"name": cve, "aliases": ["GHSA-rxwq-x6h5-x525"]},
            "products": [{"@id": f"pkg:oci/app@{str(digest).replace(':', '%3A')}",
                          "subcomponents": [{"@id": "pkg:deb/debian/xz-utils@5.6.0"}]}],
            "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path",
        }],
    }  # fmt: skip


def test_openvex_attested_by_the_authority_is_read_with_its_source(world: World) -> None:
    image, digest = world.image("openvex-trusted")
    cosign_attest(world.cosign, world.trusted, image, world.workdir,
                  predicate_type="openvex", predicate=openvex(digest))  # fmt: skip

    vex = world.vex(image)

    [statement] = vex["statements"]
    assert {k: statement[k] for k in ("vulnerability", "aliases", "status", "justification",
                                      "products", "packages", "source", "authority")} == {
        "vulnerability": XZ, "aliases": ["GHSA-rxwq-x6h5-x525"], "status": "not_affected",
        "justification": "vulnerable_code_not_in_execute_path", "products": [str(digest)],
        "packages": ["xz-utils"], "source": "attestation", "authority": "release",
    }  # fmt: skip
    assert statement["origin"].startswith("attestation verified by release (att-tag)")


def test_openvex_attested_by_an_unknown_key_is_ignored(world: World) -> None:
    image, digest = world.image("openvex-stranger")
    cosign_attest(world.cosign, world.stranger, image, world.workdir,
                  predicate_type="openvex", predicate=openvex(digest))  # fmt: skip

    vex = world.vex(image)

    assert vex["statements"] == [] and vex["documents"] == []


def test_attested_vex_naming_another_digest_waives_nothing_here(world: World) -> None:
    image, _ = world.image("openvex-other-digest")
    other = parse_digest("sha256:" + "c" * 64)
    cosign_attest(world.cosign, world.trusted, image, world.workdir,
                  predicate_type="openvex", predicate=openvex(other))  # fmt: skip

    vex = world.vex(image)

    assert vex["statements"] == []
    [document] = vex["documents"]
    assert (document["source"], document["statement_count"]) == ("attestation", 1)


def test_cyclonedx_vex_attested_by_the_authority_is_read(world: World) -> None:
    image, digest = world.image("cyclonedx-vex")
    bom = {
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "metadata": {"component": {"type": "container", "name": "app", "bom-ref": "app",
                                   "purl": f"pkg:oci/app@{str(digest).replace(':', '%3A')}"}},
        "components": [{"type": "library", "name": "xz-utils", "version": "5.6.0",
                        "bom-ref": "xz", "purl": "pkg:deb/debian/xz-utils@5.6.0"}],
        "vulnerabilities": [{"id": XZ, "analysis": {"state": "not_affected",
                                                    "justification": "code_not_reachable"},
                             "affects": [{"ref": "xz"}]}],
    }  # fmt: skip
    cosign_attest(world.cosign, world.trusted, image, world.workdir,
                  predicate_type="cyclonedx", predicate=bom)  # fmt: skip

    [statement] = world.vex(image)["statements"]

    assert (statement["status"], statement["justification"], statement["packages"],
            statement["format"], statement["authority"]) == (
        "not_affected", "code_not_reachable", ["xz-utils"], "cyclonedx", "release"
    )  # fmt: skip
