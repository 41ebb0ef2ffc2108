"""Signed and unsigned images decided end to end: the real cosign signature in the loopback
registry, the ``signatures`` collector and digest resolver in the real ``EvaluationService``,
and the real OPA evaluating ``policies/`` plus the signatures policy.

Until ``policies/signatures.rego`` ships (the lead integrates it), the test drops the proposed
policy (below, byte for byte the proposal) into its private copy of the policies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatekeeper.domain import EvaluationRequest, Verdict
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

PROPOSED_SIGNATURES_POLICY = r"""# Signatures and attestations: decide on input.images[].evidence.signatures (cosign signatures,
# Sigstore bundles and in-toto attestations verified by gatekeeper/verify against the configured
# authorities; see gatekeeper/verify/collector.py for the section's fields).
#
# Settings live in data.gatekeeper.config.signatures.environments.<env>; omitted keys fall back
# to the defaults below:
#
#   require_signature        deny unless the image policy's m-of-n threshold is met ("verified"),
#                            and deny images no image policy matches when its default is "deny"
#   required_authorities     names that must each have verified, on top of the threshold
#   require_provenance       deny unless a verified SLSA provenance attestation names an
#                            allowed builder
#   allowed_builders         globs over builder ids ("*" crosses "/")
#   deny_when_not_collected  with require_signature: deny when there is no evidence.signatures
package gatekeeper.rules.signatures

import data.gatekeeper.config

default_settings := {
	"development": {"require_signature": false, "required_authorities": [], "require_provenance": false, "allowed_builders": [], "deny_when_not_collected": false},
	"staging": {"require_signature": true, "required_authorities": [], "require_provenance": false, "allowed_builders": [], "deny_when_not_collected": true},
	"production": {"require_signature": true, "required_authorities": [], "require_provenance": true, "allowed_builders": [], "deny_when_not_collected": true},
}

settings := object.union(base, configured) if {
	base := object.get(default_settings, input.environment, default_settings.production)
	configured := object.get(config, ["signatures", "environments", input.environment], {})
}

evidence(image) := image.evidence.signatures

deny contains {"image": image.reference, "message": evidence(image).message} if {
	settings.require_signature
	some image in input.images
	evidence(image).status == "unverified"
}

deny contains {"image": image.reference, "message": msg} if {
	settings.require_signature
	some image in input.images
	evidence(image).status == "unmatched"
	evidence(image).unmatched_default == "deny"
	msg := sprintf("no signature policy covers %s/%s; unmatched images are denied", [image.registry, image.repository])
}

deny contains {"image": image.reference, "message": msg} if {
	settings.require_signature
	some image in input.images
	evidence(image).status in {"verified", "unverified"}
	some name in settings.required_authorities
	not evidence(image).authorities[name].verified
	reason := object.get(evidence(image), ["authorities", name, "reason"], "authority not configured for this image")
	msg := sprintf("signature of authority %q is required in %s: %s", [name, input.environment, reason])
}

deny contains {"image": image.reference, "message": msg} if {
	settings.require_signature
	settings.deny_when_not_collected
	some image in input.images
	not image.evidence.signatures
	msg := sprintf("no signature evidence was collected; %s requires signatures", [input.environment])
}

provenance(image) := [a |
	some a in object.get(image, ["evidence", "signatures", "attestations"], [])
	startswith(a.kind, "slsa-provenance")
]

allowed_builder(attestation) if {
	some pattern in settings.allowed_builders
	glob.match(pattern, [], object.get(attestation, "builder_id", ""))
}

deny contains {"image": image.reference, "message": msg} if {
	settings.require_provenance
	some image in input.images
	evidence(image).status in {"verified", "unverified"}
	not any_allowed(image)
	found := sort({b | some a in provenance(image); b := object.get(a, "builder_id", "?")})
	msg := sprintf("no verified SLSA provenance from an allowed builder (found: %s)", [concat_or_none(found)])
}

any_allowed(image) if {
	some attestation in provenance(image)
	allowed_builder(attestation)
}

concat_or_none(items) := "none" if count(items) == 0

concat_or_none(items) := concat(", ", items) if count(items) > 0
"""


@pytest.fixture
def decide(opa_binary: str, policy_dir: Path, tmp_path: Path) -> Iterator[object]:
    host = registry_host()
    cosign = cosign_binary("v2")
    keys = generate_key_pair(cosign, tmp_path / "keys")
    if not (policy_dir / "signatures.rego").exists():
        (policy_dir / "signatures.rego").write_text(PROPOSED_SIGNATURES_POLICY)
    config_dir = policy_dir / "gatekeeper" / "config" / "signatures"
    config_dir.mkdir(parents=True)
    (config_dir / "data.json").write_text(json.dumps({"environments": {"production": {
        "allowed_builders": ["https://ci.example.com/builders/*"]}}}))  # fmt: skip
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

    class Decide:
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

        def __call__(self, image: str, environment: str):  # noqa: ANN204
            request = EvaluationRequest(
                images=(parse_image_reference(image),), source=Source.PIPELINE,
                environment=environment,
            )  # fmt: skip
            return service.evaluate(request, deadline=time.monotonic() + 8)

    try:
        yield Decide()
    finally:
        client.close()
        opa.stop()


def test_signed_image_is_allowed_and_pinned_to_its_digest(decide) -> None:  # noqa: ANN001
    image = decide.image("signed", signed=True)

    decision = decide(image, "staging")

    assert decision.verdict is Verdict.ALLOW, decision.violations
    assert decision.images[0].digest is not None
    assert decision.images[0].evidence["signatures"]["status"] == "verified"


def test_unsigned_image_is_denied_naming_image_and_reason(decide) -> None:  # noqa: ANN001
    image = decide.image("unsigned", signed=False)

    decision = decide(image, "staging")

    digest = decision.images[0].digest
    assert decision.verdict is Verdict.DENY
    assert [(v.policy, v.image, v.message) for v in decision.violations] == [
        ("signatures", image,
         f"image {image}@{digest}: no signature found; 0 of 1 required authorities verified "
         "[release: no signature found (no cosign signature for this digest)]"),
    ]  # fmt: skip


def test_production_requires_provenance_from_an_allowed_builder(decide) -> None:  # noqa: ANN001
    trusted = decide.image("trusted-build", signed=True, builder="https://ci.example.com/builders/a")
    stranger = decide.image("other-build", signed=True, builder="https://laptop.example/bob")

    allowed = decide(trusted, "production")
    denied = decide(stranger, "production")

    assert allowed.verdict is Verdict.ALLOW, allowed.violations
    assert denied.verdict is Verdict.DENY
    assert [v.message for v in denied.violations] == [
        "no verified SLSA provenance from an allowed builder (found: https://laptop.example/bob)"
    ]
