"""The attributes EvaluationService sets and its parts (gathering, recording, warm) share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from opentelemetry import trace

from gatekeeper.domain import (
    AuditLog,
    Decision,
    Digest,
    DigestResolver,
    EvaluationRequest,
    EvidenceCollector,
    EvidenceContext,
    ImageReference,
    PolicyEngine,
    Source,
)
from gatekeeper.domain.concurrency import FanOut
from gatekeeper.domain.evidence_documents import EvidenceExternaliser
from gatekeeper.domain.ports import AsyncPolicyEngine, Clock, EvaluationObserver, PolicyPrefilter
from gatekeeper.evaluation.tag_digests import REMEMBERED_OUTCOME, TagDigestMemory
from gatekeeper.evidence_cache import EvidenceCache

if TYPE_CHECKING:
    from gatekeeper.evaluation.recording import _ThreadedAuditWrites


class ServiceState:
    """Declared here, set by :meth:`gatekeeper.service.EvaluationService.__init__`."""

    _async_engine: AsyncPolicyEngine | None
    _resolve_pool: ThreadPoolExecutor
    _threaded_writes: _ThreadedAuditWrites | None
    _record_async: Callable[[Decision], Awaitable[None]]
    _engine: PolicyEngine
    _audit: AuditLog
    _collectors: tuple[EvidenceCollector, ...]
    _resolver: DigestResolver | None
    _clock: Clock
    _new_id: Callable[[], str]
    _prefilter: PolicyPrefilter | None
    _evidence_cache: EvidenceCache | None
    _tracer: trace.Tracer
    _observers: tuple[EvaluationObserver, ...]
    _image_fan_out: FanOut
    _collector_fan_out: FanOut
    _externaliser: EvidenceExternaliser
    _tag_digests: TagDigestMemory | None

    def _resolve_tag(
        self, reference: ImageReference, context: EvidenceContext, request: EvaluationRequest
    ) -> tuple[Digest, str]:
        """The digest ``reference``'s tag names, and the outcome of the digest step: from the
        tag digest memory (admissions with the gatekeeper's own registry access only), else
        from the registry, remembered when it succeeded. Raises the resolver's
        ``GatekeeperError`` (never remembered)."""
        assert self._resolver is not None
        memory = self._tag_memory(request)
        if memory is None:
            return self._resolver.resolve(reference, context), "resolved"
        remembered = memory.recall(reference)
        if remembered is not None:
            return remembered, REMEMBERED_OUTCOME
        digest = self._resolver.resolve(reference, context)
        memory.remember(reference, digest)
        return digest, "resolved"

    def _tag_memory(self, request: EvaluationRequest) -> TagDigestMemory | None:
        """The tag digest memory, for admissions resolved with the gatekeeper's own registry
        access (a workload's own pull secrets may see what the gatekeeper cannot)."""
        if (self._tag_digests is None or request.source is not Source.ADMISSION
                or request.registry_logins is not None):
            return None
        return self._tag_digests
