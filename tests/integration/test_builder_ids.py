"""Builder ids as real builders write them, through the whole application.

Images in the loopback registry, signed and attested (SLSA provenance) by the real cosign, the
signatures collector wired from settings, the embedded OPA with the *shipped* ``policies/``
(its production ``allowed_builders`` unchanged). Each builder id is decided through the REST
API and through an AdmissionReview.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from tests.helpers.app import admitted, evaluated
from tests.helpers.types import MakeSettings
from tests.integration.cosign_fixtures import (
    CYCLONEDX_PREDICATE,
    SLSA_V02_PREDICATE,
    cosign_attest,
    cosign_binary,
    cosign_sign,
    generate_key_pair,
    push_image,
    registry_host,
    unique_repository,
)
from tests.integration.test_admission_signatures import deployment_review

pytestmark = pytest.mark.integration

ACME_WORKFLOW = "https://github.com/acme/builder/.github/workflows/build.yml@refs/tags/v1"
SLSA_GENERATOR = (
    "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/"
    "generator_generic_slsa3.yml@refs/tags/v2.1.0"
)
LOOKALIKES = (
    "https://github.com/acme-evil/builder/.github/workflows/build.yml@refs/tags/v1",
    "https://github.com/acme/../evil/.github/workflows/build.yml@refs/tags/v1",
)


class Production:
    def __init__(self, client: TestClient, host: str, tmp_path: Path, cosign: str, keys: Any):
        self.client, self.host, self.tmp_path = client, host, tmp_path
        self.cosign, self.keys = cosign, keys

    def image(self, builder: str) -> str:
        repository = unique_repository()
        digest = push_image(self.host, f"{repository}:1.0", f"built by {builder}", self.tmp_path)
        pinned = f"{self.host}/{repository}@{digest}"
        cosign_sign(self.cosign, self.keys, pinned, self.tmp_path)
        cosign_attest(self.cosign, self.keys, pinned, self.tmp_path,
                      predicate_type="slsaprovenance",
                      predicate=SLSA_V02_PREDICATE | {"builder": {"id": builder}})
        # production also requires an SBOM: attested by the same authority
        cosign_attest(self.cosign, self.keys, pinned, self.tmp_path,
                      predicate_type="cyclonedx", predicate=CYCLONEDX_PREDICATE)
        return f"{self.host}/{repository}:1.0@{digest}"

    def evaluate(self, image: str) -> dict[str, Any]:
        return evaluated(self.client, {"images": [image], "environment": "production"})

    def admit(self, image: str, uid: str) -> dict[str, Any]:
        return admitted(self.client, deployment_review(uid, [image]))


@pytest.fixture
def cosign_v2() -> str:
    """Read before make_settings clears the GATEKEEPER_* variables."""
    return cosign_binary("v2")


@pytest.fixture
def production(cosign_v2: str, tmp_path: Path, make_settings: MakeSettings) -> Iterator[Production]:
    host = registry_host()
    cosign = cosign_v2
    keys = generate_key_pair(cosign, tmp_path / "keys")
    settings = make_settings(
        resolve_digests=True,
        registry={"hosts": [{"host": host, "plain_http": True}]},
        default_environment="production",
        ecr_scan_enabled=False,
        signatures={
            "authorities": [{"name": "release", "keys": [keys.public_pem], "tlog": False}],
            "images": [{"glob": f"{host}/**", "authorities": ["release"]}],
        },
        policy_state_dir=tmp_path / "policy-state",
    )
    with TestClient(create_app(settings)) as client:
        yield Production(client, host, tmp_path, cosign, keys)


@pytest.mark.parametrize("builder", [ACME_WORKFLOW, SLSA_GENERATOR])
def test_provenance_from_a_real_github_builder_is_allowed(production: Production, builder: str) -> None:
    image = production.image(builder)

    decision = production.evaluate(image)

    provenance = [v for v in decision["violations"] if "provenance" in v["message"]]
    assert provenance == [], decision["violations"]
    assert [v["policy"] for v in decision["violations"]] == []
    assert decision["verdict"] == "allow"
    assert production.admit(image, "uid-real")["allowed"] is True


@pytest.mark.parametrize("builder", LOOKALIKES)
def test_a_lookalike_builder_is_denied_naming_it(production: Production, builder: str) -> None:
    image = production.image(builder)

    decision = production.evaluate(image)

    message = f"no verified SLSA provenance from an allowed builder (found: {builder})"
    assert decision["verdict"] == "deny"
    assert decision["violations"] == [{"policy": "signatures", "image": image, "message": message}]
    answer = production.admit(image, "uid-lookalike")
    assert answer["allowed"] is False
    assert message in answer["status"]["message"]
