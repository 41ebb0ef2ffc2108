"""Authority configuration: validation that names the wrong field, globs, identities."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gatekeeper.errors import ConfigurationError
from gatekeeper.verify import KeylessIdentity, SignaturePolicySettings
from gatekeeper.verify.authority import compile_image_glob
from tests.unit.verify.conftest import pem_of


@pytest.fixture
def pem(signing_key: ec.EllipticCurvePrivateKey) -> str:
    return pem_of(signing_key)


def _document(pem: str, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "authorities": [{"name": "release", "keys": [pem], "tlog": False}],
        "images": [{"glob": "registry.acme.io/**", "authorities": ["release"]}],
    }
    document.update(changes)
    return document


@pytest.mark.parametrize(
    ("glob", "name", "matches"),
    [
        ("registry.acme.io/*", "registry.acme.io/app", True),
        ("registry.acme.io/*", "registry.acme.io/team/app", False),
        ("registry.acme.io/**", "registry.acme.io/team/app", True),
        ("registry.acme.io/*", "registry.acme.io.evil.io/app", False),
        ("registry.acme.io/**", "registry.acme.io.evil.io/app", False),
        ("*.acme.io/app", "eu.acme.io/app", True),
        ("*.acme.io/app", "evil.io/x.acme.io/app", False),
        ("registry.acme.io/app?", "registry.acme.io/app1", True),
    ],
)
def test_globs_match_registry_and_repository(glob: str, name: str, matches: bool) -> None:
    assert bool(compile_image_glob(glob).match(name)) is matches


def test_valid_configuration_and_its_hash(pem: str, other_key: ec.EllipticCurvePrivateKey) -> None:
    settings = SignaturePolicySettings.from_mapping(_document(pem))
    changed = SignaturePolicySettings.from_mapping(_document(pem_of(other_key)))

    assert settings.unmatched == "deny"
    assert settings.authorities[0].tlog is False
    assert settings.policy_for("registry.acme.io/team/app") is settings.images[0]
    assert settings.policy_for("docker.io/library/nginx") is None
    assert (
        settings.config_hash() == SignaturePolicySettings.from_mapping(_document(pem)).config_hash()
    )
    assert settings.config_hash() != changed.config_hash()


def test_tlog_is_required_unless_said_otherwise(pem: str) -> None:
    document = _document(pem, authorities=[{"name": "release", "keys": [pem]}])

    assert SignaturePolicySettings.from_mapping(document).authorities[0].tlog is True


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"authorities": []}, "signatures.authorities must be a non-empty list"),
        ({"images": []}, "signatures.images must be a non-empty list"),
        ({"unmatched": "maybe"}, "signatures.unmatched must be 'deny' or 'allow'"),
        ({"surprise": 1}, "signatures: unknown keys ['surprise']"),
        (
            {"images": [{"glob": "a.io/**", "authorities": ["nobody"]}]},
            "signatures.images[0].authorities names unknown authorities ['nobody']",
        ),
        (
            {"images": [{"glob": "a.io/**", "authorities": ["release"], "threshold": 2}]},
            "signatures.images[0].threshold 2 is more than its 1 authorities",
        ),
        (
            {"images": [{"glob": "a.io/app:1.0", "authorities": ["release"]}]},
            "signatures.images[0].glob matches registry/repository: no tag or digest",
        ),
        (
            {"authorities": [{"name": "Release", "keys": []}]},
            "signatures.authorities[0].name must be a lowercase name ([a-z0-9][a-z0-9_.-]*, "
            "<= 63 characters)",
        ),
        (
            {"authorities": [{"name": "release"}]},
            "signatures.authorities[0]: an authority needs keys or keyless identities",
        ),
        (
            {"authorities": [{"name": "release", "keys": ["not a key"]}]},
            "signatures.authorities[0].keys[0] is not a PEM public key",
        ),
        (
            {
                "authorities": [
                    {
                        "name": "ci",
                        "tlog": False,
                        "keyless": [{"issuer": "https://issuer", "subject": "me@example.com"}],
                    }
                ]
            },
            "signatures.authorities[0]: keyless identities need tlog: true",
        ),
        (
            {
                "authorities": [
                    {
                        "name": "ci",
                        "keyless": [
                            {"issuer": "https://issuer", "issuer_regex": ".*", "subject": "me"}
                        ],
                    }
                ]
            },
            "signatures.authorities[0].keyless[0]: give exactly one of issuer or issuer_regex",
        ),
        (
            {
                "authorities": [
                    {"name": "ci", "keyless": [{"issuer": "https://issuer", "subject_regex": "("}]}
                ]
            },
            "signatures.authorities[0].keyless[0].subject_regex is not a regular expression",
        ),
    ],
)
def test_invalid_configuration_names_the_field(
    pem: str, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        SignaturePolicySettings.from_mapping(_document(pem, **changes))

    assert caught.value.message == message


def test_keyless_identity_exact_and_regex() -> None:
    exact = KeylessIdentity(issuer="https://token.actions.githubusercontent.com",
                            subject="https://github.com/acme/app/.github/workflows/r.yml@refs/heads/main")  # fmt: skip
    regex = KeylessIdentity(issuer="https://token.actions.githubusercontent.com",
                            subject_regex=r"https://github\.com/acme/.+@refs/tags/v.*")  # fmt: skip
    issuer = "https://token.actions.githubusercontent.com"

    assert exact.matches(
        issuer, ["https://github.com/acme/app/.github/workflows/r.yml@refs/heads/main"]
    )
    assert not exact.matches("https://accounts.google.com", [exact.subject or ""])
    assert regex.matches(
        issuer, ["https://github.com/acme/app/.github/workflows/r.yml@refs/tags/v1.2"]
    )
    # A full match: a suffix appended by an attacker does not pass.
    assert not regex.matches(issuer, ["https://github.com/acme/app@refs/heads/main"])
    assert not regex.matches(None, ["https://github.com/acme/app@refs/tags/v1"])
