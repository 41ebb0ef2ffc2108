"""Container image references and digests: the full distribution grammar, no I/O.

The grammar follows the one the OCI distribution ecosystem uses (``distribution/reference``):

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component [ "/" path-component ]*
    domain     := host [ ":" port ]      host := domain-name | IPv4 | "[" IPv6 "]"
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" encoded

The first ``/``-separated component is a registry host only when it contains ``.`` or ``:``,
or is ``localhost``; otherwise the reference names Docker Hub, whose host is normalised to
``docker.io`` and whose single-component repositories live under ``library/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gatekeeper.errors import InvalidInputError

__all__ = [
    "DOCKER_HUB",
    "Digest",
    "ImageReference",
    "parse_digest",
    "parse_image_reference",
]

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_MAX_NAME_LENGTH = 255
_WHITESPACE = re.compile(r"\s")
_MAX_REFERENCE_LENGTH = 4096

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN_RE = re.compile(rf"^{_HOST}(?::[0-9]{{1,5}})?$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_ALGORITHM_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*$")
_DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX_RE = re.compile(r"^[a-f0-9]+$")


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest such as ``sha256:4f5e...``; only sha256 and sha512 are accepted."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def cosign_tag_prefix(self) -> str:
        """cosign's tag form of the digest: ``sha256-<hex>`` (used for ``.sig``/``.att`` tags)."""
        return f"{self.algorithm}-{self.hex}"


def parse_digest(text: str, *, field: str = "digest") -> Digest:
    """Parse ``algorithm:hex``; raise :class:`InvalidInputError` naming what is wrong."""
    algorithm, sep, encoded = text.partition(":")
    if not sep or not algorithm or not encoded:
        raise InvalidInputError(
            f"invalid digest {text!r}: expected <algorithm>:<hex>", field=field
        )
    if not _ALGORITHM_RE.match(algorithm):
        raise InvalidInputError(f"invalid digest {text!r}: bad algorithm", field=field)
    expected = _DIGEST_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidInputError(
            f"invalid digest {text!r}: unsupported algorithm {algorithm!r} "
            "(supported: sha256, sha512)",
            field=field,
        )
    if len(encoded) != expected or not _HEX_RE.match(encoded):
        raise InvalidInputError(
            f"invalid digest {text!r}: {algorithm} needs {expected} lowercase hex characters",
            field=field,
        )
    return Digest(algorithm, encoded)


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A parsed, normalised image reference. ``original`` is exactly what the caller wrote."""

    original: str
    registry: str
    repository: str
    tag: str | None
    digest: Digest | None

    @property
    def name(self) -> str:
        """``registry/repository`` — the fully-qualified repository name."""
        return f"{self.registry}/{self.repository}"

    @property
    def canonical(self) -> str:
        """Fully-qualified form: ``registry/repository[:tag][@digest]``."""
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def with_digest(self, digest: Digest) -> ImageReference:
        """The same reference pinned to ``digest`` (the tag is kept for readability)."""
        return ImageReference(self.original, self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        return self.original


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    is_domain = bool(sep) and (
        "." in first or ":" in first or first == "localhost" or first.lower() != first
    )
    if not is_domain:
        return DOCKER_HUB, name
    return first, rest


def parse_image_reference(text: str, *, field: str = "image") -> ImageReference:
    """Parse and normalise an image reference, or raise :class:`InvalidInputError`.

    ``field`` names where the reference came from (``images[1]``), so the error can say so.
    """
    if not isinstance(text, str):
        raise InvalidInputError("image reference must be a string", field=field)
    if not text:
        raise InvalidInputError("image reference is empty", field=field)
    if len(text) > _MAX_REFERENCE_LENGTH:
        raise InvalidInputError(
            f"image reference is longer than {_MAX_REFERENCE_LENGTH} characters", field=field
        )
    if _WHITESPACE.search(text):  # \s is str.isspace() for str patterns; one C scan
        raise InvalidInputError(
            f"invalid image reference {text!r}: contains whitespace", field=field
        )

    remainder, at, digest_text = text.partition("@")
    digest = None
    if at:
        if "@" in digest_text:
            raise InvalidInputError(
                f"invalid image reference {text!r}: more than one '@'", field=field
            )
        try:
            digest = parse_digest(digest_text, field=field)
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"invalid image reference {text!r}: {exc.message.split(': ', 1)[-1]}",
                field=field,
            ) from exc

    # A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
    name, tag = remainder, None
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        name, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidInputError(
                f"invalid image reference {text!r}: invalid tag {tag!r}", field=field
            )
    if not name:
        raise InvalidInputError(
            f"invalid image reference {text!r}: missing repository name", field=field
        )
    if len(name) > _MAX_NAME_LENGTH:
        raise InvalidInputError(
            f"invalid image reference {text!r}: repository name longer than "
            f"{_MAX_NAME_LENGTH} characters",
            field=field,
        )

    registry, path = _split_domain(name)
    if not _DOMAIN_RE.match(registry):
        raise InvalidInputError(
            f"invalid image reference {text!r}: invalid registry host {registry!r}", field=field
        )
    port = registry.rsplit(":", 1)[1] if registry.count(":") == 1 else None
    if port is not None and not 0 < int(port) < 65536:
        raise InvalidInputError(
            f"invalid image reference {text!r}: port {port} out of range", field=field
        )
    if not path:
        raise InvalidInputError(
            f"invalid image reference {text!r}: missing repository path", field=field
        )
    if path.lower() != path:
        raise InvalidInputError(
            f"invalid image reference {text!r}: repository name must be lowercase", field=field
        )
    for component in path.split("/"):
        if not _PATH_COMPONENT_RE.match(component):
            raise InvalidInputError(
                f"invalid image reference {text!r}: invalid path component {component!r}",
                field=field,
            )

    registry = registry.lower()
    if registry in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    if tag is None and digest is None:
        tag = "latest"
    return ImageReference(text, registry, path, tag, digest)
