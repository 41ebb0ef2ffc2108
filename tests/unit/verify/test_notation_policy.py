"""Notation trust store and trust policy configuration: what the specification allows, and the
error that names the field when something is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from gatekeeper.errors import ConfigurationError
from gatekeeper.verify.authority import SignaturePolicySettings
from gatekeeper.verify.notation_policy import NotationTrust, TrustedIdentity
from tests.unit.verify.notation_helpers import PROFILE, PROFILE_VERSION, make_chain

IDENTITY = "x509.subject: C=US, ST=WA, O=Acme Rockets"


@pytest.fixture(scope="module")
def root_pem() -> str:
    return make_chain().root_pem


def policy(**changes: Any) -> dict[str, Any]:
    return {
        "name": "images", "registryScopes": ["registry.acme.io/shop/api"],
        "signatureVerification": {"level": "strict"}, "trustStores": ["ca:acme"],
        "trustedIdentities": [IDENTITY],
    } | changes  # fmt: skip


def trust(root_pem: str, *policies: dict[str, Any], **extra: Any) -> NotationTrust:
    document = {
        "trust_store": {"ca:acme": [root_pem]},
        "trust_policy": {"version": "1.0", "trustPolicies": list(policies) or [policy()]},
    } | extra
    return NotationTrust.from_mapping(document, where="notation")


def refused(root_pem: str, *policies: dict[str, Any], **extra: Any) -> str:
    with pytest.raises(ConfigurationError) as raised:
        trust(root_pem, *policies, **extra)
    return raised.value.message


@pytest.mark.parametrize(
    ("level", "actions"),
    [
        ("strict", ["enforce"] * 5),
        ("permissive", ["enforce", "enforce", "log", "log", "log"]),
        ("audit", ["enforce", "log", "log", "log", "log"]),
    ],
)
def test_levels_give_each_validation_the_specifications_action(
    root_pem: str, level: str, actions: list[str]
) -> None:
    configured = trust(root_pem, policy(signatureVerification={"level": level}))

    assert list(configured.policies[0].describe()["actions"].values()) == actions


def test_skip_level_skips_everything(root_pem: str) -> None:
    skip = policy(signatureVerification={"level": "skip"})
    del skip["trustStores"], skip["trustedIdentities"]

    configured = trust(root_pem, skip)

    assert set(configured.policies[0].describe()["actions"].values()) == {"skip"}


def test_override_refines_a_level(root_pem: str) -> None:
    configured = trust(root_pem, policy(signatureVerification={
        "level": "strict", "override": {"expiry": "log", "revocation": "skip"}}))  # fmt: skip

    assert configured.policies[0].describe()["actions"] == {
        "integrity": "enforce", "authenticity": "enforce", "authenticTimestamp": "enforce",
        "expiry": "log", "revocation": "skip",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("verification", "message"),
    [
        ({"level": "strict", "override": {"integrity": "log"}},
         "notation.trust_policy.trustPolicies[0].signatureVerification.override.integrity: only "
         "['authenticTimestamp', 'authenticity', 'expiry', 'revocation'] can be overridden"),
        ({"level": "strict", "override": {"authenticity": "skip"}},
         "notation.trust_policy.trustPolicies[0].signatureVerification.override.authenticity "
         "must be one of enforce, log"),
        ({"level": "lenient"},
         "notation.trust_policy.trustPolicies[0].signatureVerification.level must be strict, "
         "permissive, audit or skip"),
        ({"level": "skip", "override": {"expiry": "log"}},
         "notation.trust_policy.trustPolicies[0].signatureVerification: level 'skip' cannot be "
         "customised"),
    ],
)  # fmt: skip
def test_bad_verification_settings_are_named(
    root_pem: str, verification: dict[str, Any], message: str
) -> None:
    assert refused(root_pem, policy(signatureVerification=verification)) == message


def test_skip_cannot_be_global(root_pem: str) -> None:
    skip = {"name": "all", "registryScopes": ["*"], "signatureVerification": {"level": "skip"}}

    assert refused(root_pem, skip) == (
        "notation.trust_policy.trustPolicies[0]: level 'skip' cannot be used with the '*' scope"
    )


@pytest.mark.parametrize(
    ("scopes", "message"),
    [
        (["registry.acme.io/shop/api:1.0"], "is not a fully qualified repository"),
        (["registry.acme.io/shop/*"], "is not a fully qualified repository"),
        (["api"], "is not a fully qualified repository"),
        (["*", "registry.acme.io/shop/api"], "'*' must be the only scope"),
    ],
)
def test_registry_scopes_are_repositories_or_the_global_star(
    root_pem: str, scopes: list[str], message: str
) -> None:
    assert message in refused(root_pem, policy(registryScopes=scopes))


def test_a_scope_belongs_to_one_policy_and_only_one_policy_is_global(root_pem: str) -> None:
    twice = refused(root_pem, policy(), policy(name="again"))
    globals_ = refused(root_pem, policy(registryScopes=["*"]),
                       policy(name="again", registryScopes=["*"]))  # fmt: skip

    assert twice == (
        "notation.trust_policy.trustPolicies: scope 'registry.acme.io/shop/api' is in both "
        "'images' and 'again'"
    )
    assert globals_ == "notation.trust_policy.trustPolicies: only one policy may use the '*' scope"


def test_exact_scope_wins_over_the_global_policy(root_pem: str) -> None:
    configured = trust(root_pem, policy(name="global", registryScopes=["*"]), policy())

    assert configured.policy_for("registry.acme.io/shop/api").name == "images"  # type: ignore[union-attr]
    assert configured.policy_for("registry.acme.io/shop/web").name == "global"  # type: ignore[union-attr]
    # No reference expansion: the scope names the repository exactly.
    assert trust(root_pem).policy_for("registry.acme.io/shop/api/extra") is None


@pytest.mark.parametrize(
    ("identities", "message"),
    [
        (["x509.subject: C=US, O=Acme"], "an x509.subject identity must name C, ST (or S) and O"),
        (["x509.subject: C=US, ST=WA, O=Acme", "x509.subject: C=US, ST=WA, O=Acme, OU=Ops"],
         "overlap"),
        (["*", IDENTITY], "'*' must be the only identity"),
        (["x509.subject: C=US, ST=WA, O=Acme, XX=1"], "unknown subject attribute 'XX'"),
        (["arn:aws:signer:us-west-2:1111:/signing-profiles/p"], "is not an AWS Signer signing "
         "profile ARN"),
        (["CN=SecureBuilder"], "is neither '*', 'x509.subject: ...' nor a signing profile ARN"),
    ],
)  # fmt: skip
def test_bad_trusted_identities_are_named(
    root_pem: str, identities: list[str], message: str
) -> None:
    assert message in refused(root_pem, policy(trustedIdentities=identities))


def test_distinguished_names_unescape_and_accept_s_for_st() -> None:
    identity = TrustedIdentity.parse(
        r"x509.subject: C=US, S=WA, O=Acme\, Inc., OU=\ Build\;Ops\\ ", where="t"
    )

    assert identity.subject == (
        ("C", "US"), ("ST", "WA"), ("O", "Acme, Inc."), ("OU", " Build;Ops\\"),
    )  # fmt: skip


def test_profile_arn_matches_versions_but_a_version_arn_only_itself() -> None:
    profile = TrustedIdentity.parse(PROFILE, where="t")
    version = TrustedIdentity.parse(PROFILE_VERSION, where="t")

    assert profile.matches_profile(PROFILE_VERSION)
    assert profile.matches_profile(f"{PROFILE}/Other12345")
    assert not profile.matches_profile(f"{PROFILE}_evil/AbCdEf1234")
    assert version.matches_profile(PROFILE_VERSION)
    assert not version.matches_profile(f"{PROFILE}/Other12345")


def test_trust_stores_are_named_typed_and_referenced(root_pem: str) -> None:
    assert refused(root_pem, policy(trustStores=["ca:missing"])) == (
        "notation.trust_policy.trustPolicies[0].trustStores names 'ca:missing', not in trust_store"
    )
    with pytest.raises(ConfigurationError, match="is not '<type>:<name>'"):
        NotationTrust.from_mapping(
            {"trust_store": {"x509:acme": [root_pem]}, "trust_policy": {}}, where="notation"
        )
    tsa_only = refused(root_pem, policy(trustStores=["tsa:clock"]),
                       trust_store={"ca:acme": [root_pem], "tsa:clock": [root_pem]})  # fmt: skip
    assert tsa_only == (
        "notation.trust_policy.trustPolicies[0].trustStores needs a 'ca' or 'signingAuthority' store"
    )


def test_certificates_come_inline_or_from_pem_and_der_files(root_pem: str, tmp_path: Path) -> None:
    chain = make_chain()
    der = tmp_path / "root.cer"
    der.write_bytes(chain.root.public_bytes(serialization.Encoding.DER))
    pem = tmp_path / "root.pem"
    pem.write_text(root_pem)

    configured = trust(root_pem, trust_store={"ca:acme": [str(der), str(pem), root_pem]})

    assert len(configured.stores["ca:acme"]) == 3
    missing = refused(root_pem, trust_store={"ca:acme": [str(tmp_path / "nope.pem")]})
    assert missing.startswith(f"notation.trust_store.ca:acme[0]: cannot read {tmp_path}/nope.pem")


def test_revocation_takes_crls_only(root_pem: str) -> None:
    assert refused(root_pem, revocation={"ocsp": True}) == (
        "notation.revocation: unknown keys ['ocsp'] (OCSP is not supported)"
    )
    assert refused(root_pem, revocation={"crls": ["ldap://ca/crl"]}) == (
        "notation.revocation.crls: 'ldap://ca/crl': only http(s) URLs and file paths"
    )


def test_a_notation_authority_takes_no_cosign_keys(root_pem: str) -> None:
    notation = {
        "trust_store": {"ca:acme": [root_pem]},
        "trust_policy": {"version": "1.0", "trustPolicies": [policy()]},
    }
    with pytest.raises(ConfigurationError) as raised:
        SignaturePolicySettings.from_mapping({
            "authorities": [{"name": "acme", "notation": notation, "tlog": False}],
            "images": [{"glob": "**", "authorities": ["acme"]}],
        })  # fmt: skip

    assert raised.value.message == (
        "signatures.authorities[0]: a notation authority takes no keys, keyless or tlog"
    )
    settings = SignaturePolicySettings.from_mapping({
        "authorities": [{"name": "acme", "notation": notation}],
        "images": [{"glob": "**", "authorities": ["acme"]}],
    })  # fmt: skip
    changed = SignaturePolicySettings.from_mapping({
        "authorities": [{"name": "acme", "notation": notation | {
            "trust_policy": {"version": "1.0", "trustPolicies": [policy(
                signatureVerification={"level": "audit"})]}}}],
        "images": [{"glob": "**", "authorities": ["acme"]}],
    })  # fmt: skip
    # The trust configuration is part of every cache key: a new level is a new verification.
    assert settings.config_hash() != changed.config_hash()
