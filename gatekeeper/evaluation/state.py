"""The attributes EvaluationService sets and its parts (gathering, recording, warm) share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from opentelemetry import trace

from gatekeeper.domain import AuditLog, Decision, DigestResolver, EvidenceCollector, PolicyEngine
from gatekeeper.domain.concurrency import FanOut
from gatekeeper.domain.evidence_documents import EvidenceExternaliser
from gatekeeper.domain.ports import AsyncPolicyEngine, Clock, EvaluationObserver, PolicyPrefilter
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
