"""The ``sbom`` evidence collector: find, validate, normalise and bind SBOMs for an image.

Every SBOM found for the image reaches the policy, each with where it came from: a caller can
add documents, never hide one (a clean upload must not replace an attested SBOM that
listed a banned component). Its section, ``input.images[].evidence.sbom``::

    {"present": true, "state": "bound", "reason": "2 SBOMs bound to the image digest: ...",
     "document_count": 2, "documents_truncated": false,
     "documents": [
       {"source": "attestation", "authority": "release", "supplied_by": null,
        "present": true, "valid": true, "bound": true, "state": "bound",
        "reason": "bound by attestation", "format": "cyclonedx", "spec_version": "1.6",
        "sha256": "...", "origin": "attestation verified by release (att-tag) (...)",
        "binding": {"method": "attestation", "named_digests": [...]},
        "component_count": 2000, "truncated": false, "components": [...]},
       {"source": "upload", "authority": null, "supplied_by": "ci-bot", ...}]}

``source`` is ``attestation`` (verified for ``authority``), ``referrer``, ``upload`` or
``inline`` (``supplied_by``: the token subject); ``policies/sbom.rego`` decides per environment
which sources count as proof. The summary ``state`` is ``bound`` when any document is bound,
else the most telling negative (another artifact, then invalid, then unbound), else
``missing``; ``reason`` is that document's. A document's state is one of ``bound``,
``unbound``, ``another_artifact``, ``invalid``. Components are listed for bound and unbound
documents only: the components of another artifact say nothing about this image.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from gatekeeper.domain.concurrency import ask_last_first
from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.ports.sbom import (
    SbomCandidate,
    SbomSource,
    SbomStore,
    StoredSbom,
)
from gatekeeper.domain.reference import Digest, ImageReference
from gatekeeper.sbom.binding import BindingMethod, SbomState, bind_sbom
from gatekeeper.sbom.normalise import NormalisationLimits, NormalisedSbom, normalise_sbom
from gatekeeper.sbom.parsing import JsonLimits, SbomDocumentError, paused_gc
from gatekeeper.sbom.validation import CycloneDxValidator, parse_sbom_document

__all__ = [
    "SbomEvidenceCollector",
    "StoredSbomSource",
    "missing_sbom_evidence",
    "upload_candidate",
]

_NEGATIVE_PREFERENCE = (SbomState.ANOTHER_ARTIFACT, SbomState.INVALID, SbomState.UNBOUND)


def missing_sbom_evidence(reason: str = "no SBOM found for the image") -> dict[str, Any]:
    """The section when no document was found (or none could be looked for)."""
    return {
        "present": False, "state": SbomState.MISSING.value, "reason": reason,
        "document_count": 0, "documents_truncated": False, "documents": [],
    }


def _unread_document(reason: str) -> dict[str, Any]:
    return {
        "present": False, "valid": False, "bound": False, "state": SbomState.MISSING.value,
        "reason": reason, "format": None, "spec_version": None, "sha256": None, "origin": None,
        "binding": {"method": None, "named_digests": []},
        "component_count": 0, "truncated": False, "components": [],
    }


def upload_candidate(stored: StoredSbom, method: BindingMethod) -> SbomCandidate:
    """A stored upload or inline SBOM as a candidate, naming who supplied it."""
    return SbomCandidate(
        content=stored.content,
        method=method,
        subjects=(stored.image_digest,),
        origin=f"{stored.source} {stored.id}"
        + (f" by {stored.uploaded_by}" if stored.uploaded_by else "")
        + (f" (ticket {stored.ticket_id})" if stored.ticket_id else ""),
        source=stored.source,
        supplied_by=stored.uploaded_by,
    )


class StoredSbomSource:
    """Uploaded SBOMs (``POST /v1/sboms``, inline in evaluations) as candidates.

    Reads up to ``limit`` documents, newest first, plus one: when there are more, the section
    says ``documents_truncated`` (the policy denies that where it needs the complete picture),
    so piling up uploads cannot push an older one out of sight silently."""

    name = "upload"

    def __init__(self, store: SbomStore, *, limit: int = 16) -> None:
        self._store = store
        self._limit = limit

    def find(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Sequence[SbomCandidate]:
        if digest is None:
            return ()
        stored = self._store.find_for_digest(digest, limit=self._limit + 1)
        candidates = [upload_candidate(item, BindingMethod.UPLOAD) for item in stored]
        if len(candidates) > self._limit:
            return (*candidates[: self._limit], _TRUNCATED)
        return tuple(candidates)


#: Marker candidate: a source had more documents than it reads.
_TRUNCATED = SbomCandidate(b"", None, (), "truncated", problem="truncated")


class SbomEvidenceCollector:
    """Implements :class:`~gatekeeper.domain.ports.EvidenceCollector` under the name ``sbom``."""

    name = "sbom"

    def __init__(
        self,
        *,
        sources: Sequence[SbomSource],
        validator: CycloneDxValidator | None = None,
        json_limits: JsonLimits | None = None,
        normalisation_limits: NormalisationLimits | None = None,
        cache_size: int = 32,
    ) -> None:
        self._sources = tuple(sources)
        self._validator = validator or CycloneDxValidator()
        self._json_limits = json_limits or JsonLimits()
        self._normalisation_limits = normalisation_limits or NormalisationLimits()
        self._cache: OrderedDict[str, NormalisedSbom | SbomDocumentError] = OrderedDict()
        self._cache_size = cache_size
        self._inputs: OrderedDict[int, tuple[NormalisedSbom, list[dict[str, Any]]]] = (
            OrderedDict()
        )
        self._keys: OrderedDict[int, tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()

    def _normalised(self, content: bytes) -> NormalisedSbom | SbomDocumentError:
        """Parse, validate and normalise ``content``, memoised by its sha256 (and by the bytes
        object itself: the store hands out the same object, so it is hashed once)."""
        with self._lock:
            known = self._keys.get(id(content))
        if known is not None and known[0] is content:
            key = known[1]
        else:
            key = hashlib.sha256(content).hexdigest()
            with self._lock:
                self._keys[id(content)] = (content, key)
                while len(self._keys) > self._cache_size:
                    self._keys.popitem(last=False)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        result: NormalisedSbom | SbomDocumentError
        try:
            parsed = parse_sbom_document(
                content, validator=self._validator, limits=self._json_limits
            )
            result = normalise_sbom(parsed, self._normalisation_limits)
        except SbomDocumentError as exc:
            result = exc
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result

    def evaluate_candidate(
        self, candidate: SbomCandidate, digest: Digest | None
    ) -> dict[str, Any]:
        """The evidence section for one candidate (also used by ``POST /v1/sboms`` answers)."""
        outcome = (
            SbomDocumentError(candidate.problem)
            if candidate.problem is not None
            else self._normalised(candidate.content)
        )
        source = {
            "source": candidate.source or (candidate.method.value if candidate.method else None),
            "authority": candidate.authority,
            "supplied_by": candidate.supplied_by,
        }
        if isinstance(outcome, SbomDocumentError):
            unread = candidate.problem is not None  # no content: nothing to hash
            evidence = source | _unread_document(f"SBOM is invalid: {outcome.message}")
            evidence.update(
                present=True, state=SbomState.INVALID.value, origin=candidate.origin,
                sha256=None if unread else hashlib.sha256(candidate.content).hexdigest(),
                binding={"method": candidate.method.value if candidate.method else None,
                         "named_digests": list(candidate.subjects)},
            )
            return evidence
        binding = bind_sbom(outcome, digest, method=candidate.method, subjects=candidate.subjects)
        keep_components = binding.state in (SbomState.BOUND, SbomState.UNBOUND)
        return source | {
            "present": True,
            "valid": True,
            "bound": binding.bound,
            "state": binding.state.value,
            "reason": binding.reason,
            "format": outcome.format,
            "spec_version": outcome.spec_version,
            "sha256": outcome.sha256,
            "origin": candidate.origin,
            "binding": binding.as_input(),
            "component_count": outcome.component_count,
            "truncated": outcome.truncated,
            "components": self._components(outcome) if keep_components else [],
        }

    def _components(self, sbom: NormalisedSbom) -> list[dict[str, Any]]:
        """The input form of ``sbom``'s components, built once per memoised document: a warm
        request hands the policy input the same list, so its evidence hash is computed once
        (gatekeeper/domain/evidence_documents.py). Nobody mutates evidence after collection."""
        with self._lock:
            cached = self._inputs.get(id(sbom))
            if cached is not None and cached[0] is sbom:
                return cached[1]
        with paused_gc():
            components = sbom.components_as_input()
        with self._lock:
            self._inputs[id(sbom)] = (sbom, components)
            while len(self._inputs) > self._cache_size:
                self._inputs.popitem(last=False)
        return components

    def collect(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Mapping[str, Any]:
        documents: list[dict[str, Any]] = []
        seen: set[tuple[Any, ...]] = set()
        truncated = False
        for found in ask_last_first(self._sources, lambda s: s.find(reference, digest, context)):
            for candidate in found:
                if candidate is _TRUNCATED:
                    truncated = True
                    continue
                document = self.evaluate_candidate(candidate, digest)
                key = (document["source"], document["authority"], document["supplied_by"],
                       document["sha256"], document["reason"])  # fmt: skip
                if key not in seen:  # the same statement found twice (tag and referrer)
                    seen.add(key)
                    documents.append(document)
        if not documents:
            return missing_sbom_evidence() | {"documents_truncated": truncated}
        return {
            **_summary(documents),
            "document_count": len(documents),
            "documents_truncated": truncated,
            "documents": documents,
        }


def _describe(document: Mapping[str, Any]) -> str:
    """``attestation by release``, ``upload by ci-bot``: a document's source for humans."""
    who = document.get("authority") or document.get("supplied_by")
    return f"{document['source']} by {who}" if who else str(document["source"])


def _summary(documents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    bound = [d for d in documents if d["state"] == SbomState.BOUND.value]
    if bound:
        sources = ", ".join(sorted({_describe(d) for d in bound}))
        noun = "SBOM" if len(bound) == 1 else "SBOMs"
        return {
            "present": True, "state": SbomState.BOUND.value,
            "reason": f"{len(bound)} {noun} bound to the image digest: {sources}",
        }  # fmt: skip
    by_state: dict[str, Mapping[str, Any]] = {}
    for document in documents:
        by_state.setdefault(document["state"], document)
    for state in _NEGATIVE_PREFERENCE:
        if state.value in by_state:
            reason = by_state[state.value]["reason"]
            return {"present": True, "state": state.value, "reason": reason}
    return {"present": False, "state": SbomState.MISSING.value, "reason": "no SBOM found"}
