"""Strict, fast validation of CycloneDX JSON documents (spec 1.2 - 1.7) with compiled schemas.

The schemas are the CycloneDX project's own (``schemas/``, see its NOTICE), compiled once per
spec version with jsonschema-rs. cyclonedx-python-lib's validator is not used on this path:
it is quadratic in the number of components (about 4.5 s at 2,000 components).

The BOM schemas ``$ref`` ``spdx.schema.json``, ``jsf-0.82.schema.json`` and (1.7)
``cryptography-defs.schema.json`` relative to their ``$id`` under
``http://cyclonedx.org/schema/``; those are registered from the package, and any other
retrieval is refused, so compiling a validator never touches the network.

``$schema``: the 1.2 - 1.5 schemas pin it with a one-value ``enum`` that is not always their own
``$id`` (the 1.2 strict schema is ``bom-1.2b`` but demands ``bom-1.2a``; 1.3 is ``bom-1.3a`` but
demands ``bom-1.3``), and generators write the ``$id`` they validate against. The loaded schema's
enum is therefore widened, in memory, to every ``$id`` the CycloneDX project published for that
version (:data:`CYCLONEDX_SCHEMA_IDS`); the files stay unmodified and nothing else is relaxed.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema_rs

from gatekeeper.errors import ConfigurationError
from gatekeeper.sbom.parsing import (
    JsonLimits,
    SbomDocumentError,
    format_json_path,
    load_bounded_json,
)

__all__ = [
    "CYCLONEDX_SCHEMA_IDS",
    "SUPPORTED_CYCLONEDX_VERSIONS",
    "CycloneDxValidator",
    "ParsedSbom",
    "format_json_path",
    "parse_sbom_document",
]

_SCHEMA_BASE_URI = "http://cyclonedx.org/schema/"
_SHARED_SCHEMAS = ("spdx.schema.json", "jsf-0.82.schema.json", "cryptography-defs.schema.json")
# 1.2 and 1.3 ship a lax and a "-strict" schema; 1.4 onwards forbid additional properties.
_BOM_SCHEMAS: Mapping[str, str] = {
    "1.2": "bom-1.2-strict.schema.json",
    "1.3": "bom-1.3-strict.schema.json",
    "1.4": "bom-1.4.schema.json",
    "1.5": "bom-1.5.schema.json",
    "1.6": "bom-1.6.schema.json",
    "1.7": "bom-1.7.schema.json",
}
SUPPORTED_CYCLONEDX_VERSIONS: tuple[str, ...] = tuple(_BOM_SCHEMAS)
#: Every ``$id`` the CycloneDX specification repository published for a version's JSON schema
#: (``git log -p schema/bom-1.*.schema.json``): the accepted ``$schema`` values. 1.6 and 1.7
#: leave ``$schema`` a free string, so they are not listed.
CYCLONEDX_SCHEMA_IDS: Mapping[str, tuple[str, ...]] = {
    version: tuple(f"{_SCHEMA_BASE_URI}bom-{version}{suffix}.schema.json" for suffix in suffixes)
    for version, suffixes in (
        ("1.2", ("", "a", "b")),
        ("1.3", ("", "a")),
        ("1.4", ("",)),
        ("1.5", ("",)),
    )
}


@dataclass(frozen=True, slots=True)
class ParsedSbom:
    """A document that passed the limits and its schema. ``document`` is the parsed JSON."""

    format: str  # "cyclonedx" | "spdx"
    spec_version: str
    document: Mapping[str, Any]
    sha256: str
    size: int


def _refuse_retrieval(uri: str) -> Any:
    raise ValueError(f"schema {uri} is not shipped with the gatekeeper; refusing to fetch it")


def _accept_published_ids(schema: Any, version: str) -> Any:
    """Widen the ``$schema`` enum of a 1.2 - 1.5 schema to the version's published ids."""
    ids = CYCLONEDX_SCHEMA_IDS.get(version)
    if ids is None:
        return schema
    try:
        declared = schema["properties"]["$schema"]
    except (KeyError, TypeError) as exc:
        raise ConfigurationError(f"the CycloneDX {version} schema has no $schema property") from exc
    if not isinstance(declared, dict) or "enum" not in declared:
        raise ConfigurationError(f"the CycloneDX {version} schema no longer pins $schema")
    declared["enum"] = list(ids)
    return schema


class CycloneDxValidator:
    """Validates CycloneDX JSON against the schema its ``specVersion`` names.

    Validators are compiled lazily, once per version, and shared between threads
    (jsonschema-rs validators are immutable once built).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._compiled: dict[str, jsonschema_rs.Validator] = {}
        self._registry: jsonschema_rs.Registry | None = None

    @staticmethod
    def _load_schema(name: str) -> Any:
        resource = resources.files("gatekeeper.sbom").joinpath("schemas", name)
        try:
            return json.loads(resource.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"CycloneDX schema {name} is missing or corrupt in the installed package"
            ) from exc

    def _validator(self, version: str) -> jsonschema_rs.Validator:
        compiled = self._compiled.get(version)
        if compiled is not None:
            return compiled
        with self._lock:
            compiled = self._compiled.get(version)
            if compiled is not None:
                return compiled
            if self._registry is None:
                self._registry = jsonschema_rs.Registry(
                    [
                        (_SCHEMA_BASE_URI + name, self._load_schema(name))
                        for name in _SHARED_SCHEMAS
                    ],
                    retriever=_refuse_retrieval,
                )
            schema = _accept_published_ids(self._load_schema(_BOM_SCHEMAS[version]), version)
            try:
                compiled = jsonschema_rs.validator_for(
                    schema,
                    registry=self._registry,
                    retriever=_refuse_retrieval,
                    validate_formats=True,
                )
            except (ValueError, jsonschema_rs.ReferencingError) as exc:
                raise ConfigurationError(
                    f"cannot compile the CycloneDX {version} schema: {exc}"
                ) from exc
            self._compiled[version] = compiled
            return compiled

    def warm_up(self) -> None:
        """Compile every supported version now (call at start-up, not on the first request)."""
        for version in SUPPORTED_CYCLONEDX_VERSIONS:
            self._validator(version)

    def validate(self, document: Any) -> str:
        """Validate a parsed document; return its spec version, or raise
        :class:`SbomDocumentError` naming the JSON path of the first problem."""
        if not isinstance(document, dict):
            raise SbomDocumentError("a CycloneDX document must be a JSON object")
        if document.get("bomFormat") != "CycloneDX":
            raise SbomDocumentError(
                "bomFormat must be \"CycloneDX\"", path="$.bomFormat"
            )
        version = document.get("specVersion")
        if not isinstance(version, str) or version not in _BOM_SCHEMAS:
            raise SbomDocumentError(
                f"unsupported CycloneDX specVersion {version!r} "
                f"(supported: {', '.join(SUPPORTED_CYCLONEDX_VERSIONS)})",
                path="$.specVersion",
            )
        validator = self._validator(version)
        if validator.is_valid(document):  # fast path: no error objects are built
            return version
        error = next(iter(validator.iter_errors(document)), None)
        if error is None:  # pragma: no cover - is_valid and iter_errors disagree
            raise SbomDocumentError(f"document does not match the CycloneDX {version} schema")
        path = format_json_path(error.instance_path)
        message = error.message if len(error.message) <= 300 else error.message[:297] + "..."
        raise SbomDocumentError(
            f"CycloneDX {version} schema violation at {path}: {message}", path=path
        )


def parse_sbom_document(
    data: bytes,
    *,
    validator: CycloneDxValidator,
    limits: JsonLimits | None = None,
) -> ParsedSbom:
    """Parse and validate a CycloneDX or SPDX 2.3 JSON document from untrusted bytes.

    The format is recognised from the document itself (``bomFormat`` or ``spdxVersion``).
    Raises :class:`SbomDocumentError` naming the first problem and its JSON path.
    """
    document = load_bounded_json(data, limits)
    digest = hashlib.sha256(data).hexdigest()
    if isinstance(document, dict) and "spdxVersion" in document and "bomFormat" not in document:
        from gatekeeper.sbom.spdx import validate_spdx_document

        version = validate_spdx_document(document)
        return ParsedSbom("spdx", version, document, digest, len(data))
    version = validator.validate(document)
    return ParsedSbom("cyclonedx", version, document, digest, len(data))
