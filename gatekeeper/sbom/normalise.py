"""CycloneDX and SPDX documents -> one normalised, size-capped shape for the Rego input.

The shape (``input.images[].evidence.sbom.components[]``) is part of the policy contract::

    {"purl": "pkg:npm/left-pad@1.3.0" | null, "name": "left-pad", "version": "1.3.0" | null,
     "type": "library", "licenses": ["MIT OR Apache-2.0"], "license_ids": ["Apache-2.0", "MIT"],
     "hashes": {"SHA-256": "9f86..."}}

``licenses`` keeps what the document says (SPDX ids, SPDX expressions, free-text names);
``license_ids`` is every SPDX id (or ``LicenseRef-``) named anywhere in them, so a policy can
ban a licence without parsing expressions. Strings, lists and the component count are capped;
``truncated`` says when a cap cut something, and ``component_count`` always tells the real total.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.sbom.parsing import paused_gc
from gatekeeper.sbom.validation import ParsedSbom

__all__ = [
    "NormalisationLimits",
    "NormalisedComponent",
    "NormalisedSbom",
    "license_ids_of",
    "normalise_sbom",
]

_EXPRESSION_OPERATORS = frozenset({"AND", "OR", "WITH"})
_EXPRESSION_TOKEN_RE = re.compile(r"[^\s()]+")
_DIGEST_VERSION_RE = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
_PURL_DIGEST_RE = re.compile(r"@(sha256|sha512)(?::|%3[Aa])([0-9a-f]{64,128})(?:[?#]|$)")
_DIGEST_HASH_ALGORITHMS = {"SHA-256": "sha256", "SHA-512": "sha512", "SHA256": "sha256",
                           "SHA512": "sha512"}


@dataclass(frozen=True, slots=True)
class NormalisationLimits:
    max_components: int = 5_000
    max_string_length: int = 512
    max_licenses_per_component: int = 16
    max_hashes_per_component: int = 8


@dataclass(frozen=True, slots=True)
class NormalisedComponent:
    purl: str | None
    name: str
    version: str | None
    type: str
    licenses: tuple[str, ...]
    license_ids: tuple[str, ...]
    hashes: Mapping[str, str]

    def as_input(self) -> dict[str, Any]:
        return {
            "purl": self.purl,
            "name": self.name,
            "version": self.version,
            "type": self.type,
            "licenses": list(self.licenses),
            "license_ids": list(self.license_ids),
            "hashes": dict(self.hashes),
        }


@dataclass(frozen=True, slots=True)
class NormalisedSbom:
    format: str
    spec_version: str
    sha256: str
    component_count: int
    components: tuple[NormalisedComponent, ...]
    truncated: bool
    #: Image digests the document's own subject (``metadata.component`` / described package)
    #: claims, as ``algorithm:hex``, by where they were found: "purl", "version", "hash".
    subject_digests: tuple[tuple[str, str], ...] = field(default=())
    subject_name: str | None = None

    def components_as_input(self) -> list[dict[str, Any]]:
        return [component.as_input() for component in self.components]


def license_ids_of(licenses: tuple[str, ...]) -> tuple[str, ...]:
    """SPDX ids named in ids or expressions; exception ids after ``WITH`` are left out."""
    ids: set[str] = set()
    for text in licenses:
        after_with = False
        for token in _EXPRESSION_TOKEN_RE.findall(text):
            if token in _EXPRESSION_OPERATORS:
                after_with = token == "WITH"  # noqa: S105 - an SPDX operator, not a secret
                continue
            if not after_with:
                ids.add(token)
            after_with = False
    return tuple(sorted(ids))


class _Capper:
    def __init__(self, limits: NormalisationLimits) -> None:
        self.limits = limits
        self.truncated = False

    def text(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        if len(value) > self.limits.max_string_length:
            self.truncated = True
            return value[: self.limits.max_string_length]
        return value


# --- CycloneDX ----------------------------------------------------------------------------


def _cyclonedx_licenses(raw: Any, capper: _Capper) -> tuple[str, ...]:
    if not isinstance(raw, list):
        return ()
    found: list[str] = []
    for choice in raw:
        if not isinstance(choice, dict):
            continue
        if "expression" in choice:
            value = choice["expression"]
        else:
            licence = choice.get("license")
            if not isinstance(licence, dict):
                continue
            value = licence.get("id") or licence.get("name")
        text = capper.text(value)
        if text:
            found.append(text)
    if len(found) > capper.limits.max_licenses_per_component:
        capper.truncated = True
        found = found[: capper.limits.max_licenses_per_component]
    return tuple(found)


def _cyclonedx_hashes(raw: Any, capper: _Capper) -> dict[str, str]:
    hashes: dict[str, str] = {}
    if not isinstance(raw, list):
        return hashes
    for entry in raw:
        if isinstance(entry, dict):
            alg, content = entry.get("alg"), entry.get("content")
            if isinstance(alg, str) and isinstance(content, str):
                if len(hashes) >= capper.limits.max_hashes_per_component:
                    capper.truncated = True
                    break
                hashes[alg] = content.lower()[:256]
    return hashes


def _walk_cyclonedx_components(document: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every component, nested ones included, in document order (iterative: no recursion)."""
    stack: list[Iterator[Any]] = [iter(document.get("components") or ())]
    while stack:
        component = next(stack[-1], None)
        if component is None:
            stack.pop()
            continue
        if isinstance(component, dict):
            yield component
            nested = component.get("components")
            if nested:
                stack.append(iter(nested))


def _subject_digests(
    purl: Any, version: Any, hashes: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    claims: list[tuple[str, str]] = []
    if isinstance(purl, str):
        match = _PURL_DIGEST_RE.search(purl)
        if match:
            claims.append(("purl", f"{match.group(1)}:{match.group(2)}"))
    if isinstance(version, str) and _DIGEST_VERSION_RE.match(version):
        claims.append(("version", version))
    for alg, content in hashes.items():
        algorithm = _DIGEST_HASH_ALGORITHMS.get(alg.upper())
        if algorithm is not None:
            claims.append(("hash", f"{algorithm}:{content}"))
    return tuple(claims)


def _normalise_cyclonedx(parsed: ParsedSbom, limits: NormalisationLimits) -> NormalisedSbom:
    capper = _Capper(limits)
    components: list[NormalisedComponent] = []
    count = 0
    for raw in _walk_cyclonedx_components(parsed.document):
        count += 1
        if count > limits.max_components:
            continue
        licenses = _cyclonedx_licenses(raw.get("licenses"), capper)
        components.append(
            NormalisedComponent(
                purl=capper.text(raw.get("purl")),
                name=capper.text(raw.get("name")) or "",
                version=capper.text(raw.get("version")),
                type=capper.text(raw.get("type")) or "",
                licenses=licenses,
                license_ids=license_ids_of(licenses),
                hashes=_cyclonedx_hashes(raw.get("hashes"), capper),
            )
        )
    subject: Any = (parsed.document.get("metadata") or {}).get("component")
    subject_digests: tuple[tuple[str, str], ...] = ()
    subject_name = None
    if isinstance(subject, dict):
        subject_digests = _subject_digests(
            subject.get("purl"), subject.get("version"),
            _cyclonedx_hashes(subject.get("hashes"), _Capper(limits)),
        )
        subject_name = capper.text(subject.get("name"))
    return NormalisedSbom(
        format="cyclonedx",
        spec_version=parsed.spec_version,
        sha256=parsed.sha256,
        component_count=count,
        components=tuple(components),
        truncated=capper.truncated or count > limits.max_components,
        subject_digests=subject_digests,
        subject_name=subject_name,
    )


def normalise_sbom(
    parsed: ParsedSbom, limits: NormalisationLimits | None = None
) -> NormalisedSbom:
    """Normalise a validated document (CycloneDX or SPDX) to the policy shape."""
    limits = limits or NormalisationLimits()
    with paused_gc():
        return _normalise(parsed, limits)


def _normalise(parsed: ParsedSbom, limits: NormalisationLimits) -> NormalisedSbom:
    if parsed.format == "spdx":
        from gatekeeper.sbom.spdx import normalise_spdx

        return normalise_spdx(parsed, limits)
    return _normalise_cyclonedx(parsed, limits)


def capper_for(limits: NormalisationLimits) -> _Capper:
    """Shared with the SPDX normaliser."""
    return _Capper(limits)


subject_digests_of = _subject_digests
