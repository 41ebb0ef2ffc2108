"""Fakes implementing the real ports (``gatekeeper.domain.ports``) for the admission tests.

The policy fake decides per image reference, like the real Rego does with
``input.images[].reference``; the resolver fake is a registry whose tags map to fixed digests
and that can be made slow (a hanging registry) to test the admission deadline.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from typing import Any

from gatekeeper.domain import (
    Digest,
    EvidenceContext,
    ImageReference,
    PolicyResult,
    Violation,
)
from gatekeeper.domain.ports import DigestResolver, EvidenceCollector, PolicyEngine, PolicyPrefilter
from gatekeeper.errors import UpstreamUnavailableError
from gatekeeper.service import EvaluationService
from tests.fakes import FakeAuditLog

__all__ = [
    "CountingCollector",
    "MemoryAuditLog",
    "PrefilterPolicyEngine",
    "RulePolicyEngine",
    "TableDigestResolver",
    "build_service",
    "digest_of",
]


def digest_of(name: str) -> str:
    """The digest the fake registry serves for ``registry/repository:tag``."""
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


class RulePolicyEngine(PolicyEngine):
    """Violations and warnings by image reference (as written in the object)."""

    def __init__(
        self,
        deny: Mapping[str, str | list[str]] | None = None,
        warn: Mapping[str, str | list[str]] | None = None,
    ) -> None:
        self.deny = dict(deny or {})
        self.warn = dict(warn or {})
        self.inputs: list[Mapping[str, Any]] = []
        self._lock = threading.Lock()

    @staticmethod
    def _findings(table: Mapping[str, str | list[str]], ref: str) -> list[Violation]:
        messages = table.get(ref, [])
        if isinstance(messages, str):
            messages = [messages]
        return [Violation("test.rule", message, ref) for message in messages]

    def evaluate(
        self, policy_input: Mapping[str, Any], evidence: Mapping[str, Any] | None = None
    ) -> PolicyResult:
        with self._lock:
            self.inputs.append(policy_input)
        violations: list[Violation] = []
        warnings: list[Violation] = []
        for image in policy_input["images"]:
            violations += self._findings(self.deny, image["reference"])
            warnings += self._findings(self.warn, image["reference"])
        return PolicyResult(tuple(violations), tuple(warnings), "sha256:rules")

    def revision(self) -> str:
        return "sha256:rules"

    def check_health(self) -> None:
        return None


class PrefilterPolicyEngine(RulePolicyEngine, PolicyPrefilter):
    """Also implements ``PolicyPrefilter``: ``offline`` findings hold without evidence (like the
    registry allow-list) and deny in the full evaluation too, as the real Rego does."""

    def __init__(self, offline: Mapping[str, str], **tables: Any) -> None:
        deny = dict(tables.pop("deny", {}) or {})
        for image, message in offline.items():
            deny[image] = [message, *([deny[image]] if isinstance(deny.get(image), str)
                                      else deny.get(image, []))]
        super().__init__(deny=deny, **tables)
        self.offline = dict(offline)
        self.prefilter_inputs: list[Mapping[str, Any]] = []

    def prefilter(self, policy_input: Mapping[str, Any]) -> tuple[Violation, ...]:
        self.prefilter_inputs.append(policy_input)
        return tuple(
            Violation("test.rule", self.offline[image["reference"]], image["reference"])
            for image in policy_input["images"] if image["reference"] in self.offline
        )


class CountingCollector(EvidenceCollector):
    """An evidence collector that counts its calls (each one would be registry round trips)."""

    name = "signatures"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def collect(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Mapping[str, Any]:
        with self._lock:
            self.calls.append(reference.original)
        return {"status": "verified", "digest": str(digest)}


MemoryAuditLog = FakeAuditLog


class TableDigestResolver(DigestResolver):
    """A registry on a table: every tag resolves to :func:`digest_of`, unless ``missing``.

    ``delay`` seconds are spent per resolution, as a slow or hanging registry would; the
    deadline is checked before each "network step", as the real resolver must.
    """

    def __init__(self, *, delay: float = 0.0, missing: frozenset[str] = frozenset()) -> None:
        self.delay = delay
        self.missing = missing
        self.calls = 0

    def resolve(self, reference: ImageReference, context: EvidenceContext) -> Digest:
        self.calls += 1
        if context.deadline is not None and time.monotonic() >= context.deadline:
            raise UpstreamUnavailableError(
                f"deadline reached before resolving {reference.original}"
            )
        if self.delay:
            time.sleep(self.delay)
        if reference.original in self.missing:
            raise UpstreamUnavailableError(f"registry has no tag for {reference.original}")
        algorithm, hex_digest = digest_of(f"{reference.name}:{reference.tag}").split(":")
        return Digest(algorithm, hex_digest)


def build_service(
    *,
    deny: Mapping[str, str | list[str]] | None = None,
    warn: Mapping[str, str | list[str]] | None = None,
    delay: float = 0.0,
    audit: MemoryAuditLog | None = None,
    evidence_threads: int = 16,
) -> tuple[EvaluationService, MemoryAuditLog]:
    audit = audit or MemoryAuditLog()
    service = EvaluationService(
        policy_engine=RulePolicyEngine(deny, warn),
        audit_log=audit,
        digest_resolver=TableDigestResolver(delay=delay),
        evidence_threads=evidence_threads,
    )
    return service, audit
