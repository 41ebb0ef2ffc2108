"""The ``sbom`` evidence collector: find, validate, normalise and bind SBOMs for an image.

Its section, ``input.images[].evidence.sbom``::

    {"present": true, "valid": true, "bound": true, "state": "bound",
     "reason": "bound by upload", "format": "cyclonedx", "spec_version": "1.6",
     "sha256": "...", "origin": "upload ...",
     "binding": {"method": "upload", "named_digests": [...]},
     "component_count": 2000, "truncated": false, "components": [...]}

``state`` is one of ``bound``, ``unbound``, ``another_artifact``, ``invalid``, ``missing``.
The first bound candidate wins (sources are asked in the order given); otherwise the most
telling negative is reported: another artifact, then invalid, then unbound. Components are
listed for bound and unbound documents only: the components of another artifact say nothing
about this image.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import Digest, ImageReference
from gatekeeper.sbom.binding import BindingMethod, SbomState, bind_sbom
from gatekeeper.sbom.interface import SbomCandidate, SbomSource, SbomStore
from gatekeeper.sbom.normalise import NormalisationLimits, NormalisedSbom, normalise_sbom
from gatekeeper.sbom.parsing import JsonLimits, SbomDocumentError, paused_gc
from gatekeeper.sbom.validation import CycloneDxValidator, parse_sbom_document

__all__ = ["SbomEvidenceCollector", "StoredSbomSource", "missing_sbom_evidence"]

_NEGATIVE_PREFERENCE = (SbomState.ANOTHER_ARTIFACT, SbomState.INVALID, SbomState.UNBOUND)


def missing_sbom_evidence(reason: str = "no SBOM found for the image") -> dict[str, Any]:
    return {
        "present": False, "valid": False, "bound": False, "state": SbomState.MISSING.value,
        "reason": reason, "format": None, "spec_version": None, "sha256": None, "origin": None,
        "binding": {"method": None, "named_digests": []},
        "component_count": 0, "truncated": False, "components": [],
    }


class StoredSbomSource:
    """Uploaded SBOMs (``POST /v1/sboms``, inline in evaluations) as candidates."""

    name = "upload"

    def __init__(self, store: SbomStore, *, limit: int = 3) -> None:
        self._store = store
        self._limit = limit

    def find(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Sequence[SbomCandidate]:
        if digest is None:
            return ()
        return tuple(
            SbomCandidate(
                content=stored.content,
                method=BindingMethod.UPLOAD,
                subjects=(stored.image_digest,),
                origin=f"upload {stored.id}"
                + (f" (ticket {stored.ticket_id})" if stored.ticket_id else ""),
            )
            for stored in self._store.find_for_digest(digest, limit=self._limit)
        )


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
        self._lock = threading.Lock()

    def _normalised(self, content: bytes) -> NormalisedSbom | SbomDocumentError:
        """Parse, validate and normalise ``content``, memoised by its sha256."""
        key = hashlib.sha256(content).hexdigest()
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
        if isinstance(outcome, SbomDocumentError):
            unread = candidate.problem is not None  # no content: nothing to hash
            evidence = missing_sbom_evidence(f"SBOM is invalid: {outcome.message}")
            evidence.update(
                present=True, state=SbomState.INVALID.value, origin=candidate.origin,
                sha256=None if unread else hashlib.sha256(candidate.content).hexdigest(),
                binding={"method": candidate.method.value if candidate.method else None,
                         "named_digests": list(candidate.subjects)},
            )
            return evidence
        binding = bind_sbom(outcome, digest, method=candidate.method, subjects=candidate.subjects)
        keep_components = binding.state in (SbomState.BOUND, SbomState.UNBOUND)
        return {
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

    @staticmethod
    def _components(sbom: NormalisedSbom) -> list[dict[str, Any]]:
        with paused_gc():
            return sbom.components_as_input()

    def collect(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Mapping[str, Any]:
        negatives: dict[str, dict[str, Any]] = {}
        for source in self._sources:
            for candidate in source.find(reference, digest, context):
                evidence = self.evaluate_candidate(candidate, digest)
                if evidence["bound"]:
                    return evidence
                negatives.setdefault(evidence["state"], evidence)
        for state in _NEGATIVE_PREFERENCE:
            if state.value in negatives:
                return negatives[state.value]
        return missing_sbom_evidence()
