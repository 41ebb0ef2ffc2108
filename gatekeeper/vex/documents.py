"""VEX documents as the world writes them: OpenVEX (0.0.x and 0.2.0) and CycloneDX VEX.

Both become :class:`VexStatement` values: a vulnerability (with aliases), a status
(``not_affected``, ``affected``, ``fixed``, ``under_investigation``), a justification or impact
statement, the image digests the statement names as products, and the packages
(subcomponents) it is about. Only what a statement *itself* names counts as its product:

* OpenVEX: a product's ``@id`` or ``identifiers.purl`` as ``pkg:oci/...@sha256:<hex>`` (the
  digest percent-encoded or not), an ``@id`` that is a bare ``sha256:<hex>``, or the product's
  ``hashes`` (``sha-256``/``sha-512``); subcomponents name the vulnerable packages.
* CycloneDX (``vulnerabilities[].analysis``): ``affects[].ref`` resolved through the bom-refs of
  ``metadata.component`` and ``components``; a ``pkg:oci`` purl with a digest is the product, any
  other component is the vulnerable package of the BOM's own subject, ``metadata.component``
  (whose ``pkg:oci`` purl or SHA-256 hash names the image).

Statuses (CycloneDX ``analysis.state``): ``not_affected`` and ``false_positive`` ->
``not_affected``; ``resolved`` and ``resolved_with_pedigree`` -> ``fixed``; ``exploitable`` ->
``affected``; ``in_triage`` -> ``under_investigation``.

Documents are bounded (size, nesting, statement count) before anything is read; a document
that is not VEX, or a statement that breaks the spec (``not_affected`` with neither
justification nor impact statement), is a :class:`VexDocumentError` naming the JSON path.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gatekeeper.domain.ports.vex import VexDocument, VexStatement
from gatekeeper.errors import InvalidInputError

__all__ = [
    "OPENVEX_PREDICATE_TYPE",
    "VexDocument",
    "VexDocumentError",
    "VexLimits",
    "VexStatement",
    "is_openvex_predicate",
    "parse_vex_document",
    "parse_vex_json",
]

#: ``cosign attest --type openvex`` and go-vex's ``TypeURI`` (a versioned suffix is accepted).
OPENVEX_PREDICATE_TYPE = "https://openvex.dev/ns"
STATUSES = ("not_affected", "affected", "fixed", "under_investigation")
_CYCLONEDX_STATES = {
    "not_affected": "not_affected",
    "false_positive": "not_affected",
    "resolved": "fixed",
    "resolved_with_pedigree": "fixed",
    "exploitable": "affected",
    "in_triage": "under_investigation",
}
_HEX = {"sha256": 64, "sha512": 128}
_DIGEST = re.compile(r"^(sha256|sha512):([0-9a-f]+)$")


class VexDocumentError(InvalidInputError):
    """A document that is not (valid) VEX; ``path`` is the JSON path of the problem."""

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(f"VEX document is invalid at {path}: {message}", field=path)
        self.path = path


@dataclass(frozen=True, slots=True)
class VexLimits:
    max_bytes: int = 4 << 20
    max_depth: int = 32
    max_statements: int = 10_000


def is_openvex_predicate(predicate_type: str) -> bool:
    return predicate_type == OPENVEX_PREDICATE_TYPE or predicate_type.startswith(
        OPENVEX_PREDICATE_TYPE + "/"
    )


def _depth(value: object, limit: int) -> int:
    stack: list[tuple[object, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, Mapping):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest


def parse_vex_json(content: bytes, limits: VexLimits | None = None) -> VexDocument:
    """Parse the bytes of an uploaded VEX document (OpenVEX or CycloneDX JSON)."""
    limits = limits or VexLimits()
    if len(content) > limits.max_bytes:
        raise VexDocumentError(f"document is {len(content)} bytes, over {limits.max_bytes}")
    try:
        document = json.loads(content)
    except (ValueError, RecursionError) as exc:
        raise VexDocumentError(f"malformed JSON: {exc}") from exc
    return parse_vex_document(document, limits, sha256=hashlib.sha256(content).hexdigest())


def parse_vex_document(
    document: object, limits: VexLimits | None = None, *, sha256: str | None = None
) -> VexDocument:
    """Parse a JSON value (an upload, or a verified attestation's predicate)."""
    limits = limits or VexLimits()
    if _depth(document, limits.max_depth) > limits.max_depth:
        raise VexDocumentError(f"JSON nesting is deeper than {limits.max_depth} levels")
    if not isinstance(document, Mapping):
        raise VexDocumentError("expected a JSON object")
    if sha256 is None:
        canonical = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        sha256 = hashlib.sha256(canonical).hexdigest()
    context = document.get("@context")
    if isinstance(context, str) and context.startswith(OPENVEX_PREDICATE_TYPE):
        statements = _openvex(document, limits)
        return VexDocument("openvex", sha256, _text(document.get("author")), statements)
    if document.get("bomFormat") == "CycloneDX":
        statements = _cyclonedx(document, limits)
        return VexDocument("cyclonedx", sha256, None, statements)
    raise VexDocumentError(
        'neither OpenVEX ("@context": "https://openvex.dev/ns/...") nor CycloneDX '
        '("bomFormat": "CycloneDX")'
    )


# -- shared helpers -------------------------------------------------------------------------------


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _list(value: object, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise VexDocumentError("expected a list", path)
    return value


def _normal_digest(algorithm: str, hex_part: str) -> str | None:
    algorithm = algorithm.lower().replace("-", "")
    hex_part = hex_part.lower()
    if algorithm in _HEX and len(hex_part) == _HEX[algorithm] and _DIGEST.match(
        f"{algorithm}:{hex_part}"
    ):
        return f"{algorithm}:{hex_part}"
    return None


def _digest_of_identifier(identifier: str) -> str | None:
    """``pkg:oci/app@sha256%3A<hex>?...`` or a bare ``sha256:<hex>`` -> ``sha256:<hex>``."""
    text = identifier.strip()
    if text.startswith("pkg:oci/") and "@" in text:
        version = text.split("@", 1)[1].split("?", 1)[0].split("#", 1)[0]
        text = urllib.parse.unquote(version)
    algorithm, _, hex_part = text.partition(":")
    return _normal_digest(algorithm, hex_part) if hex_part else None


def _package_name(identifier: str) -> str:
    """``pkg:deb/debian/xz-utils@5.6.0?arch=amd64`` -> ``xz-utils``; other ids as they are."""
    if identifier.startswith("pkg:"):
        path = identifier.split("?", 1)[0].split("#", 1)[0].split("@", 1)[0]
        return urllib.parse.unquote(path.rsplit("/", 1)[-1])
    return identifier


def _hash_digests(hashes: object) -> list[str]:
    found: list[str] = []
    if isinstance(hashes, Mapping):
        for algorithm, value in hashes.items():
            if isinstance(algorithm, str) and isinstance(value, str):
                digest = _normal_digest(algorithm, value)
                if digest is not None:
                    found.append(digest)
    return found


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _status(value: object, path: str) -> str:
    if value not in STATUSES:
        raise VexDocumentError(f"status must be one of {', '.join(STATUSES)}", path)
    return str(value)


def _check_count(count: int, limits: VexLimits) -> None:
    if count > limits.max_statements:
        raise VexDocumentError(f"more than {limits.max_statements} statements")


# -- OpenVEX -------------------------------------------------------------------------------------


def _openvex_product(product: object, path: str) -> tuple[list[str], list[str]]:
    """(digests, package names) of one product (a string in 0.0.x, an object in 0.2.0)."""
    if isinstance(product, str):
        digest = _digest_of_identifier(product)
        return ([digest] if digest else []), []
    if not isinstance(product, Mapping):
        raise VexDocumentError("a product is a string or an object", path)
    digests: list[str] = []
    identifiers = product.get("identifiers")
    candidates = [product.get("@id")]
    if isinstance(identifiers, Mapping):
        candidates.append(identifiers.get("purl"))
    for candidate in candidates:
        if isinstance(candidate, str):
            digest = _digest_of_identifier(candidate)
            if digest is not None:
                digests.append(digest)
    digests += _hash_digests(product.get("hashes"))
    packages = [
        name
        for index, sub in enumerate(_list(product.get("subcomponents"), f"{path}.subcomponents"))
        for name in _subcomponent_names(sub, f"{path}.subcomponents[{index}]")
    ]
    return digests, packages


def _subcomponent_names(sub: object, path: str) -> list[str]:
    if isinstance(sub, str):
        return [_package_name(sub)]
    if not isinstance(sub, Mapping):
        raise VexDocumentError("a subcomponent is a string or an object", path)
    identifiers = sub.get("identifiers")
    ids = [sub.get("@id")] + ([identifiers.get("purl")] if isinstance(identifiers, Mapping) else [])
    return [_package_name(i) for i in ids if isinstance(i, str) and i.strip()][:1]


def _openvex(document: Mapping[str, Any], limits: VexLimits) -> tuple[VexStatement, ...]:
    raw_statements = _list(document.get("statements"), "$.statements")
    _check_count(len(raw_statements), limits)
    statements: list[VexStatement] = []
    for index, raw in enumerate(raw_statements):
        path = f"$.statements[{index}]"
        if not isinstance(raw, Mapping):
            raise VexDocumentError("expected an object", path)
        vulnerability = raw.get("vulnerability")
        aliases: list[str] = []
        if isinstance(vulnerability, Mapping):  # 0.2.0
            listed = _list(vulnerability.get("aliases"), f"{path}.vulnerability.aliases")
            aliases = [alias for alias in listed if isinstance(alias, str)]
            vulnerability = vulnerability.get("name") or vulnerability.get("@id")
        if not _text(vulnerability):
            raise VexDocumentError("the vulnerability has no name", f"{path}.vulnerability")
        status = _status(raw.get("status"), f"{path}.status")
        justification = _text(raw.get("justification"))
        impact = _text(raw.get("impact_statement"))
        if status == "not_affected" and justification is None and impact is None:
            raise VexDocumentError(
                "not_affected needs a justification or an impact_statement", path
            )
        digests: list[str] = []
        # OpenVEX 0.0.x lists subcomponents beside the products.
        packages = [
            _package_name(s) for s in _list(raw.get("subcomponents"), f"{path}.subcomponents")
            if isinstance(s, str)
        ]  # fmt: skip
        for number, product in enumerate(_list(raw.get("products"), f"{path}.products")):
            found, names = _openvex_product(product, f"{path}.products[{number}]")
            digests += found
            packages += names
        statements.append(
            VexStatement(
                vulnerability=str(vulnerability).strip(), aliases=_unique(aliases),
                status=status, justification=justification, impact_statement=impact,
                products=_unique(digests), packages=_unique(packages),
                timestamp=_text(raw.get("timestamp")) or _text(document.get("timestamp")),
            )
        )  # fmt: skip
    return tuple(statements)


# -- CycloneDX -----------------------------------------------------------------------------------


def _component_digests(component: Mapping[str, Any]) -> list[str]:
    digests: list[str] = []
    purl = component.get("purl")
    if isinstance(purl, str) and purl.startswith("pkg:oci/"):
        digest = _digest_of_identifier(purl)
        if digest is not None:
            digests.append(digest)
    for item in component.get("hashes") or ():
        if isinstance(item, Mapping) and isinstance(item.get("alg"), str):
            digest = _normal_digest(str(item["alg"]), str(item.get("content", "")))
            if digest is not None:
                digests.append(digest)
    return digests


def _cyclonedx(document: Mapping[str, Any], limits: VexLimits) -> tuple[VexStatement, ...]:
    metadata = document.get("metadata")
    subject = metadata.get("component") if isinstance(metadata, Mapping) else None
    subject_digests = _component_digests(subject) if isinstance(subject, Mapping) else []
    components: dict[str, Mapping[str, Any]] = {}
    for component in [subject, *(document.get("components") or ())]:
        if isinstance(component, Mapping) and isinstance(component.get("bom-ref"), str):
            components[str(component["bom-ref"])] = component
    raw_vulnerabilities = _list(document.get("vulnerabilities"), "$.vulnerabilities")
    _check_count(len(raw_vulnerabilities), limits)
    statements: list[VexStatement] = []
    for index, raw in enumerate(raw_vulnerabilities):
        path = f"$.vulnerabilities[{index}]"
        if not isinstance(raw, Mapping):
            raise VexDocumentError("expected an object", path)
        analysis = raw.get("analysis")
        if not isinstance(analysis, Mapping) or "state" not in analysis:
            continue  # a vulnerability without analysis is a finding, not a VEX statement
        state = analysis.get("state")
        if state not in _CYCLONEDX_STATES:
            raise VexDocumentError(
                f"analysis.state must be one of {', '.join(_CYCLONEDX_STATES)}",
                f"{path}.analysis.state",
            )
        vulnerability = _text(raw.get("id"))
        if vulnerability is None:
            raise VexDocumentError("the vulnerability has no id", f"{path}.id")
        aliases = [r.get("id") for r in raw.get("references") or ()
                   if isinstance(r, Mapping) and isinstance(r.get("id"), str)]  # fmt: skip
        justification = _text(analysis.get("justification"))
        if state == "false_positive" and justification is None:
            justification = "false_positive"
        digests, packages = _cyclonedx_affects(
            _list(raw.get("affects"), f"{path}.affects"), components, subject_digests
        )
        statements.append(
            VexStatement(
                vulnerability=vulnerability, aliases=_unique(str(a) for a in aliases),
                status=_CYCLONEDX_STATES[str(state)], justification=justification,
                impact_statement=_text(analysis.get("detail")),
                products=_unique(digests), packages=_unique(packages),
                timestamp=_text(analysis.get("lastUpdated")) or _text(raw.get("updated")),
            )
        )  # fmt: skip
    return tuple(statements)


def _cyclonedx_affects(
    affects: Sequence[Any],
    components: Mapping[str, Mapping[str, Any]],
    subject_digests: Sequence[str],
) -> tuple[list[str], list[str]]:
    if not affects:
        return list(subject_digests), []
    digests: list[str] = []
    packages: list[str] = []
    for item in affects:
        ref = item.get("ref") if isinstance(item, Mapping) else None
        if not isinstance(ref, str):
            continue
        component = components.get(ref)
        own = _component_digests(component) if component is not None else []
        if component is None and ref.startswith("pkg:oci/"):
            own = [d for d in [_digest_of_identifier(ref)] if d is not None]
        if own:  # the ref is the image itself
            digests += own
            continue
        # A package inside the BOM's subject: the subject is the product.
        digests += subject_digests
        purl = component.get("purl") if component is not None else ref
        name = component.get("name") if component is not None else None
        if isinstance(purl, str) and purl.startswith("pkg:"):
            packages.append(_package_name(purl))
        elif isinstance(name, str):
            packages.append(name)
    return digests, packages
