"""SPDX 2.3 JSON documents: structural validation and normalisation to the CycloneDX shape.

Validation uses a compact JSON schema of our own (``schemas/spdx-2.3-document.schema.json``)
covering what the SPDX 2.3 specification makes mandatory for a document (clause 6) and for
each package (clause 7) plus the types of the fields we read, compiled once with jsonschema-rs.
spdx-tools' full model validation is not on this path: it builds a Python object per element
and is far slower than the compiled schema at thousands of packages.

Mapping to the normalised component: ``externalRefs`` of type ``purl`` -> ``purl``;
``versionInfo`` -> ``version``; ``primaryPackagePurpose`` (lower-cased) -> ``type``;
``licenseConcluded`` (unless ``NOASSERTION``/``NONE``) and ``licenseDeclared`` -> ``licenses``;
``checksums`` -> ``hashes`` with CycloneDX algorithm names (``SHA256`` -> ``SHA-256``).
The documented subject is the package the document ``DESCRIBES``: its purl, version and
checksums can bind the SBOM to an image digest like CycloneDX's ``metadata.component``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jsonschema_rs

from gatekeeper.errors import ConfigurationError
from gatekeeper.sbom.normalise import (
    NormalisationLimits,
    NormalisedComponent,
    NormalisedSbom,
    capper_for,
    license_ids_of,
    subject_digests_of,
)
from gatekeeper.sbom.parsing import SbomDocumentError, format_json_path
from gatekeeper.sbom.validation import ParsedSbom

__all__ = ["normalise_spdx", "validate_spdx_document"]

_SUPPORTED = ("SPDX-2.3",)
_NO_LICENSE = frozenset({"NOASSERTION", "NONE"})
_ALGORITHM_NAMES = {
    "SHA1": "SHA-1", "SHA224": "SHA-224", "SHA256": "SHA-256", "SHA384": "SHA-384",
    "SHA512": "SHA-512", "SHA3-256": "SHA3-256", "SHA3-384": "SHA3-384", "SHA3-512": "SHA3-512",
    "BLAKE2b-256": "BLAKE2b-256", "BLAKE2b-384": "BLAKE2b-384", "BLAKE2b-512": "BLAKE2b-512",
    "BLAKE3": "BLAKE3", "MD5": "MD5", "MD4": "MD4", "MD2": "MD2", "MD6": "MD6",
    "ADLER32": "ADLER32",
}

_lock = threading.Lock()
_validator: jsonschema_rs.Validator | None = None


def _compiled() -> jsonschema_rs.Validator:
    global _validator
    with _lock:
        if _validator is None:
            resource = resources.files("gatekeeper.sbom").joinpath(
                "schemas", "spdx-2.3-document.schema.json"
            )
            try:
                schema = json.loads(resource.read_bytes())
                _validator = jsonschema_rs.validator_for(schema, validate_formats=True)
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"cannot load the SPDX 2.3 schema: {exc}") from exc
        return _validator


def validate_spdx_document(document: Mapping[str, Any]) -> str:
    """Validate an SPDX JSON document; return ``"2.3"`` or raise :class:`SbomDocumentError`."""
    version = document.get("spdxVersion")
    if version not in _SUPPORTED:
        raise SbomDocumentError(
            f"unsupported spdxVersion {version!r} (supported: {', '.join(_SUPPORTED)})",
            path="$.spdxVersion",
        )
    validator = _compiled()
    if not validator.is_valid(document):
        error = next(iter(validator.iter_errors(document)))
        path = format_json_path(error.instance_path)
        message = error.message if len(error.message) <= 300 else error.message[:297] + "..."
        raise SbomDocumentError(f"SPDX 2.3 schema violation at {path}: {message}", path=path)
    return "2.3"


def _package_purl(package: Mapping[str, Any]) -> str | None:
    for ref in package.get("externalRefs") or ():
        if ref.get("referenceType") == "purl" and isinstance(ref.get("referenceLocator"), str):
            return str(ref["referenceLocator"])
    return None


def _package_licenses(package: Mapping[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    for key in ("licenseConcluded", "licenseDeclared"):
        value = package.get(key)
        if isinstance(value, str) and value not in _NO_LICENSE and value not in found:
            found.append(value)
    return tuple(found)


def _package_hashes(package: Mapping[str, Any]) -> dict[str, str]:
    return {
        _ALGORITHM_NAMES.get(entry["algorithm"], entry["algorithm"]): entry[
            "checksumValue"
        ].lower()
        for entry in package.get("checksums") or ()
    }


def _described_ids(document: Mapping[str, Any]) -> list[str]:
    described = list(document.get("documentDescribes") or ())
    for relationship in document.get("relationships") or ():
        element = relationship.get("spdxElementId")
        kind = relationship.get("relationshipType")
        related = relationship.get("relatedSpdxElement")
        if element == "SPDXRef-DOCUMENT" and kind == "DESCRIBES":
            described.append(related)
        elif related == "SPDXRef-DOCUMENT" and kind == "DESCRIBED_BY":
            described.append(element)
    return described


def normalise_spdx(parsed: ParsedSbom, limits: NormalisationLimits) -> NormalisedSbom:
    """SPDX 2.3 -> :class:`~gatekeeper.sbom.normalise.NormalisedSbom` (same shape as CycloneDX).

    Described packages are the SBOM's subject, not its components.
    """
    document = parsed.document
    capper = capper_for(limits)
    described = set(_described_ids(document))
    components: list[NormalisedComponent] = []
    subject_digests: list[tuple[str, str]] = []
    subject_name: str | None = None
    count = 0
    for package in document.get("packages") or ():
        purl = _package_purl(package)
        hashes = _package_hashes(package)
        if package.get("SPDXID") in described:
            subject_digests.extend(subject_digests_of(purl, package.get("versionInfo"), hashes))
            subject_name = subject_name or capper.text(package.get("name"))
            continue
        count += 1
        if count > limits.max_components:
            continue
        if len(hashes) > limits.max_hashes_per_component:
            capper.truncated = True
            hashes = dict(list(hashes.items())[: limits.max_hashes_per_component])
        licenses = tuple(capper.text(text) or "" for text in _package_licenses(package))
        purpose = package.get("primaryPackagePurpose")
        components.append(
            NormalisedComponent(
                purl=capper.text(purl),
                name=capper.text(package.get("name")) or "",
                version=capper.text(package.get("versionInfo")),
                type=purpose.lower() if isinstance(purpose, str) else "library",
                licenses=licenses,
                license_ids=license_ids_of(licenses),
                hashes={alg: value[:256] for alg, value in hashes.items()},
            )
        )
    return NormalisedSbom(
        format="spdx",
        spec_version=parsed.spec_version,
        sha256=parsed.sha256,
        component_count=count,
        components=tuple(components),
        truncated=capper.truncated or count > limits.max_components,
        subject_digests=tuple(subject_digests),
        subject_name=subject_name,
    )
