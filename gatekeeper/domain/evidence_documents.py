"""Content-addressed evidence documents: large evidence travels and is stored by reference.

An SBOM document's component list is the one piece of evidence that grows with the image (a
1,000-component SBOM made 683 KB of policy input per decision). :func:`externalise_evidence`
moves every component list whose canonical JSON is larger than a threshold out of the policy
input: the document keeps ``component_count`` and gains ``components_sha256``, the sha256 of
the list's RFC 8785 canonical JSON (:func:`canonical_json`); the list itself becomes an *evidence
document*, stored once by the audit trail and loaded once into OPA's data store
(``data.gatekeeper.evidence[<sha256>]``, in the indexed form :func:`build_evidence_index`
builds). :func:`expand_evidence` is the exact inverse: it rebuilds the input the policy would
have seen inline. All of it is pure and deterministic, so a replay or an offline verifier
recomputes the same hashes.
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
    "EVIDENCE_REFERENCE_KEY",
    "EvidenceExternaliser",
    "ExternalisedInput",
    "build_evidence_index",
    "canonical_json",
    "document_sha256",
    "expand_evidence",
    "referenced_hashes",
]

#: Component lists up to this many bytes of canonical JSON stay inline (a reference and its
#: summary cost about as much); larger ones travel by reference.
DEFAULT_INLINE_MAX_BYTES = 2048
#: The key an externalised SBOM document carries instead of ``components``.
EVIDENCE_REFERENCE_KEY = "components_sha256"
_CACHE_SIZE = 256


def document_sha256(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


@dataclass(frozen=True, slots=True)
class ExternalisedInput:
    """The policy input with large evidence replaced by references, and those documents."""

    policy_input: dict[str, Any]
    documents: Mapping[str, Any] = field(default_factory=dict)  # sha256 -> document


def _sbom_documents(policy_input: Mapping[str, Any]) -> Iterator[tuple[int, int, Any]]:
    """``(image index, document index, document)`` of every SBOM document in the input."""
    images = policy_input.get("images")
    if not isinstance(images, list):
        return
    for i, image in enumerate(images):
        evidence = image.get("evidence") if isinstance(image, Mapping) else None
        sbom = evidence.get("sbom") if isinstance(evidence, Mapping) else None
        documents = sbom.get("documents") if isinstance(sbom, Mapping) else None
        if isinstance(documents, list):
            for j, document in enumerate(documents):
                if isinstance(document, Mapping):
                    yield i, j, document


def _replace_document(
    policy_input: dict[str, Any], i: int, j: int, document: dict[str, Any]
) -> None:
    """Copy the path down to document ``j`` of image ``i`` (the rest stays shared), set it."""
    images = list(policy_input["images"])
    image = dict(images[i])
    evidence = dict(image["evidence"])
    sbom = dict(evidence["sbom"])
    documents = list(sbom["documents"])
    documents[j] = document
    sbom["documents"] = documents
    evidence["sbom"] = sbom
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

    def _reference(self, components: list[Any]) -> str | None:
        """The list's sha256 when it is large enough to travel by reference, else None."""
        with self._lock:
            cached = self._memo.get(id(components))
            if cached is not None and cached[0] is components:
                self._memo.move_to_end(id(components))
                return cached[1]
        encoded = canonical_json(components)
        digest = (
            hashlib.sha256(encoded).hexdigest()
            if len(encoded) > self.inline_max_bytes else None
        )
        with self._lock:
            self._memo[id(components)] = (components, digest)
            while len(self._memo) > _CACHE_SIZE:
                self._memo.popitem(last=False)
        return digest

    def externalise(self, policy_input: Mapping[str, Any]) -> ExternalisedInput:
        result = dict(policy_input)
        documents: dict[str, Any] = {}
        for i, j, document in list(_sbom_documents(policy_input)):
            components = document.get("components")
            if not isinstance(components, list):
                continue
            digest = self._reference(components)
            if digest is None:
                continue
            documents[digest] = components
            compact = {k: v for k, v in document.items() if k != "components"}
            compact[EVIDENCE_REFERENCE_KEY] = digest
            _replace_document(result, i, j, compact)
        return ExternalisedInput(result, documents)


def referenced_hashes(policy_input: Mapping[str, Any]) -> list[str]:
    """Every evidence document hash the input references, sorted, each once."""
    found = {
        document[EVIDENCE_REFERENCE_KEY]
        for _, _, document in _sbom_documents(policy_input)
        if isinstance(document.get(EVIDENCE_REFERENCE_KEY), str)
    }
    return sorted(found)


def expand_evidence(
    policy_input: Mapping[str, Any], documents: Mapping[str, Any]
) -> dict[str, Any]:
    """The input with every reference replaced by its document: the inline form.

    Raises :class:`InvalidInputError` naming the hash when a referenced document is absent.
    """
    result = dict(policy_input)
    for i, j, document in list(_sbom_documents(policy_input)):
        digest = document.get(EVIDENCE_REFERENCE_KEY)
        if not isinstance(digest, str):
            continue
        if digest not in documents:
            raise InvalidInputError(
                f"images[{i}].evidence.sbom.documents[{j}] references evidence document "
                f"{digest}, which is not available"
            )
        expanded = {k: v for k, v in document.items() if k != EVIDENCE_REFERENCE_KEY}
        expanded["components"] = documents[digest]
        _replace_document(result, i, j, expanded)
    return result


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
    * ``licenses``: ``{SPDX id: {component name: true}}`` -- a licence glob runs over the
      distinct ids (a handful), not over the components.
    """
    if not isinstance(components, list):
        raise InvalidInputError("an SBOM evidence document must be a list of components")
    purls: dict[str, bool] = {}
    packages: dict[str, list[str]] = {}
    licenses: dict[str, dict[str, bool]] = {}
    for component in components:
        if not isinstance(component, Mapping):
            raise InvalidInputError("an SBOM evidence document lists a non-object component")
        purl = component.get("purl")
        if isinstance(purl, str) and purl not in purls:
            purls[purl] = True
            packages.setdefault(purl.split("@", 1)[0], []).append(purl)
        ids = component.get("license_ids")
        if isinstance(ids, list):
            name = _component_name(component)
            for licence in ids:
                if isinstance(licence, str):
                    licenses.setdefault(licence, {})[name] = True
    return {
        "purls": purls,
        "packages": {key: sorted(value) for key, value in packages.items()},
        "licenses": licenses,
        "component_count": len(components),
    }
