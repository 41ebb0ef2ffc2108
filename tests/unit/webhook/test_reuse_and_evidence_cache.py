"""The two caches of the admission path are bounded and expire."""

from __future__ import annotations

from datetime import UTC, datetime

from gatekeeper.domain import (
    Decision,
    EnforcementMode,
    Source,
    Ticket,
    Verdict,
)
from gatekeeper.evidence_cache import EvidenceCache, EvidenceKey
from gatekeeper.webhook.reuse import AdmissionKey, DecisionReuse


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def decision(decision_id: str) -> Decision:
    return Decision(decision_id, datetime(2026, 1, 1, tzinfo=UTC), Source.ADMISSION,
                    Verdict.ALLOW, EnforcementMode.ENFORCE, "production", "shop", Ticket(),
                    (), (), (), "sha256:r")


def key(facts: str, images: frozenset[str] = frozenset({"a@sha256:1"})) -> AdmissionKey:
    return AdmissionKey("shop", EnforcementMode.ENFORCE, False, images, facts)


def test_reuse_needs_the_same_evaluation_input_and_expires() -> None:
    clock = Clock()
    reuse = DecisionReuse(ttl_seconds=30, max_entries=8, monotonic=clock)
    for _ in range(5):
        reuse.remember(key("f1"), decision("d1"))
    assert reuse.take(key("f1", frozenset({"b@sha256:2"}))) is None  # other images
    assert reuse.take(key("f2")) is None  # other facts (kind, user, ticket ...)
    assert reuse.take(AdmissionKey("shop", EnforcementMode.WARN, False,
                                   frozenset({"a@sha256:1"}), "f1")) is None  # other mode
    assert reuse.take(AdmissionKey("other", EnforcementMode.ENFORCE, False,
                                   frozenset({"a@sha256:1"}), "f1")) is None  # other namespace
    assert reuse.take(AdmissionKey("shop", EnforcementMode.ENFORCE, True,
                                   frozenset({"a@sha256:1"}), "f1")) is None  # a dry run
    assert reuse.take(AdmissionKey("shop", EnforcementMode.ENFORCE, False,
                                   frozenset({"a@sha256:1"}), "f1",
                                   "other-workload")) is None  # another workload
    assert reuse.take(key("f1")) == decision("d1")
    clock.now += 30
    assert reuse.take(key("f1")) is None


def test_each_remembered_decision_answers_one_validating_review() -> None:
    reuse = DecisionReuse(ttl_seconds=30, max_entries=8)
    reuse.remember(key("f1"), decision("d1"))
    reuse.remember(key("f1"), decision("d2"))
    assert [reuse.take(key("f1")), reuse.take(key("f1")), reuse.take(key("f1"))] == [
        decision("d1"), decision("d2"), None]
    assert len(reuse) == 0


def test_reuse_is_bounded() -> None:
    reuse = DecisionReuse(ttl_seconds=30, max_entries=2)
    for index in range(3):
        reuse.remember(key(f"f{index}"), decision(f"d{index}"))
    reuse.remember(key("f2"), decision("d3"))
    assert len(reuse) == 2 and reuse.take(key("f0")) is None and reuse.take(key("f1")) is None
    assert [reuse.take(key("f2")), reuse.take(key("f2"))] == [decision("d2"), decision("d3")]


def test_reuse_off_remembers_nothing() -> None:
    reuse = DecisionReuse(ttl_seconds=0, max_entries=2)
    reuse.remember(key("f1"), decision("d1"))
    assert reuse.take(key("f1")) is None


def test_evidence_cache_is_bounded_expires_and_hands_out_copies() -> None:
    clock = Clock()
    cache = EvidenceCache(ttl_seconds=10, max_entries=2, monotonic=clock)
    first = EvidenceKey("ghcr.io/acme/api", "sha256:1", "production", "shop")
    cache.put(first, {"signatures": {"status": "verified"}})
    copy = cache.get(first)
    assert copy == {"signatures": {"status": "verified"}}
    assert copy is not None
    copy["signatures"]["status"] = "tampered"
    assert cache.get(first) == {"signatures": {"status": "verified"}}
    # another namespace or environment is another key
    assert cache.get(EvidenceKey("ghcr.io/acme/api", "sha256:1", "production", "other")) is None
    cache.put(EvidenceKey("b", "sha256:2", "production", "shop"), {})
    cache.put(EvidenceKey("c", "sha256:3", "production", "shop"), {})
    assert len(cache) == 2 and cache.get(first) is None  # least recently used out
    clock.now += 10
    assert cache.get(EvidenceKey("c", "sha256:3", "production", "shop")) is None


def test_workload_fingerprint_ignores_images_only() -> None:
    from gatekeeper.domain.workload import workload_fingerprint

    pod = {"kind": "Pod", "spec": {"containers": [
        {"name": "a", "image": "api:1", "resources": {"limits": {"memory": "1Gi"}}}]}}
    pinned = {"kind": "Pod", "spec": {"containers": [
        {"name": "a", "image": "api:1@sha256:" + "ab" * 32,
         "resources": {"limits": {"memory": "1Gi"}}}]}}
    unlimited = {"kind": "Pod", "spec": {"containers": [{"name": "a", "image": "api:1"}]}}
    assert workload_fingerprint(pod, "Pod") == workload_fingerprint(pinned, "Pod")
    assert workload_fingerprint(pod, "Pod") != workload_fingerprint(unlimited, "Pod")
