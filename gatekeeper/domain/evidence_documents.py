"""Content-addressed evidence documents: large evidence travels and is stored by reference.

Two pieces of evidence grow with the image: an SBOM document's component list (a
1,000-component SBOM made 683 KB of policy input per decision) and the predicate of a verified
attestation (an attested CycloneDX SBOM is the whole SBOM again). :class:`EvidenceExternaliser`
moves each of them whose RFC 8785 canonical JSON (:func:`canonical_json`) is larger than a
threshold out of the policy input: the item keeps its summary (``component_count``,
``predicate_type``, ``builder_id`` ...) and gains ``components_sha256`` / ``predicate_sha256``,
the sha256 of that canonical JSON; the value becomes an *evidence document*, stored once by
the audit trail and loaded once into OPA's data store (``data.gatekeeper.evidence[<sha256>]``,
a component list in the indexed form :func:`build_evidence_index` builds).
:func:`expand_evidence` is the exact inverse: it rebuilds the input the policy would have seen
inline. All of it is pure and deterministic, so a replay or an offline verifier recomputes the
same hashes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.domain.canonical import canonical_json
from gatekeeper.errors import InvalidInputError

__all__ = [
    "DEFAULT_INLINE_MAX_BYTES",
    "REFERENCE_KEYS",
    "SLOTS",
    "EvidenceExternaliser",
    "ExternalisedInput",
    "build_data_document",
    "build_evidence_index",
    "canonical_json",
    "document_sha256",
    "expand_evidence",
    "mentions_references",
    "referenced_hashes",
]

#: Component lists up to this many bytes of canonical JSON stay inline (a reference and its
#: summary cost about as much); larger ones travel by reference.
DEFAULT_INLINE_MAX_BYTES = 2048
_CACHE_SIZE = 256


def document_sha256(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


@dataclass(frozen=True, slots=True)
class ExternalisedInput:
    """The policy input with large evidence replaced by references, and those documents."""

    policy_input: dict[str, Any]
    documents: Mapping[str, Any] = field(default_factory=dict)  # sha256 -> document


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where a kind of evidence document sits: ``evidence[section][items][n][field]``."""

    section: str
    items: str
    field: str
    reference: str


#: The evidence that grows with the image: an SBOM document's component list, and the
#: predicate of a verified attestation (an attested CycloneDX SBOM is as large as the SBOM).
SLOTS = (
    _Slot("sbom", "documents", "components", "components_sha256"),
    _Slot("signatures", "attestations", "predicate", "predicate_sha256"),
)
REFERENCE_KEYS = tuple(slot.reference for slot in SLOTS)


def mentions_references(text: str) -> bool:
    """Cheap pre-check on a JSON text: could it reference an evidence document?"""
    return any(f'"{key}"' in text for key in REFERENCE_KEYS)


def _documents(policy_input: Mapping[str, Any]) -> Iterator[tuple[int, _Slot, int, Any]]:
    """``(image index, slot, item index, item)`` of every slot item in the input (or in a
    decision document: its ``images`` carry the same evidence)."""
    images = policy_input.get("images")
    if not isinstance(images, list):
        return
    for i, image in enumerate(images):
        evidence = image.get("evidence") if isinstance(image, Mapping) else None
        if not isinstance(evidence, Mapping):
            continue
        for slot in SLOTS:
            section = evidence.get(slot.section)
            items = section.get(slot.items) if isinstance(section, Mapping) else None
            if isinstance(items, list):
                for j, item in enumerate(items):
                    if isinstance(item, Mapping):
                        yield i, slot, j, item


def _replace_item(
    policy_input: dict[str, Any], i: int, slot: _Slot, j: int, item: dict[str, Any]
) -> None:
    """Copy the path down to item ``j`` of the slot of image ``i`` (the rest stays shared)."""
    images = list(policy_input["images"])
    image = dict(images[i])
    evidence = dict(image["evidence"])
    section = dict(evidence[slot.section])
    items = list(section[slot.items])
    items[j] = item
    section[slot.items] = items
    evidence[slot.section] = section
    image["evidence"] = evidence
    images[i] = image
    policy_input["images"] = images


class EvidenceExternaliser:
    """Applies :func:`externalise` with a memo: a warm request reuses the collector's memoised
    component lists (the same objects), so each list is serialised and hashed once, not per
    decision. The memo holds the lists themselves, so an ``id`` is never reused while cached."""

    def __init__(self, inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES) -> None:
        if inline_max_bytes < 0:
            raise InvalidInputError("evidence inline limit must be 0 or more bytes")
        self.inline_max_bytes = inline_max_bytes
        self._memo: OrderedDict[int, tuple[Any, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def _reference(self, value: Any) -> str | None:
        """The value's sha256 when it is large enough to travel by reference, else None."""
        with self._lock:
            cached = self._memo.get(id(value))
            if cached is not None and cached[0] is value:
                self._memo.move_to_end(id(value))
                return cached[1]
        encoded = canonical_json(value)
        digest = (
            hashlib.sha256(encoded).hexdigest()
            if len(encoded) > self.inline_max_bytes else None
        )
        with self._lock:
            self._memo[id(value)] = (value, digest)
            while len(self._memo) > _CACHE_SIZE:
                self._memo.popitem(last=False)
        return digest

    def externalise(self, policy_input: Mapping[str, Any]) -> ExternalisedInput:
        result = dict(policy_input)
        documents: dict[str, Any] = {}
        for i, slot, j, item in list(_documents(policy_input)):
            value = item.get(slot.field)
            # a component list (array) or a predicate (object); null / absent stays as is
            if not isinstance(value, (list, dict)):
                continue
            digest = self._reference(value)
            if digest is None:
                continue
            documents[digest] = value
            compact = {k: v for k, v in item.items() if k != slot.field}
            compact[slot.reference] = digest
            _replace_item(result, i, slot, j, compact)
        return ExternalisedInput(result, documents)


def referenced_hashes(policy_input: Mapping[str, Any]) -> list[str]:
    """Every evidence document hash the input (or decision document) references, sorted."""
    found = {
        item[slot.reference]
        for _, slot, _, item in _documents(policy_input)
        if isinstance(item.get(slot.reference), str)
    }
    return sorted(found)


def expand_evidence(
    policy_input: Mapping[str, Any], documents: Mapping[str, Any]
) -> dict[str, Any]:
    """The input with every reference replaced by its document: the inline form.

    Raises :class:`InvalidInputError` naming the hash when a referenced document is absent.
    """
    result = dict(policy_input)
    for i, slot, j, item in list(_documents(policy_input)):
        digest = item.get(slot.reference)
        if not isinstance(digest, str):
            continue
        if digest not in documents:
            raise InvalidInputError(
                f"images[{i}].evidence.{slot.section}.{slot.items}[{j}] references evidence "
                f"document {digest}, which is not available"
            )
        expanded = {k: v for k, v in item.items() if k != slot.reference}
        expanded[slot.field] = documents[digest]
        _replace_item(result, i, slot, j, expanded)
    return result


def build_data_document(document: Any) -> Any:
    """What OPA holds for a document: a component list as its index
    (:func:`build_evidence_index`), anything else (an attestation predicate) as itself."""
    return build_evidence_index(document) if isinstance(document, list) else document


def _component_name(component: Mapping[str, Any]) -> str:
    """As ``component_name`` in policies/sbom.rego: the purl, else "name version", else name."""
    if isinstance(component.get("purl"), str):
        return str(component["purl"])
    if isinstance(component.get("version"), str):
        return f"{component.get('name')} {component['version']}"
    return str(component.get("name"))


def build_evidence_index(components: Any) -> dict[str, Any]:
    """The form OPA holds a component list in (``data.gatekeeper.evidence[<sha256>]``), so a
    policy looks a banned entry up instead of scanning every component:

    * ``purls``: ``{purl: true}`` -- an exact purl is one lookup;
    * ``packages``: ``{purl up to its first "@": [purls]}`` -- a pattern whose part before
      its first "@" is literal (``pkg:npm/event-stream@*``) globs only that package's purls;
    * ``types``: ``{purl up to its first "/" (``pkg:npm/``): [purls]}`` -- a pattern with a
      wildcard in the name (``pkg:pypi/debug-*``) globs only the purls of its type;
    * ``licenses``: ``{SPDX id: {component name: true}}`` -- a licence glob runs over the
      distinct ids (a handful), not over the components.
    """
    if not isinstance(components, list):
        raise InvalidInputError("an SBOM evidence document must be a list of components")
    purls: dict[str, bool] = {}
    packages: dict[str, list[str]] = {}
    types: dict[str, list[str]] = {}
    licenses: dict[str, dict[str, bool]] = {}
    for component in components:
        if not isinstance(component, Mapping):
            raise InvalidInputError("an SBOM evidence document lists a non-object component")
        purl = component.get("purl")
        if isinstance(purl, str) and purl not in purls:
            purls[purl] = True
            packages.setdefault(purl.split("@", 1)[0], []).append(purl)
            slash = purl.find("/")
            if slash > 0:
                types.setdefault(purl[:slash + 1], []).append(purl)
        ids = component.get("license_ids")
        if isinstance(ids, list):
            name = _component_name(component)
            for licence in ids:
                if isinstance(licence, str):
                    licenses.setdefault(licence, {})[name] = True
    return {
        "purls": purls,
        "packages": {key: sorted(value) for key, value in packages.items()},
        "types": {key: sorted(value) for key, value in types.items()},
        "licenses": licenses,
        "component_count": len(components),
    }
