"""Messages keep the expectation and the finding, whole words only; base64 as Go decodes it;
the simple-signing docker-reference as a per-authority option."""

from __future__ import annotations

import base64
import binascii
import logging

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.verify import KeylessIdentity, SignaturePolicySettings
from gatekeeper.verify.discovery import decode_standard_base64
from gatekeeper.verify.simple_signing import docker_reference_problem
from gatekeeper.verify.text import first_line, shorten
from gatekeeper.verify.trust import CertificateIdentity, identity_mismatch_message

ACTIONS = "https://token.actions.githubusercontent.com"
KEY = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2G2Y+2tabdTV5BcGiBIx0a9fAFwrkBbmLSGtks4L3qX6yYY0zufBnhC8Ur/iy55GhWP/9A/bY2LhC30M9+RYtw==
-----END PUBLIC KEY-----
"""


# -- expectation and finding -----------------------------------------------------------------


def test_mismatch_names_what_was_expected_and_what_the_certificate_says() -> None:
    expected = [KeylessIdentity(issuer=ACTIONS, subject="https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1")]
    found = CertificateIdentity(("https://github.com/evil/app/.github/workflows/x.yml@refs/heads/main",), ACTIONS)
    assert identity_mismatch_message(expected, found) == (
        "expected identity https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1 "
        f"from issuer {ACTIONS}, certificate names "
        f"https://github.com/evil/app/.github/workflows/x.yml@refs/heads/main from issuer {ACTIONS}"
    )


def test_mismatch_with_regexes_alternatives_and_no_issuer() -> None:
    expected = [
        KeylessIdentity(issuer_regex=r"https://token\..+", subject_regex=r"^https://github\.com/acme/.+$"),
        KeylessIdentity(issuer="https://accounts.google.com", subject="ops@acme.io"),
    ]
    found = CertificateIdentity(("a@b.c", "https://x.example"), None)
    assert identity_mismatch_message(expected, found) == (
        r"expected identity matching ^https://github\.com/acme/.+$ from issuer matching "
        r"https://token\..+ or identity ops@acme.io from issuer https://accounts.google.com, "
        "certificate names a@b.c, https://x.example from issuer (none)"
    )


def test_long_messages_are_cut_between_words_only() -> None:
    words = " ".join(f"word{i:03d}" for i in range(200))  # 1,599 characters
    short = shorten(words, 100)
    assert short == " ".join(f"word{i:03d}" for i in range(12)) + " …"
    assert len(short) <= 100 + 2
    assert shorten("fits", 100) == "fits"
    blob = "A" * 300
    assert shorten(f"{blob} tail", 100) == f"{blob} …"  # one long word is never split


def test_an_800_character_identity_message_survives_whole() -> None:
    subject = "https://github.com/acme/" + "x" * 250 + "/.github/workflows/release.yml@refs/tags/v1"
    message = identity_mismatch_message(
        [KeylessIdentity(issuer=ACTIONS, subject=subject)],
        CertificateIdentity((subject.replace("acme", "evil"),), ACTIONS),
    )
    assert len(message) > 200
    assert first_line(ValueError(message)) == message


# -- base64 like Go's StdEncoding -----------------------------------------------------------------


def test_line_wrapped_base64_is_accepted_like_go() -> None:
    signature = bytes(range(200))
    encoded = base64.b64encode(signature).decode()
    wrapped = "\n".join(encoded[i : i + 64] for i in range(0, len(encoded), 64))
    assert decode_standard_base64(wrapped) == signature
    assert decode_standard_base64(wrapped.replace("\n", "\r\n") + "\r\n") == signature


@pytest.mark.parametrize("text", ["AAAA AAAA", "AAAA\tAAAA", "AAA", "AA-_", "AAAA=AAA"])
def test_anything_else_go_refuses_stays_refused(text: str) -> None:
    with pytest.raises(binascii.Error):
        decode_standard_base64(text)


# -- docker-reference ------------------------------------------------------------------------------


def _critical(reference: object) -> dict[str, object]:
    return {"identity": {"docker-reference": reference}, "type": "cosign container image signature"}


@pytest.mark.parametrize(
    "reference",
    ["127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app:1.0",
     "127.0.0.1:5000/team/app@sha256:" + "a" * 64],
)
def test_the_signed_repository_matches(reference: str) -> None:
    assert docker_reference_problem(_critical(reference), "127.0.0.1:5000/team/app") is None


def test_docker_hub_names_are_normalised() -> None:
    assert docker_reference_problem(_critical("nginx"), "docker.io/library/nginx") is None


@pytest.mark.parametrize(
    ("critical", "problem"),
    [
        (_critical("127.0.0.1:5000/team/other"),
         "signature is for repository 127.0.0.1:5000/team/other, not 127.0.0.1:5000/team/app"),
        (_critical("127.0.0.1:5000/team/app.evil"),
         "signature is for repository 127.0.0.1:5000/team/app.evil, not 127.0.0.1:5000/team/app"),
        (_critical("127.0.0.2:5000/team/app"),
         "signature is for repository 127.0.0.2:5000/team/app, not 127.0.0.1:5000/team/app"),
        ({"type": "cosign container image signature"},
         "simple-signing payload names no critical.identity.docker-reference"),
        (_critical(7), "simple-signing payload names no critical.identity.docker-reference"),
        (_critical("NOT A REFERENCE"),
         "simple-signing docker-reference 'NOT A REFERENCE' is not an image reference"),
    ],
)
def test_other_repositories_and_malformed_references(critical: dict[str, object], problem: str) -> None:
    assert docker_reference_problem(critical, "127.0.0.1:5000/team/app") == problem


def _settings(version: int | None, **authority: object) -> SignaturePolicySettings:
    document: dict[str, object] = {
        "authorities": [{"name": "release", "keys": [KEY], "tlog": False, **authority}],
        "images": [{"glob": "**", "authorities": ["release"]}],
    }
    if version is not None:
        document["version"] = version
    return SignaturePolicySettings.from_mapping(document)


def test_version_2_configurations_match_the_docker_reference_by_default() -> None:
    assert _settings(2).authority("release").match_docker_reference is True
    assert _settings(2, match_docker_reference=False).authority("release").match_docker_reference is False


def test_configurations_without_a_version_keep_their_behaviour() -> None:
    assert _settings(None).authority("release").match_docker_reference is False
    assert _settings(1).authority("release").match_docker_reference is False
    assert _settings(None, match_docker_reference=True).authority("release").match_docker_reference


def test_the_option_is_part_of_the_cache_key() -> None:
    assert _settings(1).config_hash() != _settings(2).config_hash()


@pytest.mark.parametrize(
    ("version", "authority", "message"),
    [
        (3, {}, "signatures.version must be 1 or 2"),
        (True, {}, "signatures.version must be 1 or 2"),
        (2, {"match_docker_reference": "yes"},
         "signatures.authorities[0].match_docker_reference must be true or false"),
    ],
)
def test_bad_values_name_the_field(version: object, authority: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _settings(version, **authority)  # type: ignore[arg-type]
    assert caught.value.message == message


def test_a_defaulted_off_check_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    from gatekeeper.verify import SignatureEvidenceCollector, TrustRoot

    with caplog.at_level(logging.WARNING, logger="gatekeeper.verify.collector"):
        SignatureEvidenceCollector(_settings(None), registry=None, trust=TrustRoot.none())  # type: ignore[arg-type]
        SignatureEvidenceCollector(_settings(2), registry=None, trust=TrustRoot.none())  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == [
        "signatures: authority release does not compare the signed docker-reference with the "
        "image repository (a signature copied to another repository is accepted); set "
        "match_docker_reference, or version: 2 to make true the default"
    ]
