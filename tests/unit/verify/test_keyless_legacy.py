"""Keyless verification of cosign's annotation format, with real public-good material.

A real Fulcio certificate, signature and Rekor entry (SET + body) are taken from the
sigstore-conformance ``happy-path-v0.3`` bundle and laid out the way cosign stores a keyless
signature in a ``.sig`` manifest (certificate and Rekor bundle annotations). The signed
content is ``a.txt``, not a simple-signing payload: so every keyless step (chain at the
integration time, SCT, identity, signature, SET, body) must pass before the payload check,
which then rejects it as malformed. Identity and tlog tampering fail earlier, by name.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gatekeeper.domain.reference import Digest
from gatekeeper.verify import Authority, CosignVerifier, KeylessIdentity, TrustRoot
from gatekeeper.verify.cosign import AuthorityResult
from gatekeeper.verify.discovery import CosignSignature, Material

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "sigstore-conformance"
BEACON = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
GITHUB = "https://token.actions.githubusercontent.com"
DIGEST = Digest("sha256", "c" * 64)


def _cosign_layout(*, tamper_set: bool = False, drop_bundle: bool = False) -> CosignSignature:
    bundle = json.loads((ASSETS / "bundle-verify/happy-path-v0.3/bundle.sigstore.json").read_text())
    material = bundle["verificationMaterial"]
    entry = material["tlogEntries"][0]
    certificate = x509.load_der_x509_certificate(
        base64.b64decode(material["certificate"]["rawBytes"])
    )
    signed_entry_timestamp = base64.b64decode(entry["inclusionPromise"]["signedEntryTimestamp"])
    if tamper_set:
        signed_entry_timestamp = signed_entry_timestamp[:-1] + bytes(
            [signed_entry_timestamp[-1] ^ 1]
        )
    rekor_bundle = {
        "SignedEntryTimestamp": base64.b64encode(signed_entry_timestamp).decode(),
        "Payload": {
            "body": entry["canonicalizedBody"],
            "integratedTime": int(entry["integratedTime"]),
            "logIndex": int(entry["logIndex"]),
            "logID": base64.b64decode(entry["logId"]["keyId"]).hex(),
        },
    }
    return CosignSignature(
        payload=(ASSETS / "a.txt").read_bytes(),
        signature=base64.b64decode(bundle["messageSignature"]["signature"]),
        certificate=certificate.public_bytes(serialization.Encoding.PEM),
        chain=None,
        rekor_bundle=None if drop_bundle else json.dumps(rekor_bundle).encode(),
        source="sig-tag",
    )


@pytest.fixture(scope="module")
def verifier() -> CosignVerifier:
    return CosignVerifier(TrustRoot.public_good())


def _verify(
    verifier: CosignVerifier, candidate: CosignSignature, identity: KeylessIdentity
) -> AuthorityResult:
    authority = Authority("ci", identities=(identity,))
    return verifier.verify(
        Material((candidate,), (), (), ("sig-tag",), ()), authority, DIGEST,
        repository="registry.example.com/app",
    )


def test_every_keyless_step_passes_then_the_payload_is_checked(verifier: CosignVerifier) -> None:
    result = _verify(verifier, _cosign_layout(), KeylessIdentity(issuer=GITHUB, subject=BEACON))

    [check] = result.signatures
    assert (check.reason, check.tlog) == ("malformed", "verified")
    assert check.signer == {"subjects": [BEACON], "issuer": GITHUB}


def test_identity_regex_is_a_full_match(verifier: CosignVerifier) -> None:
    matching = KeylessIdentity(
        issuer=GITHUB, subject_regex=r"https://github\.com/sigstore-conformance/.+"
    )
    partial = KeylessIdentity(
        issuer=GITHUB, subject_regex=r"https://github\.com/sigstore-conformance"
    )

    assert _verify(verifier, _cosign_layout(), matching).signatures[0].reason == "malformed"
    assert _verify(verifier, _cosign_layout(), partial).reason == "identity-mismatch"


def test_other_identity_or_issuer_is_an_identity_mismatch(verifier: CosignVerifier) -> None:
    other_subject = KeylessIdentity(
        issuer=GITHUB, subject="https://github.com/acme/app/x.yml@refs/heads/main"
    )
    other_issuer = KeylessIdentity(issuer="https://accounts.google.com", subject=BEACON)

    for identity in (other_subject, other_issuer):
        result = _verify(verifier, _cosign_layout(), identity)
        assert (result.verified, result.reason) == (False, "identity-mismatch")
        assert result.as_evidence()["reason"] == "identity mismatch"


def test_tampered_set_and_missing_entry(verifier: CosignVerifier) -> None:
    identity = KeylessIdentity(issuer=GITHUB, subject=BEACON)

    assert _verify(verifier, _cosign_layout(tamper_set=True), identity).reason == "tlog-invalid"
    assert _verify(verifier, _cosign_layout(drop_bundle=True), identity).reason == "tlog-missing"


def test_certificate_from_another_sigstore_is_not_trusted() -> None:
    staging = CosignVerifier(TrustRoot.staging())
    identity = KeylessIdentity(issuer=GITHUB, subject=BEACON)

    result = _verify(staging, _cosign_layout(), identity)

    # Staging's Rekor keys do not know the production entry: the SET fails first.
    assert (result.reason, result.detail) == (
        "tlog-invalid",
        "tlog entry's signed timestamp does not verify: trusted root sigstore staging has no "
        "log key c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d",
    )


def test_identity_mismatch_detail_keeps_the_expectation_and_the_finding(
    verifier: CosignVerifier,
) -> None:
    expected = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1"
    result = _verify(verifier, _cosign_layout(), KeylessIdentity(issuer=GITHUB, subject=expected))

    assert result.detail == (
        f"expected identity {expected} from issuer {GITHUB}, "
        f"certificate names {BEACON} from issuer {GITHUB}"
    )
