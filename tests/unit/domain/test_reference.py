import pytest

from gatekeeper.domain import parse_digest, parse_image_reference
from gatekeeper.errors import InvalidInputError

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("nginx:1.27", "docker.io", "library/nginx", "1.27", None),
        ("docker.io/nginx", "docker.io", "library/nginx", "latest", None),
        ("index.docker.io/library/nginx:1", "docker.io", "library/nginx", "1", None),
        ("acme/api", "docker.io", "acme/api", "latest", None),
        ("ghcr.io/acme/team/api:1.4", "ghcr.io", "acme/team/api", "1.4", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/app:dev", "localhost:5000", "app", "dev", None),
        ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c", "latest", None),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
        (f"registry.example.com/app@sha256:{HEX}", "registry.example.com", "app", None, f"sha256:{HEX}"),
        (f"registry.example.com:443/app:1.0@sha256:{HEX}", "registry.example.com:443", "app", "1.0", f"sha256:{HEX}"),
        ("Registry.Example.com/app", "registry.example.com", "app", "latest", None),
        ("quay.io/a__b/c-d.e_f:v1.0-rc_1", "quay.io", "a__b/c-d.e_f", "v1.0-rc_1", None),
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/web:2", "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "web", "2", None),
    ],
)
def test_parses_and_normalises(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    reference = parse_image_reference(text)
    assert reference.original == text
    assert (reference.registry, reference.repository, reference.tag) == (registry, repository, tag)
    assert (str(reference.digest) if reference.digest else None) == digest


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "image reference is empty"),
        ("nginx ", "invalid image reference 'nginx ': contains whitespace"),
        ("NGINX", "invalid image reference 'NGINX': repository name must be lowercase"),
        ("ghcr.io/Acme/api", "invalid image reference 'ghcr.io/Acme/api': repository name must be lowercase"),
        ("nginx:", "invalid image reference 'nginx:': invalid tag ''"),
        ("nginx:-bad", "invalid image reference 'nginx:-bad': invalid tag '-bad'"),
        ("nginx@sha256:abc", "invalid image reference 'nginx@sha256:abc': sha256 needs 64 lowercase hex characters"),
        ("nginx@md5:" + "a" * 32, "invalid image reference 'nginx@md5:" + "a" * 32 + "': unsupported algorithm 'md5' (supported: sha256, sha512)"),
        ("nginx@sha256:" + "A" * 64, "invalid image reference 'nginx@sha256:" + "A" * 64 + "': sha256 needs 64 lowercase hex characters"),
        ("a@b@c", "invalid image reference 'a@b@c': more than one '@'"),
        ("ghcr.io/", "invalid image reference 'ghcr.io/': missing repository path"),
        ("ghcr.io/a//b", "invalid image reference 'ghcr.io/a//b': invalid path component ''"),
        ("ghcr.io/-a/b", "invalid image reference 'ghcr.io/-a/b': invalid path component '-a'"),
        ("-bad.io/a", "invalid image reference '-bad.io/a': invalid registry host '-bad.io'"),
        ("host:99999/a", "invalid image reference 'host:99999/a': port 99999 out of range"),
        (":tag", "invalid image reference ':tag': missing repository name"),
        ("ghcr.io/" + "a" * 300, "invalid image reference 'ghcr.io/" + "a" * 300 + "': repository name longer than 255 characters"),
    ],
)
def test_rejects_malformed_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_image_reference(text, field="images[1]")
    assert caught.value.message == message
    assert caught.value.field == "images[1]"


def test_with_digest_keeps_tag_and_canonical_form() -> None:
    reference = parse_image_reference("nginx:1.27").with_digest(parse_digest(f"sha256:{HEX}"))
    assert reference.canonical == f"docker.io/library/nginx:1.27@sha256:{HEX}"


def test_cosign_tag_prefix() -> None:
    assert parse_digest(f"sha256:{HEX}").cosign_tag_prefix == f"sha256-{HEX}"


def test_sha512_accepted() -> None:
    assert parse_digest("sha512:" + "0" * 128).algorithm == "sha512"
