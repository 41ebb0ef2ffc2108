"""The Notation verifier on locally made chains (root CA -> intermediate -> leaf) and envelopes:
the trust policy levels, AWS Signer signing profiles, tampering, and CRL revocation."""

from __future__ import annotations

import base64
import http.server
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gatekeeper.errors import UpstreamUnavailableError
from gatekeeper.verify.cosign import AuthorityResult
from gatekeeper.verify.discovery import NotationSignature
from gatekeeper.verify.notation import NotationVerifier
from gatekeeper.verify.notation_policy import NotationTrust
from tests.helpers.net import serving_in_thread
from tests.unit.verify.notation_helpers import (
    NOW,
    PROFILE,
    PROFILE_VERSION,
    Chain,
    EnvelopeSpec,
    make_chain,
    target,
    trust_config,
)

FORMATS = ["jws", "cose"]
IDENTITY = "x509.subject: C=US, ST=WA, O=Acme Rockets, CN=SecureBuilder"
REPOSITORY = "registry.acme.io/shop/api"


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


def verify(
    trust: dict[str, Any], *specs_and_formats: tuple[EnvelopeSpec, str], repository: str = REPOSITORY,
    now_offset: timedelta = timedelta(0),
) -> AuthorityResult:  # fmt: skip
    verifier = NotationVerifier(now=lambda: NOW + now_offset)
    signatures = [spec.signature(fmt) for spec, fmt in specs_and_formats]
    return verifier.verify(
        "acme", NotationTrust.from_mapping(trust, where="notation"), signatures, repository,
        target().artifact,
    )  # fmt: skip


def ca_trust(chain: Chain, **options: Any) -> dict[str, Any]:
    options.setdefault("identities", [IDENTITY])
    return trust_config({"ca:acme": [chain.root_pem]}, **options)


def evidence(result: AuthorityResult) -> dict[str, Any]:
    return result.as_evidence()


@pytest.mark.parametrize("envelope_format", FORMATS)
def test_chain_through_an_intermediate_to_the_configured_root_verifies(
    chain: Chain, envelope_format: str
) -> None:
    result = verify(ca_trust(chain), (EnvelopeSpec(chain, target().payload()), envelope_format))

    assert result.verified, result.detail
    (signature,) = evidence(result)["signatures"]
    assert signature["signer"]["subject"] == (
        "CN=SecureBuilder,O=Acme Rockets,L=Seattle,ST=WA,C=US"
    )
    assert signature["validations"]["authenticity"] == "passed"
    assert signature["signing_time"] == "2026-11-30T11:55:00Z"


@pytest.mark.parametrize("envelope_format", FORMATS)
def test_rsa_3072_leaf_signs_with_ps384(envelope_format: str) -> None:
    rsa_chain = make_chain(rsa.generate_private_key(public_exponent=65537, key_size=3072))

    result = verify(
        ca_trust(rsa_chain), (EnvelopeSpec(rsa_chain, target().payload()), envelope_format)
    )

    assert result.verified, result.detail


@pytest.mark.parametrize("envelope_format", FORMATS)
def test_chain_to_another_root_is_untrusted(chain: Chain, envelope_format: str) -> None:
    other = make_chain(organization="Evil Corp")

    result = verify(ca_trust(chain), (EnvelopeSpec(other, target().payload()), envelope_format))

    assert (result.verified, result.reason) == (False, "untrusted-certificate")
    assert result.detail == (
        "authenticity: certificate chain of CN=SecureBuilder,O=Evil Corp,L=Seattle,ST=WA,C=US "
        "(root CN=Evil Corp Root CA,O=Evil Corp,L=Seattle,ST=WA,C=US) does not lead to a "
        "certificate in ca:acme"
    )


def test_identity_of_another_subject_is_refused_naming_both(chain: Chain) -> None:
    trust = ca_trust(chain, identities=["x509.subject: C=US, ST=WA, O=Acme Rockets, CN=Other"])

    result = verify(trust, (EnvelopeSpec(chain, target().payload()), "jws"))

    assert result.reason == "identity-mismatch"
    assert result.detail == (
        "authenticity: expected x509.subject: C=US, ST=WA, O=Acme Rockets, CN=Other, certificate "
        "subject is CN=SecureBuilder,O=Acme Rockets,L=Seattle,ST=WA,C=US"
    )


@pytest.mark.parametrize("envelope_format", FORMATS)
def test_signature_for_another_artifact_is_a_digest_mismatch(
    chain: Chain, envelope_format: str
) -> None:
    other = target("another image")

    result = verify(ca_trust(chain), (EnvelopeSpec(chain, other.payload()), envelope_format))

    assert result.reason == "digest-mismatch"
    assert result.detail == f"integrity: signature is for {other.digest}, not {target().digest}"


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"size": 1}, "integrity: signed size 1 is not the manifest's 1234"),
        ({"mediaType": "application/vnd.oci.image.index.v1+json"},
         "integrity: signed media type application/vnd.oci.image.index.v1+json is not "
         "application/vnd.oci.image.manifest.v1+json"),
    ],
)  # fmt: skip
def test_target_size_and_media_type_must_match(
    chain: Chain, changes: dict[str, Any], detail: str
) -> None:
    result = verify(ca_trust(chain), (EnvelopeSpec(chain, target().payload(**changes)), "cose"))

    assert (result.reason, result.detail) == ("digest-mismatch", detail)


@pytest.mark.parametrize("envelope_format", FORMATS)
def test_algorithm_substitution_is_refused(chain: Chain, envelope_format: str) -> None:
    spec = EnvelopeSpec(chain, target().payload(), algorithm="ES384")

    result = verify(ca_trust(chain), (spec, envelope_format))

    assert (result.reason, result.detail) == (
        "invalid", "integrity: alg ES384 does not match the signing key (expects ES256)"
    )


@pytest.mark.parametrize("envelope_format", FORMATS)
def test_signature_by_a_key_other_than_the_certificates_is_invalid(
    chain: Chain, envelope_format: str
) -> None:
    spec = EnvelopeSpec(chain, target().payload(), signing_key=make_chain().leaf_key)

    result = verify(ca_trust(chain), (spec, envelope_format))

    assert (result.reason, result.detail) == (
        "invalid",
        f"integrity: {envelope_format.upper()} signature does not verify with its signing "
        "certificate",
    )


@pytest.mark.parametrize(
    ("spec_changes", "reason", "detail"),
    [
        ({"extra_protected": {"io.example.mustRead": "x"}, "extra_critical": ("io.example.mustRead",)},
         "unsupported", "integrity: critical header io.example.mustRead is not understood by "
         "this verifier"),
        ({"expiry": NOW + timedelta(days=1), "crit": ["io.cncf.notary.signingScheme"]},
         "malformed", "integrity: header io.cncf.notary.expiry must be marked critical"),
        ({"crit": []}, "malformed",
         "integrity: header io.cncf.notary.signingScheme must be marked critical"),
        ({"scheme": "notary.x509.v2"}, "malformed", "integrity: signing scheme 'notary.x509.v2' "
         "is not notary.x509 or notary.x509.signingAuthority"),
        ({"extra_protected": {"io.cncf.notary.verificationPlugin": "com.example.plugin"},
          "extra_critical": ("io.cncf.notary.verificationPlugin",)},
         "unsupported", "integrity: verification plugin com.example.plugin is not supported"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("envelope_format", FORMATS)
def test_critical_headers(
    chain: Chain, envelope_format: str, spec_changes: dict[str, Any], reason: str, detail: str
) -> None:
    spec = EnvelopeSpec(chain, target().payload(), **spec_changes)

    result = verify(ca_trust(chain), (spec, envelope_format))

    assert (result.reason, result.detail) == (reason, detail)


def test_duplicate_protected_header_is_refused(chain: Chain) -> None:
    spec = EnvelopeSpec(chain, target().payload())
    jws = spec.jws()
    # A second "alg" in the protected header: two verifiers could read two algorithms.
    document = json.loads(jws)
    protected = base64.urlsafe_b64decode(document["protected"] + "==").decode()
    protected = protected.replace('{"alg": "ES256",', '{"alg": "ES256", "alg": "ES384",', 1)
    document["protected"] = base64.urlsafe_b64encode(protected.encode()).decode().rstrip("=")
    verifier = NotationVerifier(now=lambda: NOW)
    result = verifier.verify(
        "acme", NotationTrust.from_mapping(ca_trust(chain), where="n"),
        [NotationSignature(json.dumps(document).encode(), "application/jose+json", "m", "s")],
        REPOSITORY, target().artifact,
    )  # fmt: skip

    assert (result.reason, result.detail) == (
        "malformed", "integrity: JWS protected header is not a JSON object without duplicate keys"
    )


def test_leaf_that_is_a_ca_is_refused() -> None:
    ca_leaf = make_chain(leaf_extensions=[
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.KeyUsage(True, False, False, False, False, True, False, False, False), True),
    ])  # fmt: skip

    result = verify(ca_trust(ca_leaf), (EnvelopeSpec(ca_leaf, target().payload()), "jws"))

    assert (result.reason, result.detail) == (
        "untrusted-certificate",
        "authenticity: signing certificate CN=SecureBuilder,O=Acme Rockets,L=Seattle,ST=WA,C=US "
        "is a CA certificate",
    )


# -- levels ------------------------------------------------------------------------------------


@pytest.mark.parametrize("envelope_format", FORMATS)
def test_expired_signature_denies_in_strict_and_is_logged_in_permissive(
    chain: Chain, envelope_format: str
) -> None:
    spec = EnvelopeSpec(chain, target().payload(), expiry=NOW - timedelta(seconds=1))

    strict = verify(ca_trust(chain), (spec, envelope_format))
    permissive = verify(ca_trust(chain, level="permissive"), (spec, envelope_format))
    overridden = verify(ca_trust(chain, override={"expiry": "log"}), (spec, envelope_format))

    assert (strict.verified, strict.reason, strict.detail) == (
        False, "expired", "expiry: signature expired at 2026-11-30T11:59:59Z"
    )
    for result in (permissive, overridden):
        assert result.verified
        assert evidence(result)["logged"] == ["expiry: signature expired at 2026-11-30T11:59:59Z"]
        assert evidence(result)["signatures"][0]["validations"]["expiry"] == "failed (logged)"


def test_audit_level_logs_an_untrusted_chain_but_enforces_integrity(chain: Chain) -> None:
    other = make_chain(organization="Evil Corp")
    audit = ca_trust(chain, level="audit")

    logged = verify(audit, (EnvelopeSpec(other, target().payload()), "jws"))
    tampered = verify(audit, (EnvelopeSpec(other, target("x").payload()), "jws"))

    assert logged.verified
    assert evidence(logged)["logged"][0].startswith("authenticity: certificate chain of ")
    assert (tampered.verified, tampered.reason) == (False, "digest-mismatch")


def test_skip_level_verifies_nothing_and_says_so(chain: Chain) -> None:
    trust = {
        "trust_store": {"ca:acme": [chain.root_pem]},
        "trust_policy": {"version": "1.0", "trustPolicies": [
            {"name": "legacy", "registryScopes": [REPOSITORY],
             "signatureVerification": {"level": "skip"}},
        ]},
    }  # fmt: skip

    result = verify(trust)

    assert (result.verified, result.reason) == (True, "skipped")
    assert evidence(result)["skipped"] is True
    assert result.detail == f"trust policy legacy (level skip) does not verify {REPOSITORY}"


def test_repository_outside_every_scope_is_refused(chain: Chain) -> None:
    trust = ca_trust(chain, scopes=["registry.acme.io/shop/web", "registry.acme.io/shop/db"])

    result = verify(trust, (EnvelopeSpec(chain, target().payload()), "jws"))

    assert (result.verified, result.reason, result.detail) == (
        False, "scope-mismatch",
        f"no trust policy has {REPOSITORY} in its registryScopes "
        "(scopes: registry.acme.io/shop/db, registry.acme.io/shop/web)",
    )  # fmt: skip


def test_chain_not_valid_now_fails_the_authentic_timestamp(chain: Chain) -> None:
    short = make_chain(leaf_not_after=NOW - timedelta(hours=1))

    result = verify(ca_trust(short), (EnvelopeSpec(short, target().payload()), "cose"))

    assert result.reason == "outside-validity"
    assert result.detail.startswith(
        "authenticTimestamp: certificate CN=SecureBuilder,O=Acme Rockets,L=Seattle,ST=WA,C=US is "
        "valid from "
    )


def test_one_valid_signature_among_bad_ones_is_enough(chain: Chain) -> None:
    bad = EnvelopeSpec(make_chain(organization="Evil Corp"), target().payload())
    good = EnvelopeSpec(chain, target().payload())

    result = verify(ca_trust(chain), (bad, "jws"), (good, "cose"))

    assert result.verified
    assert [s["verified"] for s in evidence(result)["signatures"]] == [False, True]


# -- AWS Signer --------------------------------------------------------------------------------


def signer_trust(chain: Chain, identities: list[str], **options: Any) -> dict[str, Any]:
    options.setdefault("override", {"revocation": "skip"})
    return trust_config(
        {"signingAuthority:aws-signer-ts": [chain.root_pem]}, identities=identities, **options
    )


@pytest.mark.parametrize("envelope_format", FORMATS)
@pytest.mark.parametrize(
    "identity", [PROFILE, PROFILE_VERSION, PROFILE.replace("release_profile", "Release_Profile")]
)
def test_aws_signer_profile_arn_matches_its_versions(
    chain: Chain, envelope_format: str, identity: str
) -> None:
    spec = EnvelopeSpec(chain, target().payload()).aws_signer()

    result = verify(signer_trust(chain, [identity]), (spec, envelope_format))

    assert result.verified, result.detail
    (signature,) = evidence(result)["signatures"]
    assert signature["signing_scheme"] == "notary.x509.signingAuthority"
    assert signature["signer"]["signing_profile_version"] == PROFILE_VERSION


@pytest.mark.parametrize("envelope_format", FORMATS)
def test_aws_signer_other_profile_is_an_identity_mismatch(chain: Chain, envelope_format: str) -> None:
    other = "arn:aws:signer:us-west-2:111122223333:/signing-profiles/other_profile/ZzZzZz9876"
    spec = EnvelopeSpec(chain, target().payload()).aws_signer(other)

    result = verify(signer_trust(chain, [PROFILE]), (spec, envelope_format))

    assert (result.reason, result.detail) == (
        "identity-mismatch", f"authenticity: expected signing profile {PROFILE}, signature names {other}"
    )


def test_aws_signer_version_arn_does_not_match_another_version(chain: Chain) -> None:
    spec = EnvelopeSpec(chain, target().payload()).aws_signer(f"{PROFILE}/ZzZzZz9876")

    result = verify(signer_trust(chain, [PROFILE_VERSION]), (spec, "jws"))

    assert result.reason == "identity-mismatch"


def test_aws_signer_refuses_the_wildcard_identity(chain: Chain) -> None:
    spec = EnvelopeSpec(chain, target().payload()).aws_signer()

    result = verify(signer_trust(chain, ["*"]), (spec, "jws"))

    assert (result.reason, result.detail) == (
        "identity-mismatch",
        "authenticity: AWS Signer signatures need signing profile ARNs as trusted identities, not '*'",
    )


def test_signing_authority_signature_needs_a_signing_authority_store(chain: Chain) -> None:
    spec = EnvelopeSpec(chain, target().payload()).aws_signer()
    trust = ca_trust(chain, identities=[PROFILE], override={"revocation": "skip"})

    result = verify(trust, (spec, "jws"))

    assert (result.reason, result.detail) == (
        "untrusted-certificate",
        "authenticity: trust policy images has no signingAuthority trust store for a "
        "notary.x509.signingAuthority signature",
    )


def test_ca_signature_is_not_accepted_through_a_signing_authority_store(chain: Chain) -> None:
    # A CA-issued signer must not pass itself off as a signing authority, nor the reverse.
    result = verify(signer_trust(chain, [PROFILE]), (EnvelopeSpec(chain, target().payload()), "jws"))

    assert result.reason == "untrusted-certificate"
    assert "has no ca trust store for a notary.x509 signature" in result.detail


def test_aws_signer_authentic_signing_time_must_be_inside_the_chain_validity() -> None:
    late = make_chain(leaf_not_after=NOW - timedelta(days=2))
    spec = EnvelopeSpec(late, target().payload(), signing_time=NOW - timedelta(days=1)).aws_signer()

    result = verify(signer_trust(late, [PROFILE]), (spec, "cose"))

    assert (result.reason, result.detail) == (
        "outside-validity",
        "authenticTimestamp: certificate CN=SecureBuilder,O=Acme Rockets,L=Seattle,ST=WA,C=US "
        "was not valid at the authentic signing time 2026-11-29T12:00:00Z",
    )


def test_aws_signer_profile_revocation_is_not_queried_so_strict_fails(chain: Chain) -> None:
    spec = EnvelopeSpec(chain, target().payload()).aws_signer()

    result = verify(signer_trust(chain, [PROFILE], override=None), (spec, "jws"))

    assert (result.reason, result.detail) == (
        "revocation-unavailable",
        "revocation: AWS Signer profile and job revocation (GetRevocationStatus) is not queried "
        "by this gatekeeper; set override revocation: log or skip to accept that",
    )


# -- revocation --------------------------------------------------------------------------------


def crl(chain: Chain, *, revoked: list[x509.Certificate], next_update: timedelta = timedelta(days=7),
        invalidity: Any = None) -> bytes:  # fmt: skip
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(chain.intermediate.subject)
        .last_update(NOW - timedelta(days=1)).next_update(NOW + next_update)
    )  # fmt: skip
    for certificate in revoked:
        entry = (
            x509.RevokedCertificateBuilder().serial_number(certificate.serial_number)
            .revocation_date(NOW - timedelta(hours=2))
        )  # fmt: skip
        if invalidity is not None:
            entry = entry.add_extension(x509.InvalidityDate(invalidity), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    signed = builder.sign(chain.intermediate_key, hashes.SHA256())
    return signed.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def crl_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A real HTTP server on loopback serving CRLs by path."""
    served: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if "delay" in served:
                time.sleep(float(served["delay"]))
            body = served.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that gave up on a slow answer: expected in the budget test

    server = Server(("127.0.0.1", 0), Handler)
    with serving_in_thread(server):
        yield f"http://127.0.0.1:{server.server_address[1]}", served


@pytest.mark.parametrize("envelope_format", FORMATS)
def test_leaf_listed_in_a_crl_file_is_revoked(
    chain: Chain, envelope_format: str, tmp_path: Path
) -> None:
    path = tmp_path / "signing-ca.crl"
    path.write_bytes(crl(chain, revoked=[chain.leaf]))

    result = verify(ca_trust(chain, revocation={"crls": [str(path)]}),
                    (EnvelopeSpec(chain, target().payload()), envelope_format))  # fmt: skip

    assert (result.reason, result.detail) == (
        "revoked",
        "revocation: certificate CN=SecureBuilder,O=Acme Rockets,L=Seattle,ST=WA,C=US "
        f"(serial {chain.leaf.serial_number:x}) is revoked since 2026-11-30T10:00:00+00:00",
    )


def test_crl_over_loopback_http_that_does_not_list_the_leaf_passes(
    chain: Chain, crl_server: tuple[str, dict[str, bytes]]
) -> None:
    url, served = crl_server
    served["/signing-ca.crl"] = crl(chain, revoked=[])

    result = verify(ca_trust(chain, revocation={"crls": [f"{url}/signing-ca.crl"]}),
                    (EnvelopeSpec(chain, target().payload()), "jws"))  # fmt: skip

    assert result.verified, result.detail
    assert evidence(result)["signatures"][0]["validations"]["revocation"] == "passed"


def test_unreachable_crl_is_unavailable_enforced_or_logged(
    chain: Chain, crl_server: tuple[str, dict[str, bytes]]
) -> None:
    url, _ = crl_server
    revocation = {"crls": [f"{url}/missing.crl"], "timeout_seconds": 2}
    spec = EnvelopeSpec(chain, target().payload())

    strict = verify(ca_trust(chain, revocation=revocation), (spec, "jws"))
    permissive = verify(ca_trust(chain, level="permissive", revocation=revocation), (spec, "jws"))

    assert (strict.reason, strict.detail) == (
        "revocation-unavailable",
        f"revocation: CRL {url}/missing.crl could not be loaded (HTTP 404)",
    )
    assert permissive.verified
    assert evidence(permissive)["logged"] == [
        f"revocation: CRL {url}/missing.crl could not be loaded (HTTP 404)"
    ]


def test_expired_crl_makes_revocation_unavailable(chain: Chain, tmp_path: Path) -> None:
    path = tmp_path / "old.crl"
    path.write_bytes(crl(chain, revoked=[], next_update=-timedelta(hours=1)))

    result = verify(ca_trust(chain, revocation={"crls": [str(path)]}),
                    (EnvelopeSpec(chain, target().payload()), "jws"))  # fmt: skip

    assert result.reason == "revocation-unavailable"
    assert result.detail.endswith("expired at 2026-11-30T11:00:00+00:00")


def test_crl_signed_by_someone_else_is_not_trusted(chain: Chain, tmp_path: Path) -> None:
    forged = make_chain()
    forged.intermediate = chain.intermediate  # same issuer name, another key signs the CRL
    path = tmp_path / "forged.crl"
    path.write_bytes(crl(forged, revoked=[]))

    result = verify(ca_trust(chain, revocation={"crls": [str(path)]}),
                    (EnvelopeSpec(chain, target().payload()), "jws"))  # fmt: skip

    assert result.reason == "revocation-unavailable"
    assert "has an invalid signature" in result.detail


def test_revocation_after_the_authentic_signing_time_does_not_revoke(
    chain: Chain, tmp_path: Path
) -> None:
    path = tmp_path / "signing-ca.crl"
    path.write_bytes(crl(chain, revoked=[chain.leaf], invalidity=NOW - timedelta(minutes=1)))
    spec = EnvelopeSpec(chain, target().payload(), signing_time=NOW - timedelta(hours=1))
    trust = trust_config({"signingAuthority:sa": [chain.root_pem]}, identities=[IDENTITY],
                         revocation={"crls": [str(path)]})  # fmt: skip

    # notary.x509.signingAuthority without AWS's plugin: the authentic signing time is trusted.
    spec.scheme = "notary.x509.signingAuthority"
    result = verify(trust, (spec, "jws"))

    assert result.verified, result.detail


def test_chain_naming_a_crl_service_needs_configured_crls(chain: Chain) -> None:
    with_cdp = make_chain(leaf_extensions=[
        (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True),
        (x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier("http://crl.acme.example/signing.crl")],
            None, None, None)]), False),
    ])  # fmt: skip
    spec = EnvelopeSpec(with_cdp, target().payload())

    strict = verify(ca_trust(with_cdp), (spec, "jws"))
    skipped = verify(ca_trust(with_cdp, override={"revocation": "skip"}), (spec, "jws"))

    assert (strict.reason, strict.detail) == (
        "revocation-unavailable",
        "revocation: certificate CN=SecureBuilder,O=Acme Rockets,L=Seattle,ST=WA,C=US names a "
        "CRL or OCSP service, which is not contacted; configure revocation.crls or override "
        "revocation",
    )
    assert skipped.verified
    assert evidence(skipped)["signatures"][0]["validations"]["revocation"] == "skipped"


def test_the_signature_that_got_furthest_gives_the_reason(chain: Chain) -> None:
    garbled = EnvelopeSpec(chain, target().payload(), signing_key=make_chain().leaf_key)
    untrusted = EnvelopeSpec(make_chain(organization="Evil Corp"), target().payload())

    result = verify(ca_trust(chain), (garbled, "cose"), (untrusted, "jws"))

    assert result.reason == "untrusted-certificate"
    assert [s["format"] for s in evidence(result)["signatures"]] == ["cose", "jws"]


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
@pytest.mark.parametrize("envelope_format", FORMATS)
def test_every_single_byte_corruption_is_a_value_never_an_exception(
    chain: Chain, envelope_format: str, key_type: str
) -> None:
    if key_type == "rsa":
        chain = make_chain(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    good = EnvelopeSpec(chain, target().payload()).signature(envelope_format)
    verifier = NotationVerifier(now=lambda: NOW)
    trust = NotationTrust.from_mapping(ca_trust(chain), where="n")
    outcomes: dict[str, int] = {}
    for position in range(0, len(good.envelope), 3):
        corrupted = bytearray(good.envelope)
        corrupted[position] ^= 0x5A
        signature = NotationSignature(bytes(corrupted), good.media_type, "m", "s")

        result = verifier.verify("acme", trust, [signature], REPOSITORY, target().artifact)

        outcomes[result.reason] = outcomes.get(result.reason, 0) + 1
    assert set(outcomes) <= {"verified", "malformed", "invalid", "unsupported",
                             "digest-mismatch", "untrusted-certificate", "identity-mismatch"}  # fmt: skip
    # Only bytes outside what is signed or chained (the signing agent, JSON whitespace) may
    # change without failing; everything else fails.
    assert outcomes.get("verified", 0) < sum(outcomes.values()) // 10, outcomes


def test_crl_download_never_outlasts_the_evaluation_budget(
    chain: Chain, crl_server: tuple[str, dict[str, bytes]]
) -> None:
    url, served = crl_server
    served["/slow.crl"] = crl(chain, revoked=[])
    served["delay"] = b"3"  # seconds the server waits before answering
    trust = NotationTrust.from_mapping(
        ca_trust(chain, revocation={"crls": [f"{url}/slow.crl"], "timeout_seconds": 30}), where="n"
    )
    signature = EnvelopeSpec(chain, target().payload()).signature("jws")
    verifier = NotationVerifier(now=lambda: NOW)

    started = time.monotonic()
    result = verifier.verify("acme", trust, [signature], REPOSITORY, target().artifact,
                             deadline=time.monotonic() + 0.5)  # fmt: skip
    elapsed = time.monotonic() - started
    with pytest.raises(UpstreamUnavailableError) as raised:
        NotationVerifier(now=lambda: NOW).verify(
            "acme", trust, [signature], REPOSITORY, target().artifact,
            deadline=time.monotonic() - 1,
        )  # fmt: skip

    assert (result.reason, result.detail) == (
        "revocation-unavailable", f"revocation: CRL {url}/slow.crl could not be loaded (ReadTimeout)"
    )
    assert elapsed < 2.5
    assert raised.value.message == "no time left in the budget to check the CRLs of authority acme"


def test_a_clean_signature_beside_an_expired_one_leaves_nothing_logged(chain: Chain) -> None:
    expired = EnvelopeSpec(chain, target().payload(), expiry=NOW - timedelta(seconds=1))
    clean = EnvelopeSpec(chain, target().payload())

    result = verify(ca_trust(chain, level="permissive"), (expired, "jws"), (clean, "cose"))

    assert result.verified
    assert evidence(result)["logged"] == []
    assert evidence(result)["signatures"][0]["logged"] == [
        "expiry: signature expired at 2026-11-30T11:59:59Z"
    ]
