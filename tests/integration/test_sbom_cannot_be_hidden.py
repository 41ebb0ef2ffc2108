"""Issue 10.1: an SBOM a caller supplies can never hide one that an authority signed.

The whole gatekeeper as production builds it (``create_app``: bearer auth, SQLite store, embedded
OPA with the shipped ``policies/``), an image in the loopback registry whose CycloneDX SBOM is
attested by the real cosign CLI and lists a banned component. A clean document sent by a
``pipeline`` token (``POST /v1/sboms``, or inline in ``POST /v1/evaluations``) used to replace
the attested one, for that request and for later admission reviews of the same digest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from tests.helpers.app import admitted, evaluated
from tests.helpers.tokens import bearer_headers
from tests.helpers.types import MakeSettings
from tests.integration.cosign_fixtures import (
    KeyPair,
    cosign_attest,
    cosign_binary,
    cosign_sign,
    generate_key_pair,
    push_image,
    registry_host,
    unique_repository,
)
from tests.integration.test_admission_signatures import deployment_review
from tests.unit.sbom.factory import cyclonedx, cyclonedx_component

pytestmark = pytest.mark.integration

SECRET = "an HS256 secret of at least 32 bytes!"
BANNED = "pkg:npm/event-stream@3.3.6"
BANNED_BY_ATTESTATION = (
    f"banned component {BANNED}: malicious release (flatmap-stream) "
    "(listed by attestation by release)"
)


def bearer(*roles: str, sub: str) -> dict[str, str]:
    return bearer_headers(SECRET, *roles, subject=sub)


def pipeline() -> dict[str, str]:
    """A fresh token per request: a module-level token would expire in a long test run."""
    return bearer("pipeline", sub="ci-bot")


@dataclass
class Gate:
    client: TestClient
    host: str
    cosign: str
    keys: KeyPair
    workdir: Path

    def image(self, content: str) -> str:
        repository = unique_repository("hidden")
        digest = push_image(self.host, f"{repository}:1.0", content, self.workdir)
        return f"{self.host}/{repository}@{digest}"

    def attest(self, image: str, document: dict[str, Any]) -> None:
        cosign_attest(self.cosign, self.keys, image, self.workdir,
                      predicate_type="cyclonedx", predicate=document)  # fmt: skip

    def evaluate(self, image: str, **body: Any) -> dict[str, Any]:
        return evaluated(
            self.client,
            {"images": [image], "environment": "production", "namespace": "shop", **body},
            headers=pipeline(),
        )

    def admit(self, image: str, uid: str) -> dict[str, Any]:
        return admitted(self.client, deployment_review(uid, [image]))


@pytest.fixture(scope="module")
def cosign() -> str:
    # Module scope: read before make_settings clears the GATEKEEPER_* environment.
    return cosign_binary("v2")


@pytest.fixture
def gate(make_settings: MakeSettings, cosign: str, policy_dir: Path, tmp_path: Path) -> Iterator[Gate]:  # noqa: ANN001
    host = registry_host()
    keys = generate_key_pair(cosign, tmp_path / "keys")
    data_file = policy_dir / "data.json"
    data = json.loads(data_file.read_text())
    config = data["gatekeeper"]["config"]
    # Only SBOM evidence is under test: production's provenance requirement is lifted (images
    # are still signed, by the same key that attests their SBOM).
    config["signatures"]["environments"]["production"]["require_provenance"] = False
    config.setdefault("sbom", {})["banned_components"] = [
        {"purl": BANNED, "reason": "malicious release (flatmap-stream)"}
    ]
    data_file.write_text(json.dumps(data))
    settings = make_settings(
        auth_hs256_secret=SECRET, insecure_disable_auth=False,
        registry={"hosts": [{"host": host, "plain_http": True}]},
        signatures={
            "authorities": [{"name": "release", "keys": [keys.public_pem], "tlog": False}],
            "images": [{"glob": f"{host}/**", "authorities": ["release"]}],
        },
        policy_watch_interval_seconds=0,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield Gate(client, host, cosign, keys, tmp_path)


def _signed_with_banned_attested_sbom(gate: Gate, content: str) -> str:
    image = gate.image(content)
    cosign_sign(gate.cosign, gate.keys, image, gate.workdir)
    components = [cyclonedx_component(0), cyclonedx_component(1, purl=BANNED, name="event-stream")]
    gate.attest(image, cyclonedx(components))
    return image


def _messages(decision: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v["policy"], v["message"]) for v in decision["violations"]]


def test_the_attested_banned_component_denies_without_any_upload(gate: Gate) -> None:
    image = _signed_with_banned_attested_sbom(gate, "attested-only")

    decision = gate.evaluate(image)

    assert decision["verdict"] == "deny"
    assert _messages(decision) == [("sbom", BANNED_BY_ATTESTATION)]


def test_a_clean_upload_neither_hides_it_now_nor_in_later_admission_reviews(gate: Gate) -> None:
    image = _signed_with_banned_attested_sbom(gate, "clean-upload")
    digest = image.split("@", 1)[1]
    upload = gate.client.post(
        "/v1/sboms", params={"image_digest": digest},
        content=json.dumps(cyclonedx(2)),
        headers={**pipeline(), "Content-Type": "application/vnd.cyclonedx+json"},
    )  # fmt: skip
    assert upload.status_code == 201, upload.text
    assert upload.json()["state"] == "bound"

    decision = gate.evaluate(image)

    assert decision["verdict"] == "deny"
    assert _messages(decision) == [("sbom", BANNED_BY_ATTESTATION)]
    sbom = decision["images"][0]["evidence"]["sbom"]
    assert sorted((d["source"], d["authority"], d["supplied_by"]) for d in sbom["documents"]) == [
        ("attestation", "release", None), ("upload", None, "ci-bot"),
    ]  # fmt: skip

    review = gate.admit(image, "uid-after-upload")

    assert review["allowed"] is False
    assert BANNED_BY_ATTESTATION in review["status"]["message"]


def test_a_clean_inline_sbom_neither_hides_it_now_nor_in_later_admission_reviews(
    gate: Gate,
) -> None:
    image = _signed_with_banned_attested_sbom(gate, "clean-inline")

    decision = gate.evaluate(image, sboms=[{"image": 0, "document": cyclonedx(3)}])

    assert decision["verdict"] == "deny"
    assert _messages(decision) == [("sbom", BANNED_BY_ATTESTATION)]
    inline = [d for d in decision["images"][0]["evidence"]["sbom"]["documents"]
              if d["source"] == "inline"]  # fmt: skip
    assert [(d["supplied_by"], d["component_count"]) for d in inline] == [("ci-bot", 3)]

    review = gate.admit(image, "uid-after-inline")

    assert review["allowed"] is False
    assert BANNED_BY_ATTESTATION in review["status"]["message"]


def test_an_upload_alone_is_a_warning_in_production(gate: Gate) -> None:
    image = gate.image("upload-only")
    cosign_sign(gate.cosign, gate.keys, image, gate.workdir)

    decision = gate.evaluate(image, sboms=[{"image": 0, "document": cyclonedx(1)}])

    assert decision["verdict"] == "warn"
    assert decision["violations"] == []
    assert [(w["policy"], w["message"]) for w in decision["warnings"]] == [
        ("sbom", "no SBOM from attestation in production: accepted with a warning on the SBOM "
                 "from inline by ci-bot"),
    ]  # fmt: skip


def test_an_upload_listing_a_banned_component_still_denies_beside_a_clean_attestation(
    gate: Gate,
) -> None:
    image = gate.image("banned-upload")
    cosign_sign(gate.cosign, gate.keys, image, gate.workdir)
    gate.attest(image, cyclonedx(2))
    banned = cyclonedx([cyclonedx_component(0, purl=BANNED, name="event-stream")])

    decision = gate.evaluate(image, sboms=[{"image": 0, "document": banned}])

    assert _messages(decision) == [
        ("sbom", f"banned component {BANNED}: malicious release (flatmap-stream) "
                 "(listed by inline by ci-bot)"),
    ]  # fmt: skip


def test_an_admission_review_after_a_clean_inline_sbom_and_upload_is_denied(gate: Gate) -> None:
    image = _signed_with_banned_attested_sbom(gate, "admission-only")
    digest = image.split("@", 1)[1]
    assert gate.client.post(
        "/v1/sboms", params={"image_digest": digest}, content=json.dumps(cyclonedx(1)),
        headers={**pipeline(), "Content-Type": "application/vnd.cyclonedx+json"},
    ).status_code == 201  # fmt: skip
    # An inline SBOM sent with a development evaluation is stored for the digest too.
    other_environment = gate.client.post(
        "/v1/evaluations", headers=pipeline(),
        json={"images": [image], "environment": "development",
              "sboms": [{"image": 0, "document": cyclonedx(2)}]},
    )  # fmt: skip
    assert other_environment.status_code == 200, other_environment.text

    review = gate.admit(image, "uid-admission-only")

    assert review["allowed"] is False
    assert review["status"]["code"] == 403
    assert BANNED_BY_ATTESTATION in review["status"]["message"]
