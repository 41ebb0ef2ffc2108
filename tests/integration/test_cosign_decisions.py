"""Signed and unsigned images decided end to end: the real cosign signature in the loopback
registry, the ``signatures`` collector and digest resolver in the real ``EvaluationService``,
and the real OPA evaluating the shipped ``policies/`` (with an allowed SLSA builder configured).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from gatekeeper.domain import Decision, EvaluationRequest, Verdict
from gatekeeper.domain.decision import Source
from gatekeeper.domain.reference import parse_image_reference
from gatekeeper.policy import EmbeddedOpa
from gatekeeper.service import EvaluationService
from gatekeeper.verify import SignatureEvidenceCollector, SignaturePolicySettings, TrustRoot
from tests.fakes import FakeAuditLog
from tests.integration.cosign_fixtures import (
    SLSA_V02_PREDICATE,
    cosign_attest,
    cosign_binary,
    cosign_sign,
    generate_key_pair,
    push_image,
    registry_client,
    registry_host,
    unique_repository,
)

pytestmark = pytest.mark.integration


class Decide(Protocol):
    """Pushes images to the loopback registry and decides them in an environment."""

    def image(self, content: str, *, signed: bool, builder: str | None = None) -> str: ...

    def __call__(self, image: str, environment: str) -> Decision: ...



# Kept for modules that still import it: the shipped policy itself.
PROPOSED_SIGNATURES_POLICY = (
    Path(__file__).resolve().parents[2] / "policies" / "signatures.rego"
).read_text()


@pytest.fixture
def decide(opa_binary: str, policy_dir: Path, tmp_path: Path) -> Iterator[Decide]:
    host = registry_host()
    cosign = cosign_binary("v2")
    keys = generate_key_pair(cosign, tmp_path / "keys")
    data_file = policy_dir / "data.json"
    data = json.loads(data_file.read_text())
    data["gatekeeper"]["config"]["signatures"]["environments"]["production"][
        "allowed_builders"
    ] = ["https://ci.example.com/builders/*"]
    data_file.write_text(json.dumps(data))
    opa = EmbeddedOpa(opa_binary=opa_binary, policy_dir=policy_dir)
    opa.start()
    client = registry_client(host)
    settings = SignaturePolicySettings.from_mapping(
        {
            "authorities": [{"name": "release", "keys": [keys.public_pem], "tlog": False}],
            "images": [{"glob": f"{host}/**", "authorities": ["release"]}],
        }
    )
    collector = SignatureEvidenceCollector(settings, client, TrustRoot.none())
    service = EvaluationService(
        policy_engine=opa.engine, audit_log=FakeAuditLog(), collectors=[collector],
        digest_resolver=client,
    )  # fmt: skip

    class Deciding(Decide):
        def image(self, content: str, *, signed: bool, builder: str | None = None) -> str:
            repository = unique_repository()
            digest = push_image(host, f"{repository}:1.0", content, tmp_path)
            if signed:
                cosign_sign(cosign, keys, f"{host}/{repository}@{digest}", tmp_path)
            if builder is not None:
                predicate = SLSA_V02_PREDICATE | {"builder": {"id": builder}}
                cosign_attest(cosign, keys, f"{host}/{repository}@{digest}", tmp_path,
                              predicate_type="slsaprovenance", predicate=predicate)  # fmt: skip
            return f"{host}/{repository}:1.0"

        def __call__(self, image: str, environment: str) -> Decision:
            request = EvaluationRequest(
                images=(parse_image_reference(image),), source=Source.PIPELINE,
                environment=environment,
            )  # fmt: skip
            return service.evaluate(request, deadline=time.monotonic() + 8)

    try:
        yield Deciding()
    finally:
        client.close()
        opa.stop()


def test_signed_image_is_allowed_and_pinned_to_its_digest(decide: Decide) -> None:
    image = decide.image("signed", signed=True)

    decision = decide(image, "staging")

    assert decision.verdict is Verdict.ALLOW, decision.violations
    assert decision.images[0].digest is not None
    assert decision.images[0].evidence["signatures"]["status"] == "verified"


def test_unsigned_image_is_denied_naming_image_and_reason(decide: Decide) -> None:
    image = decide.image("unsigned", signed=False)

    decision = decide(image, "staging")

    digest = decision.images[0].digest
    assert decision.verdict is Verdict.DENY
    assert [(v.policy, v.image, v.message) for v in decision.violations] == [
        ("signatures", image,
         f"image {image}@{digest}: no signature found; 0 of 1 required authorities verified "
         "[release: no signature found (no cosign signature for this digest)]"),
    ]  # fmt: skip


def test_production_requires_provenance_from_an_allowed_builder(decide: Decide) -> None:
    trusted = decide.image("trusted-build", signed=True, builder="https://ci.example.com/builders/a")
    stranger = decide.image("other-build", signed=True, builder="https://laptop.example/bob")

    allowed = decide(trusted, "production")
    denied = decide(stranger, "production")

    assert allowed.verdict is Verdict.ALLOW, allowed.violations
    assert denied.verdict is Verdict.DENY
    assert [v.message for v in denied.violations] == [
        "no verified SLSA provenance from an allowed builder (found: https://laptop.example/bob)"
    ]
