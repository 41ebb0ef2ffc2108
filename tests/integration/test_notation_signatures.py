"""Notation signatures end to end: images in the loopback registry signed by the real
``notation`` CLI (JWS and COSE, its ``cert generate-test`` CA), decided by the real application
(``create_app``: digest resolution, the ``signatures`` collector, embedded OPA with the shipped
policies, SQLite audit) through ``POST /v1/evaluations`` and ``POST /admission/validate``.

Needs ``scripts/test-servers`` (registry, ``GATEKEEPER_NOTATION``); skips only when it is not running.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest
import yaml
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from gatekeeper.config import load_settings
from gatekeeper.domain.reference import parse_digest
from tests.helpers.app import admitted, evaluated
from tests.integration.cosign_fixtures import push_image, registry_host
from tests.integration.notation_fixtures import (
    OCI_MANIFEST,
    NotationCli,
    RegistryWriter,
    notation_binary,
)
from tests.integration.test_admission_signatures import deployment_review
from tests.unit.verify.notation_helpers import (
    PROFILE,
    EnvelopeSpec,
    Target,
    make_chain,
    trust_config,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TRUSTED = "wabbit-networks.io"
UNTRUSTED = "untrusted.example"
FORMATS = ["jws", "cose"]
#: A locally made chain standing in for AWS Signer's root -> issuing CA -> signing certificate.
AWS_SIGNER_CHAIN = make_chain(organization="AWS Signer Test", now=datetime.now(UTC))


def trust_policy(name: str, scopes: list[str]) -> dict[str, Any]:
    return {
        "version": "1.0",
        "trustPolicies": [{
            "name": name,
            "registryScopes": scopes,
            "signatureVerification": {"level": "strict"},
            "trustStores": ["ca:wabbit-networks"],
            "trustedIdentities": [f"x509.subject: C=US, ST=WA, O=Notary, CN={TRUSTED}"],
        }],
    }  # fmt: skip


@dataclass
class Gate:
    client: TestClient
    host: str
    notation: NotationCli
    workdir: Path

    def image(self, *, key: str | None, signature_format: str = "jws",
              expiry: str | None = None, prefix: str = "notation") -> tuple[str, str]:  # fmt: skip
        repository = f"{prefix}/{uuid.uuid4().hex[:12]}"
        digest = push_image(self.host, f"{repository}:1.0", repository, self.workdir)
        if key is not None:
            self.notation.sign(f"{self.host}/{repository}@{digest}", key=key,
                               signature_format=signature_format, expiry=expiry)  # fmt: skip
        return f"{self.host}/{repository}:1.0", str(digest)

    def evaluate(self, image: str) -> dict[str, Any]:
        return evaluated(self.client, {"images": [image], "environment": "staging"})

    def admit(self, image: str, uid: str) -> dict[str, Any]:
        return admitted(self.client, deployment_review(uid, [image]))


@pytest.fixture(scope="module")
def gate(opa_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    host = registry_host()
    notation = NotationCli(notation_binary(), tmp_path_factory.mktemp("notation-home"))
    trusted_pem = notation.generate_test_key(TRUSTED)
    notation.generate_test_key(UNTRUSTED)
    workdir = tmp_path_factory.mktemp("gate")
    policy_dir = workdir / "policies"
    shutil.copytree(REPO / "policies", policy_dir)
    signatures = {
        "authorities": [
            {"name": "wabbit", "notation": {
                "trust_store": {"ca:wabbit-networks": [trusted_pem]},
                "trust_policy": trust_policy("all-images", ["*"])}},
            {"name": "wabbit-elsewhere", "notation": {
                "trust_store": {"ca:wabbit-networks": [trusted_pem]},
                "trust_policy": trust_policy("elsewhere", [f"{host}/elsewhere/app"])}},
            {"name": "aws-signer", "notation": trust_config(
                {"signingAuthority:aws-signer-ts": [AWS_SIGNER_CHAIN.root_pem]},
                identities=[PROFILE], override={"revocation": "log"})},
        ],
        "images": [
            {"glob": f"{host}/aws-signer/**", "authorities": ["aws-signer"]},
            {"glob": f"{host}/notation-scope/**", "authorities": ["wabbit-elsewhere"]},
            {"glob": f"{host}/**", "authorities": ["wabbit"]},
        ],
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith("GATEKEEPER_") and not name.startswith("GATEKEEPER_TEST_"):
                env.delenv(name)
        settings = load_settings(
            database_url=f"sqlite:///{workdir / 'audit.db'}", opa_binary=opa_binary,
            policy_dir=policy_dir, policy_tests_dir=REPO / "rego-tests", metrics_port=0,
            insecure_disable_auth=True, audit_spool_dir=workdir / "audit-spool",
            resolve_digests=True, default_environment="staging", trusted_root="none",
            registry={"hosts": [{"host": host, "plain_http": True}]}, signatures=signatures,
        )  # fmt: skip
        with TestClient(create_app(settings)) as client:
            yield Gate(client, host, notation, workdir)


def denial(decision: dict[str, Any], image: str, reason: str, detail: str) -> str:
    digest = decision["images"][0]["digest"]
    authority = decision["images"][0]["evidence"]["signatures"]["policy"]["authorities"][0]
    return (
        f"image {image}@{digest}: {reason}; 0 of 1 required authorities verified "
        f"[{authority}: {reason} ({detail})]"
    )


def assert_admission_denied(answer: dict[str, Any], image: str, expected: str) -> None:
    """The AdmissionReview answer names the field, the image and the same reason."""
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 403
    decision_id = answer["auditAnnotations"]["decision-id"]
    assert answer["status"]["message"] == (
        f"spec.template.spec.containers[0].image ({image}): {expected} (decision {decision_id})"
    )


def only_violation(decision: dict[str, Any]) -> str:
    assert decision["verdict"] == "deny", decision
    assert [v["policy"] for v in decision["violations"]] == ["signatures"], decision["violations"]
    message: str = decision["violations"][0]["message"]
    return message


@pytest.mark.parametrize("signature_format", FORMATS)
def test_signed_image_is_allowed_through_the_rest_api(gate: Gate, signature_format: str) -> None:
    image, digest = gate.image(key=TRUSTED, signature_format=signature_format)

    decision = gate.evaluate(image)

    assert decision["verdict"] == "allow", decision["violations"]
    assert decision["images"][0]["digest"] == digest
    evidence = decision["images"][0]["evidence"]["signatures"]
    assert evidence["status"] == "verified"
    authority = evidence["authorities"]["wabbit"]
    assert authority["kind"] == "notation"
    assert authority["trust_policy"]["name"] == "all-images"
    (signature,) = authority["signatures"]
    assert signature["format"] == signature_format
    assert signature["signing_scheme"] == "notary.x509"
    assert signature["signer"]["subject"] == f"CN={TRUSTED},O=Notary,L=Seattle,ST=WA,C=US"
    assert signature["validations"] == {
        "integrity": "passed", "authenticity": "passed", "authenticTimestamp": "passed",
        "expiry": "passed (no expiry)", "revocation": "passed (no revocation information)",
    }  # fmt: skip


@pytest.mark.parametrize("signature_format", FORMATS)
def test_signed_image_is_admitted(gate: Gate, signature_format: str) -> None:
    image, _ = gate.image(key=TRUSTED, signature_format=signature_format)

    answer = gate.admit(image, f"uid-notation-{signature_format}")

    assert answer["allowed"] is True, answer["status"]


def _flip_signature(envelope: bytes) -> bytes:
    """Change one bit of the primitive signature, leaving the envelope well-formed."""
    if envelope.startswith(b"{"):
        document = json.loads(envelope)
        raw = bytearray(base64.urlsafe_b64decode(document["signature"] + "=="))
        raw[-1] ^= 0x01
        document["signature"] = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
        return json.dumps(document).encode()
    message = cbor2.loads(envelope)
    protected, unprotected, payload, signature = message.value
    changed = bytearray(signature)
    changed[-1] ^= 0x01
    return cbor2.dumps(cbor2.CBORTag(18, [protected, dict(unprotected), payload, bytes(changed)]))


@pytest.mark.parametrize("signature_format", FORMATS)
def test_tampered_envelope_is_denied(gate: Gate, signature_format: str) -> None:
    image, digest = gate.image(key=TRUSTED, signature_format=signature_format)
    writer = RegistryWriter(gate.host)
    try:
        repository = image.split("/", 1)[1].rsplit(":", 1)[0]
        writer.replace_signatures(repository, parse_digest(digest), _flip_signature)
    finally:
        writer.close()

    decision = gate.evaluate(image)
    answer = gate.admit(image, f"uid-tampered-{signature_format}")

    expected = denial(decision, image, "signature invalid",
                      f"integrity: {signature_format.upper()} signature does not verify with its "
                      "signing certificate")  # fmt: skip
    assert only_violation(decision) == expected
    assert_admission_denied(answer, image, expected)


@pytest.mark.parametrize("signature_format", FORMATS)
def test_untrusted_chain_is_denied(gate: Gate, signature_format: str) -> None:
    image, _ = gate.image(key=UNTRUSTED, signature_format=signature_format)

    decision = gate.evaluate(image)
    answer = gate.admit(image, f"uid-untrusted-{signature_format}")

    subject = f"CN={UNTRUSTED},O=Notary,L=Seattle,ST=WA,C=US"
    expected = denial(
        decision, image, "certificate not trusted",
        f"authenticity: certificate chain of {subject} (root {subject}) does not lead to a "
        "certificate in ca:wabbit-networks",
    )  # fmt: skip
    assert only_violation(decision) == expected
    assert_admission_denied(answer, image, expected)


@pytest.mark.parametrize("signature_format", FORMATS)
def test_expired_signature_is_denied(gate: Gate, signature_format: str) -> None:
    image, _ = gate.image(key=TRUSTED, signature_format=signature_format, expiry="1s")
    time.sleep(1.5)  # notation's smallest expiry is one second from the signing time

    decision = gate.evaluate(image)
    answer = gate.admit(image, f"uid-expired-{signature_format}")

    authority = decision["images"][0]["evidence"]["signatures"]["authorities"]["wabbit"]
    (signature,) = authority["signatures"]
    assert signature["validations"]["expiry"] == "failed"
    assert signature["expiry"].endswith("Z")
    expected = denial(
        decision, image, "signature expired", f"expiry: signature expired at {signature['expiry']}"
    )
    assert only_violation(decision) == expected
    assert_admission_denied(answer, image, expected)


@pytest.mark.parametrize("signature_format", FORMATS)
def test_wrong_registry_scope_is_denied(gate: Gate, signature_format: str) -> None:
    image, _ = gate.image(key=TRUSTED, signature_format=signature_format, prefix="notation-scope")
    repository = image.rsplit(":", 1)[0]

    decision = gate.evaluate(image)
    answer = gate.admit(image, f"uid-scope-{signature_format}")

    expected = denial(
        decision, image, "no Notation trust policy covers this repository",
        f"no trust policy has {repository} in its registryScopes "
        f"(scopes: {gate.host}/elsewhere/app)",
    )  # fmt: skip
    assert only_violation(decision) == expected
    assert_admission_denied(answer, image, expected)


def push_aws_signer_signature(gate: Gate, signature_format: str, profile_version: str) -> str:
    image, digest = gate.image(key=None, prefix="aws-signer")
    repository = image.split("/", 1)[1].rsplit(":", 1)[0]
    writer = RegistryWriter(gate.host)
    try:
        served = writer.client.get(f"{writer.base}/{repository}/manifests/{digest}",
                                   headers={"Accept": OCI_MANIFEST})  # fmt: skip
        target = Target(parse_digest(digest), len(served.content))
        spec = EnvelopeSpec(AWS_SIGNER_CHAIN, target.payload(),
                            signing_time=datetime.now(UTC)).aws_signer(profile_version)  # fmt: skip
        envelope, media_type = (
            (spec.jws(), "application/jose+json") if signature_format == "jws"
            else (spec.cose(), "application/cose")
        )  # fmt: skip
        writer.add_signature(repository, parse_digest(digest), envelope, media_type)
    finally:
        writer.close()
    return image


@pytest.mark.parametrize("signature_format", FORMATS)
def test_aws_signer_signing_profile_is_allowed_and_its_unqueried_revocation_warned(
    gate: Gate, signature_format: str
) -> None:
    image = push_aws_signer_signature(gate, signature_format, f"{PROFILE}/AbCdEf1234")

    decision = gate.evaluate(image)

    # Admitted; the check the trust policy only logs is a policy warning, so the verdict is warn.
    assert (decision["verdict"], decision["allowed"]) == ("warn", True), decision["violations"]
    authority = decision["images"][0]["evidence"]["signatures"]["authorities"]["aws-signer"]
    assert authority["verified_signers"][0]["signing_profile_version"] == f"{PROFILE}/AbCdEf1234"
    assert [w["message"] for w in decision["warnings"]] == [
        'authority "aws-signer" verified with a failure its Notation trust policy "images" '
        "(level strict) only logs: revocation: AWS Signer profile and job revocation "
        "(GetRevocationStatus) is not queried by this gatekeeper; set override revocation: log "
        "or skip to accept that"
    ]


@pytest.mark.parametrize("signature_format", FORMATS)
def test_aws_signer_other_signing_profile_is_denied(gate: Gate, signature_format: str) -> None:
    other = PROFILE.replace("release_profile", "someone_else") + "/AbCdEf1234"
    image = push_aws_signer_signature(gate, signature_format, other)

    decision = gate.evaluate(image)

    assert only_violation(decision) == denial(
        decision, image, "identity mismatch",
        f"authenticity: expected signing profile {PROFILE}, signature names {other}",
    )


def test_gatekeeper_verify_reads_a_notation_authority_from_the_yaml_file(gate: Gate) -> None:
    """``gatekeeper verify`` as a process, configured by a YAML file whose trust store names a
    certificate file (what a mounted ConfigMap/Secret gives)."""
    signed, _ = gate.image(key=TRUSTED, signature_format="cose")
    untrusted, _ = gate.image(key=UNTRUSTED, signature_format="jws")
    certificate = gate.workdir / "wabbit-root.crt"
    certificate.write_text((gate.notation.config_dir / "localkeys" / f"{TRUSTED}.crt").read_text())
    config = gate.workdir / "gatekeeper.yaml"
    config.write_text(yaml.safe_dump({
        "registry": {"hosts": [{"host": gate.host, "plain_http": True}]},
        "trusted_root": "none", "ecr_auth": False,
        "signatures": {
            "authorities": [{"name": "wabbit", "notation": {
                "trust_store": {"ca:wabbit-networks": [str(certificate)]},
                "trust_policy": trust_policy("all-images", ["*"])}}],
            "images": [{"glob": f"{gate.host}/**", "authorities": ["wabbit"]}],
        },
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GATEKEEPER_") or k.startswith("GATEKEEPER_TEST_")}  # fmt: skip
    env.update(GATEKEEPER_CONFIG=str(config), GATEKEEPER_INSECURE_DISABLE_AUTH="true",
               GATEKEEPER_DATABASE_URL=f"sqlite:///{gate.workdir / 'cli.db'}")  # fmt: skip

    def verify(image: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gatekeeper", "verify", image], env=env,
                              capture_output=True, text=True, timeout=120, cwd=REPO, check=False)  # fmt: skip

    allowed, denied = verify(signed), verify(untrusted)

    assert allowed.returncode == 0, allowed.stderr
    evidence = json.loads(allowed.stdout)
    assert evidence["authorities"]["wabbit"]["signatures"][0]["format"] == "cose"
    assert denied.returncode == 1
    assert "certificate not trusted" in denied.stderr
    assert "does not lead to a certificate in ca:wabbit-networks" in denied.stderr
