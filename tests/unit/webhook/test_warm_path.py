"""The warm admission path: on the event loop, one policy query, the audit write awaited.

Warm: every image pinned and its evidence in the cache of admitted digests (the Pods a
controller makes from an admitted Deployment, the validating review of a pinned object). Such a
review is decided on the server's event loop (no admission worker thread), with one policy
query and no prefilter; the answer comes after the decision is in the audit trail.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from gatekeeper.domain import Decision, PolicyResult
from gatekeeper.evidence_cache import EvidenceCache
from gatekeeper.service import EvaluationService
from gatekeeper.webhook.handler import AdmissionHandler
from gatekeeper.webhook.scope import AdmissionSettings
from tests.unit.webhook.fakes import (
    CountingCollector,
    MemoryAuditLog,
    PrefilterPolicyEngine,
    TableDigestResolver,
)
from tests.unit.webhook.test_cluster_semantics import (
    WEB,
    answer,
    apply_patch,
    as_update,
    load,
)


class AsyncPrefilterEngine(PrefilterPolicyEngine):
    """The fake policy, also asked on the event loop; notes which thread asked."""

    def __init__(self, offline: Mapping[str, str] | None = None, **tables: Any) -> None:
        super().__init__(offline or {}, **tables)
        self.threads: list[str] = []

    def evaluate(
        self, policy_input: Mapping[str, Any], evidence: Mapping[str, Any] | None = None
    ) -> PolicyResult:
        self.threads.append(threading.current_thread().name)
        return super().evaluate(policy_input)

    async def evaluate_async(
        self, policy_input: Mapping[str, Any], evidence: Mapping[str, Any] | None = None
    ) -> PolicyResult:
        self.threads.append(f"loop:{threading.current_thread().name}")
        await asyncio.sleep(0)
        return super().evaluate(policy_input)


class ThreadNotingAudit(MemoryAuditLog):
    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def record(self, decision: Decision) -> None:
        self.threads.append(threading.current_thread().name)
        super().record(decision)


def _service(engine: AsyncPrefilterEngine, audit: MemoryAuditLog, collector: CountingCollector,
             resolver: TableDigestResolver, *, on_loop: bool = True) -> EvaluationService:
    return EvaluationService(
        policy_engine=engine, audit_log=audit, collectors=[collector], digest_resolver=resolver,
        prefilter=engine, async_policy_engine=engine if on_loop else None,
        evidence_cache=EvidenceCache(ttl_seconds=60, max_entries=64))


def _pod_of(deployment: dict[str, Any], mutated: Any) -> dict[str, Any]:
    pod = load("pod-create")
    template = apply_patch(deployment["request"]["object"], mutated)["spec"]["template"]
    pod["request"]["object"]["spec"] = template["spec"]
    return pod


def test_a_controller_made_pod_is_decided_on_the_event_loop_with_one_policy_query() -> None:
    engine, audit = AsyncPrefilterEngine(), ThreadNotingAudit()
    collector, resolver = CountingCollector(), TableDigestResolver()
    handler = AdmissionHandler(_service(engine, audit, collector, resolver), AdmissionSettings())
    deployment = load("deployment-create")
    mutated = answer(handler, deployment, webhook="mutate")  # tags: the worker-thread path
    assert mutated.allowed
    assert engine.threads == ["gatekeeper-admission_0"] and len(engine.prefilter_inputs) == 1
    engine.threads.clear()

    child = answer(handler, _pod_of(deployment, mutated), webhook="mutate")

    assert child.allowed and child.patch == ()
    assert engine.threads == ["loop:MainThread"]  # one query, asked on the event loop
    assert len(engine.prefilter_inputs) == 1  # no prefilter: nothing was to be fetched
    assert len(collector.calls) == 4 and resolver.calls == 3  # no registry round trip
    # recorded (durably, before the answer) on the audit writer's own thread
    assert audit.threads[-1].startswith("gatekeeper-audit-write")
    assert len(audit.records) == 2
    assert child.audit_annotations["decision-id"] == audit.records[1].decision_id
    assert audit.records[1].images[1].evidence == {
        "signatures": {"status": "verified", "digest": audit.records[0].images[1].evidence[
            "signatures"]["digest"]}}


def test_a_warm_deny_reads_like_a_cold_one() -> None:
    deployment = load("deployment-create")
    engine, audit = AsyncPrefilterEngine(), ThreadNotingAudit()
    handler = AdmissionHandler(
        _service(engine, audit, CountingCollector(), TableDigestResolver()),
        AdmissionSettings())
    mutated = answer(handler, deployment, webhook="mutate")
    pod = _pod_of(deployment, mutated)
    pinned_web = next(op["value"] for op in mutated.patch if op["value"].startswith(WEB))
    engine.deny[pinned_web] = "revoked since"

    child = answer(handler, pod, webhook="validate")

    assert engine.threads[-1] == "loop:MainThread"
    assert not child.allowed and child.code == 403
    assert child.message == (f"spec.containers[0].image ({pinned_web}): revoked since "
                             f"(decision {audit.records[-1].decision_id})")
    assert audit.records[-1].verdict.value == "deny"


def test_an_update_that_changes_no_image_is_recorded_without_a_worker_thread() -> None:
    engine, audit = AsyncPrefilterEngine(), ThreadNotingAudit()
    handler = AdmissionHandler(
        _service(engine, audit, CountingCollector(), TableDigestResolver()),
        AdmissionSettings())
    update = as_update(load("pod-create"),
                       lambda obj: obj["metadata"].setdefault("labels", {}).update(tier="x"))

    response = answer(handler, update, webhook="validate")

    assert response.allowed and engine.threads == []
    assert audit.threads == ["gatekeeper-audit-write_0"]
    assert response.audit_annotations["decision-id"] == audit.records[0].decision_id


@pytest.mark.parametrize("on_loop", [True, False])
def test_a_tag_of_a_repository_admitted_lately_skips_the_prefilter(on_loop: bool) -> None:
    engine, audit = AsyncPrefilterEngine(), ThreadNotingAudit()
    collector, resolver = CountingCollector(), TableDigestResolver()
    handler = AdmissionHandler(_service(engine, audit, collector, resolver, on_loop=on_loop),
                               AdmissionSettings())
    deployment = load("deployment-create")
    first = answer(handler, deployment, webhook="mutate")
    assert first.allowed and len(engine.prefilter_inputs) == 1 and resolver.calls == 3

    again = load("deployment-create")
    again["request"]["uid"] = "00000000-0000-4000-8000-00000000beef"
    second = answer(handler, again, webhook="mutate")

    assert second.allowed and second.patch == first.patch  # the tags pinned again
    assert len(engine.prefilter_inputs) == 1  # every repository was admitted here lately
    assert resolver.calls == 6 and len(collector.calls) == 4  # tags resolved, evidence cached
    # with an engine asked on the event loop, only the resolutions leave it
    assert engine.threads[-1].startswith("loop:" if on_loop else "gatekeeper-admission")


@pytest.mark.parametrize("on_loop", [True, False])
def test_a_deny_after_a_skipped_prefilter_still_puts_the_decisive_reason_first(
        on_loop: bool) -> None:
    hub = "busybox:1.36"
    engine, audit = AsyncPrefilterEngine(), ThreadNotingAudit()
    handler = AdmissionHandler(
        _service(engine, audit, CountingCollector(), TableDigestResolver(), on_loop=on_loop),
        AdmissionSettings())
    assert answer(handler, load("deployment-create"), webhook="mutate").allowed
    # the allow-list changes after busybox was admitted: a network-free reason, and another
    engine.offline[hub] = 'registry "docker.io" is not allowed'
    engine.deny[hub] = ["an SBOM is required", 'registry "docker.io" is not allowed']

    again = load("deployment-create")
    again["request"]["uid"] = "00000000-0000-4000-8000-00000000beef"
    response = answer(handler, again, webhook="mutate")

    assert len(engine.prefilter_inputs) == 2  # asked after the deny, for the order only
    assert response.message == (
        f"spec.template.spec.initContainers[0].image ({hub}): registry \"docker.io\" is not "
        f"allowed; spec.template.spec.initContainers[0].image ({hub}): an SBOM is required "
        f"(decision {audit.records[-1].decision_id})")


class SlowOnceAudit(ThreadNotingAudit):
    """The first write hangs (a locked database), the others are quick."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def record(self, decision: Decision) -> None:
        if not self.records:
            time.sleep(self.seconds)
        super().record(decision)


def test_a_warm_evaluation_past_the_budget_is_answered_and_still_recorded() -> None:
    audit = SlowOnceAudit(0.8)
    engine = AsyncPrefilterEngine()
    service = _service(engine, audit, CountingCollector(), TableDigestResolver())
    handler = AdmissionHandler(service, AdmissionSettings(budget_seconds=0.3,
                                                          webhook_timeout_seconds=1.0))
    update = as_update(load("pod-create"),
                       lambda obj: obj["metadata"].setdefault("labels", {}).update(tier="x"))
    started = time.monotonic()

    response = answer(handler, update, webhook="validate")

    assert time.monotonic() - started < 1.6
    assert (response.allowed, response.code) == (False, 504)
    assert response.message.startswith(
        "the record of an update that changed no image did not finish (audit store) within "
        "the admission budget of 0.3s (decision ")
    service.close()  # the late write finishes: both answers are in the trail
    assert sorted(d.verdict.value for d in audit.records) == ["allow", "deny"]
