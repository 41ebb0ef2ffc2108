"""The tag digest memory: an admission of a tag resolved lately asks no registry.

A successful resolution is remembered for the TTL (the mutating webhook pins that digest);
after it, the tag is resolved again; a failed resolution is never remembered; a workload's own
registry logins bypass the memory; a TTL of 0 turns it off.
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gatekeeper.domain import (
    Decision,
    EvaluationRequest,
    EvidenceContext,
    Source,
    parse_digest,
    parse_image_reference,
)
from gatekeeper.domain.credentials import WorkloadRegistryLogins
from gatekeeper.evaluation.tag_digests import REMEMBERED_OUTCOME, TagDigestMemory
from gatekeeper.evidence_cache import EvidenceCache
from gatekeeper.metrics import Metrics
from gatekeeper.service import EvaluationService
from gatekeeper.webhook.handler import AdmissionHandler
from gatekeeper.webhook.scope import AdmissionSettings
from tests.unit.webhook.fakes import (
    CountingCollector,
    MemoryAuditLog,
    PrefilterPolicyEngine,
    TableDigestResolver,
    digest_of,
)
from tests.unit.webhook.test_cluster_semantics import answer, load
from tests.unit.webhook.test_warm_path import AsyncPrefilterEngine

TAGS = 3  # busybox:1.36, ghcr.io/acme/web:2.0, ghcr.io/acme/api:1.4 (the 4th is pinned)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Steps:
    """An observer noting the outcome of every digest step."""

    def __init__(self) -> None:
        self.digest: list[str] = []

    def evidence_step(self, step: str, outcome: str, seconds: float) -> None:
        if step == "digest":
            self.digest.append(outcome)

    def decision_recorded(self, decision: Decision) -> None:
        pass


def _handler(
    resolver: TableDigestResolver, memory: TagDigestMemory | None, steps: Steps,
    engine: PrefilterPolicyEngine | None = None,
) -> AdmissionHandler:
    engine = engine or AsyncPrefilterEngine()
    service = EvaluationService(
        policy_engine=engine, audit_log=MemoryAuditLog(), collectors=[CountingCollector()],
        digest_resolver=resolver, prefilter=engine,
        async_policy_engine=engine if isinstance(engine, AsyncPrefilterEngine) else None,
        evidence_cache=EvidenceCache(ttl_seconds=60, max_entries=64),
        tag_digest_memory=memory, observers=[steps])
    return AdmissionHandler(service, AdmissionSettings())


def _review(number: int) -> dict[str, Any]:
    review = load("deployment-create")
    review["request"]["uid"] = f"00000000-0000-4000-8000-{number:012d}"
    return review


@pytest.mark.parametrize("on_loop", [True, False])
def test_a_tag_resolved_lately_is_not_resolved_again_within_the_ttl(on_loop: bool) -> None:
    clock, steps, resolver = Clock(), Steps(), TableDigestResolver()
    memory = TagDigestMemory(ttl_seconds=30, monotonic=clock)
    handler = _handler(resolver, memory, steps,
                       AsyncPrefilterEngine() if on_loop else PrefilterPolicyEngine({}))
    first = answer(handler, _review(1), webhook="mutate")
    assert first.allowed and resolver.calls == TAGS
    assert steps.digest == ["resolved"] * TAGS

    clock.now += 29
    second = answer(handler, _review(2), webhook="mutate")

    assert second.allowed and second.patch == first.patch  # the same digests pinned
    assert resolver.calls == TAGS  # no registry request
    assert steps.digest[TAGS:] == [REMEMBERED_OUTCOME] * TAGS


def test_after_the_ttl_the_tag_is_resolved_again() -> None:
    clock, steps, resolver = Clock(), Steps(), TableDigestResolver()
    handler = _handler(resolver, TagDigestMemory(ttl_seconds=30, monotonic=clock), steps)
    answer(handler, _review(1), webhook="mutate")

    clock.now += 30
    again = answer(handler, _review(2), webhook="mutate")

    assert again.allowed and resolver.calls == 2 * TAGS
    assert steps.digest[TAGS:] == ["resolved"] * TAGS


def test_a_failed_resolution_is_never_remembered() -> None:
    steps = Steps()
    resolver = TableDigestResolver(missing=frozenset({"ghcr.io/acme/web:2.0"}))
    handler = _handler(resolver, TagDigestMemory(ttl_seconds=30), steps)
    denied = answer(handler, _review(1), webhook="mutate")
    assert not denied.allowed
    assert "ghcr.io/acme/web:2.0" in denied.message
    assert "digest not resolved: registry has no tag for ghcr.io/acme/web:2.0" in denied.message

    resolver.missing = frozenset()  # the tag is pushed
    admitted = answer(handler, _review(2), webhook="mutate")

    assert admitted.allowed
    web = [op for op in admitted.patch if "ghcr.io/acme/web:2.0" in op["value"]]
    assert web == [{"op": "replace", "path": "/spec/template/spec/containers/0/image",
                    "value": f"ghcr.io/acme/web:2.0@{digest_of('ghcr.io/acme/web:2.0')}"}]
    # the two tags resolved by the denied admission are remembered, the missing one is asked
    assert steps.digest[TAGS:].count(REMEMBERED_OUTCOME) == TAGS - 1
    assert resolver.calls == TAGS + 1


def test_no_memory_resolves_on_every_admission() -> None:
    steps, resolver = Steps(), TableDigestResolver()
    handler = _handler(resolver, TagDigestMemory(ttl_seconds=0), steps)
    for number in range(3):
        assert answer(handler, _review(number), webhook="mutate").allowed
    assert resolver.calls == 3 * TAGS and REMEMBERED_OUTCOME not in steps.digest


def test_requests_with_their_own_registry_logins_and_pipelines_bypass_the_memory() -> None:
    resolver, steps = TableDigestResolver(), Steps()
    memory = TagDigestMemory(ttl_seconds=30)
    web = parse_image_reference("ghcr.io/acme/web:2.0")
    memory.remember(web, resolver.resolve(web, EvidenceContext(environment="prod", namespace=None)))
    service = EvaluationService(
        policy_engine=PrefilterPolicyEngine({}), audit_log=MemoryAuditLog(),
        digest_resolver=resolver, tag_digest_memory=memory, observers=[steps])
    for request in (
        EvaluationRequest(images=(web,), source=Source.ADMISSION, environment="prod",
                          registry_logins=WorkloadRegistryLogins(lambda _host: None, "secret/pull")),
        EvaluationRequest(images=(web,), source=Source.PIPELINE, environment="prod"),
    ):
        service.evaluate(request)
    assert steps.digest == ["resolved", "resolved"] and resolver.calls == 3


def test_the_memory_is_bounded_and_keyed_by_registry_repository_and_tag() -> None:
    memory = TagDigestMemory(ttl_seconds=30, max_entries=2, monotonic=Clock())
    one, two, three = (parse_image_reference(f"registry.example/app:{n}") for n in (1, 2, 3))
    pinned = parse_image_reference(f"registry.example/app@{digest_of('x')}")
    for reference in (one, two, three):
        memory.remember(reference, parse_digest(digest_of(reference.original)))
    assert memory.recall(one) is None  # least recently used out first
    assert str(memory.recall(three)) == digest_of("registry.example/app:3")
    assert memory.recall(parse_image_reference("registry.example/app:3")) == memory.recall(three)
    assert memory.recall(parse_image_reference("other.example/app:3")) is None
    memory.remember(pinned, parse_digest(digest_of("y")))  # nothing to resolve: not kept
    assert memory.recall(pinned) is None and len(memory) == 2
    memory.remember(parse_image_reference("registry.example/app"), parse_digest(digest_of("l")))
    assert str(memory.recall(parse_image_reference("registry.example/app:latest"))) == digest_of(
        "l")


def test_a_remembered_digest_step_is_traced_and_counted() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics, engine = Metrics(), AsyncPrefilterEngine()
    service = EvaluationService(
        policy_engine=engine, audit_log=MemoryAuditLog(), collectors=[CountingCollector()],
        digest_resolver=TableDigestResolver(), prefilter=engine, async_policy_engine=engine,
        evidence_cache=EvidenceCache(ttl_seconds=60, max_entries=64),
        tag_digest_memory=TagDigestMemory(ttl_seconds=30), observers=[metrics],
        tracer=provider.get_tracer("test"))
    handler = AdmissionHandler(service, AdmissionSettings())
    answer(handler, _review(1), webhook="mutate")
    exporter.clear()

    assert answer(handler, _review(2), webhook="mutate").allowed

    outcomes = [str((span.attributes or {}).get("gatekeeper.outcome"))
                for span in exporter.get_finished_spans()
                if span.name == "gatekeeper.evidence.digest"]
    assert outcomes == [REMEMBERED_OUTCOME] * TAGS
    assert metrics.registry.get_sample_value(
        "forge_gatekeeper_evidence_steps_total",
        {"step": "digest", "outcome": REMEMBERED_OUTCOME}) == TAGS
