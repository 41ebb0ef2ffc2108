"""The ``signatures`` evidence collector: cosign and Notation signatures and attestations, per
authority.

Its section at ``input.images[].evidence.signatures`` says, for the image digest, which image
policy applies, and per authority whether it verified and why not, with the verified signers
and attestation predicates. Rego decides what that means (threshold, allowed builders); this
module only proves facts. Negative facts are values; transient trouble (registry down, time
budget spent) raises :class:`~gatekeeper.errors.UpstreamUnavailableError` and is never cached.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gatekeeper.domain.concurrency import FanOut
from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.ports.registry import RegistryReader
from gatekeeper.domain.reference import Digest, ImageReference
from gatekeeper.verify.authority import ImagePolicy, SignaturePolicySettings
from gatekeeper.verify.cache import TtlCache
from gatekeeper.verify.cosign import CosignVerifier, VerifiedStatement
from gatekeeper.verify.discovery import OversizedAttestation, find_material
from gatekeeper.verify.trust import TrustRoot

if TYPE_CHECKING:  # the metrics registry (prometheus_client) is the caller's, if any
    from gatekeeper.metrics import Metrics

    # Notation (cbor2, X.509 chains, CRLs) is imported when an authority checks Notation
    # signatures: a cosign-only verification (``gatekeeper verify``) does without it.
    from gatekeeper.verify.notation import NotationVerifier

__all__ = ["EVIDENCE_SCHEMA_VERSION", "SignatureEvidenceCollector"]

log = logging.getLogger(__name__)

EVIDENCE_SCHEMA_VERSION = 1
_CACHE_NAME = "signatures"
#: Threads fetching cosign material (manifests, blobs) in parallel, across all evaluations;
#: the registry client's per-host ``max_concurrent_requests`` bounds what reaches a registry.
_FETCH_WORKERS = 16


@dataclass(frozen=True, slots=True)
class _Entry:
    section: dict[str, Any]
    #: Verified in-toto statements, for :meth:`SignatureEvidenceCollector.verified_statements`.
    statements: tuple[VerifiedStatement, ...]
    #: Attestations left unread for their size (:meth:`~SignatureEvidenceCollector.oversized`).
    oversized: tuple[OversizedAttestation, ...] = ()


class SignatureEvidenceCollector:
    """``EvidenceCollector`` named ``signatures``; thread-safe."""

    name = "signatures"

    def __init__(
        self,
        settings: SignaturePolicySettings,
        registry: RegistryReader,
        trust: TrustRoot,
        *,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._trust = trust
        self._metrics = metrics
        self._verifier = CosignVerifier(trust, max_predicate_bytes=settings.max_predicate_bytes)
        self._now = now
        self._monotonic = monotonic
        self._notation_verifier: NotationVerifier | None = None
        self._notation_lock = threading.Lock()
        self._config_hash = settings.config_hash()
        self._fan_out = FanOut(_FETCH_WORKERS, name="gatekeeper-cosign-fetch")
        #: This collector's part of an evaluation's memo (an object, so no id is ever reused).
        self._memo_key = object()
        self._cache: TtlCache[_Entry] = TtlCache(
            max_entries=settings.cache_max_entries, monotonic=monotonic
        )
        for authority in settings.authorities:
            if authority.match_docker_reference_defaulted and not authority.match_docker_reference:
                log.warning(
                    "signatures: authority %s does not compare the signed docker-reference with "
                    "the image repository (a signature copied to another repository is accepted);"
                    " set match_docker_reference, or version: 2 to make true the default",
                    authority.name,
                )

    def collect(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Mapping[str, Any]:
        entry = self._collect(reference, digest, context)
        return entry.section

    def verified_statements(
        self, reference: ImageReference, digest: Digest, context: EvidenceContext
    ) -> tuple[VerifiedStatement, ...]:
        """The in-toto statements verified for ``digest`` in ``reference``'s repository by an
        authority of its image policy (every authority counts, threshold or not), whose subject
        names ``digest``. Answered from the evaluation's memo (``context.memo``) that ``collect``
        shares: one discovery per image per evaluation, whichever asks first, at any cache TTL.
        Empty when no image policy matches.
        Raises ``UpstreamUnavailableError`` like :meth:`collect`."""
        return self._collect(reference, digest, context, count=False).statements

    def oversized_attestations(
        self, reference: ImageReference, digest: Digest, context: EvidenceContext
    ) -> tuple[OversizedAttestation, ...]:
        """Attestations of ``digest`` left unread (so unverified) because they are larger than
        ``max_payload_bytes``; from the same discovery result as :meth:`verified_statements`."""
        return self._collect(reference, digest, context, count=False).oversized

    def _collect(
        self,
        reference: ImageReference,
        digest: Digest | None,
        context: EvidenceContext,
        *,
        count: bool = True,
    ) -> _Entry:
        """The evidence section and what it was made of. With ``count`` (``collect``): the
        section is a copy with its ``cache`` field and the cache metrics count the lookup."""
        if digest is None:
            digest = self._registry.resolve_digest(reference, deadline=context.deadline)
        policy = self._settings.policy_for(reference.name)
        base: dict[str, Any] = {
            "schema": EVIDENCE_SCHEMA_VERSION,
            "digest": str(digest),
            "trust_root": self._trust.version,
            "config": self._config_hash,
        }
        if policy is None:
            return _Entry(
                base
                | {
                    "status": "unmatched",
                    "verified": False,
                    "policy": None,
                    "unmatched_default": self._settings.unmatched,
                    "reason": "no image policy matches this image",
                    "message": f"image {reference.original}: no signature policy matches "
                    f"{reference.name} (default: {self._settings.unmatched})",
                    "authorities": {},
                    "attestations": [],
                    "cache": "none",
                },
                (),
            )
        key = (
            reference.registry, reference.repository, str(digest), policy.glob,
            self._config_hash, self._trust.version,
        )  # fmt: skip
        # One discovery and verification per image per evaluation, whichever of ``collect``,
        # ``verified_statements`` and ``oversized_attestations`` asks first (they may run
        # concurrently): the evaluation's memo, not the TTL cache (which keeps nothing at TTL 0).
        try:
            origin, entry = context.memo.once(
                (self._memo_key, key),
                lambda: self._cached_or_verified(key, reference, digest, policy, base, context),
            )
        except Exception:
            if count:  # a failed lookup was a miss too
                self._count("miss")
            raise
        if not count:  # a read by another package: no metrics, no copy of the section
            return entry
        self._count(origin)
        return _Entry(
            copy.deepcopy(entry.section) | {"cache": origin}, entry.statements, entry.oversized
        )

    def _cached_or_verified(
        self,
        key: tuple[str, str, str, str, str, str],
        reference: ImageReference,
        digest: Digest,
        policy: ImagePolicy,
        base: dict[str, Any],
        context: EvidenceContext,
    ) -> tuple[str, _Entry]:
        """``("hit", entry)`` from the TTL cache, else ``("miss", entry)`` just verified."""
        cached = self._cache.get(key)
        if cached is not None:
            return "hit", cached
        material = find_material(
            self._registry, reference, digest,
            max_payload_bytes=self._settings.max_payload_bytes,
            max_items=self._settings.max_materials, deadline=context.deadline,
            memo=context.memo, fan_out=self._fan_out,
        )  # fmt: skip
        authorities = [self._settings.authority(name) for name in policy.authorities]
        target = None
        if material.notation and any(a.notation is not None for a in authorities):
            manifest = self._registry.get_manifest(reference, digest, deadline=context.deadline)
            from gatekeeper.verify.notation import TargetArtifact

            target = TargetArtifact(manifest.media_type, manifest.digest, len(manifest.content))
        results = [
            self._notation().verify(
                authority.name, authority.notation, material.notation, reference.name, target,
                material.problems, deadline=context.deadline,
            )
            if authority.notation is not None
            else self._verifier.verify(material, authority, digest, repository=reference.name)
            for authority in authorities
        ]
        verified = [r for r in results if r.verified]
        satisfied = len(verified) >= policy.threshold
        attestations = [
            {"authority": r.name} | attestation for r in results for attestation in r.attestations
        ]
        if satisfied:
            reason = "verified"
            message = f"image {reference.original}: signed by {', '.join(r.name for r in verified)}"
        else:
            failing = [r for r in results if not r.verified]
            first = failing[0].as_evidence()["reason"] if failing else "threshold not met"
            reason = first if len(verified) == 0 else "threshold not met"
            details = "; ".join(
                f"{r.name}: {r.as_evidence()['reason']} ({r.detail})" for r in failing
            )
            message = (
                f"image {reference.original}@{digest}: {reason}; {len(verified)} of "
                f"{policy.threshold} required authorities verified [{details}]"
            )
        section = base | {
            "status": "verified" if satisfied else "unverified",
            "verified": satisfied,
            "policy": {
                "glob": policy.glob,
                "authorities": list(policy.authorities),
                "threshold": policy.threshold,
            },
            "verified_count": len(verified),
            "reason": reason,
            "message": message,
            "authorities": {r.name: _authority_evidence(r.as_evidence()) for r in results},
            "attestations": attestations,
            "material": {
                "signatures": len(material.signatures),
                "bundles": len(material.bundles),
                "attestations": len(material.attestations),
                "sources": list(material.sources),
                "problems": list(material.problems),
            },
        }
        ttl = (
            self._settings.cache_ttl_seconds
            if satisfied
            else self._settings.negative_cache_ttl_seconds
        )
        ends = [r.valid_until for r in results if r.verified and r.valid_until is not None]
        if ends:  # a verified Notation signature expires (or its certificate does) on its own
            ttl = max(0.0, min(ttl, (min(ends) - self._now()).total_seconds()))
        statements = tuple(statement for r in results for statement in r.statements)
        entry = _Entry(section, statements, material.oversized)
        self._cache.put(key, entry, ttl)
        return "miss", entry

    def _notation(self) -> NotationVerifier:
        """The Notation verifier, built (and its modules imported) on first use."""
        with self._notation_lock:
            if self._notation_verifier is None:
                from gatekeeper.verify.notation import NotationVerifier

                self._notation_verifier = NotationVerifier(
                    now=self._now, monotonic=self._monotonic
                )
            return self._notation_verifier

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.cache.labels(cache=_CACHE_NAME, result=result).inc()


def _authority_evidence(evidence: dict[str, Any]) -> dict[str, Any]:
    # Predicates travel once, in the top-level ``attestations`` list; here only their types.
    evidence["attestations"] = [
        {"predicate_type": a["predicate_type"], "kind": a["kind"]} for a in evidence["attestations"]
    ]
    return evidence
