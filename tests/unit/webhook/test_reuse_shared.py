"""The decision hand-over shared by the workers keeps DecisionReuse's contract across
processes: exact key, taken once, bounded, expiring; a broken file never admits anything."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from gatekeeper.domain import (
    Decision,
    EnforcementMode,
    ImageResult,
    Source,
    Ticket,
    Verdict,
    Violation,
)
from gatekeeper.domain.reference import parse_digest, parse_image_reference
from gatekeeper.webhook.reuse import AdmissionKey
from gatekeeper.webhook.reuse_shared import SharedDecisionReuse
from tests.unit.webhook.test_reuse_and_evidence_cache import Clock, decision, key

DIGEST = "sha256:" + "a" * 64


def rich_decision() -> Decision:
    reference = parse_image_reference(f"127.0.0.1:5000/acme/app@{DIGEST}")
    return Decision(
        "d-rich", datetime(2026, 1, 1, 12, 30, tzinfo=UTC), Source.ADMISSION, Verdict.WARN,
        EnforcementMode.WARN, "production", "shop", Ticket(ticket_id="TCK-1"),
        (ImageResult(reference, parse_digest(DIGEST), {"signature": {"state": "verified"}}),),
        (Violation("registry", "registry not allowed", reference.original),),
        (Violation("sbom", "no SBOM", None),), "sha256:r", caller="alice",
        latency_ms=3.5, policy_input={"images": [1, 2]}, context={"admission": {"kind": "Pod"}},
    )


def test_a_decision_remembered_by_one_process_is_taken_by_another(tmp_path: Path) -> None:
    path = tmp_path / "reuse.sqlite3"
    mutating, validating = SharedDecisionReuse(path), SharedDecisionReuse(path)
    mutating.remember(key("f1"), rich_decision())
    assert validating.take(key("f1", frozenset({"b@sha256:2"}))) is None  # other images
    assert validating.take(AdmissionKey("shop", EnforcementMode.ENFORCE, False,
                                        frozenset({"a@sha256:1"}), "f1", "other")) is None
    # every field of the answer survives; the policy input stays in the audit record only
    assert validating.take(key("f1")) == replace(rich_decision(), policy_input=None)
    assert mutating.take(key("f1")) is None  # taken once, by whichever process asks first


def test_expiry_and_bound(tmp_path: Path) -> None:
    clock = Clock()
    reuse = SharedDecisionReuse(tmp_path / "r.sqlite3", ttl_seconds=30, max_entries=3,
                                monotonic=clock)
    for index in range(5):
        reuse.remember(key(f"f{index}"), decision(f"d{index}"))
    assert len(reuse) == 3
    assert reuse.take(key("f0")) is None and reuse.take(key("f1")) is None  # evicted
    assert reuse.take(key("f2")) == decision("d2")
    clock.now += 30
    assert reuse.take(key("f3")) is None  # expired
    assert len(reuse) == 0


def test_ttl_zero_remembers_nothing(tmp_path: Path) -> None:
    reuse = SharedDecisionReuse(tmp_path / "r.sqlite3", ttl_seconds=0)
    reuse.remember(key("f1"), decision("d1"))
    assert reuse.take(key("f1")) is None


def test_a_broken_store_evaluates_afresh(tmp_path: Path) -> None:
    reuse = SharedDecisionReuse(tmp_path / "r.sqlite3")
    reuse.remember(key("f1"), decision("d1"))
    reuse.close()  # every later statement fails: nothing is taken, nothing raises
    reuse.remember(key("f1"), decision("d2"))
    assert reuse.take(key("f1")) is None


def _take_all(path: str, count: int, found: multiprocessing.Queue[str]) -> None:
    reuse = SharedDecisionReuse(Path(path))
    for _ in range(count):
        taken = reuse.take(key("same"))
        if taken is not None:
            found.put(taken.decision_id)
    found.put("done")


def test_concurrent_processes_never_take_the_same_decision(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    reuse = SharedDecisionReuse(path)
    for index in range(200):
        reuse.remember(key("same"), decision(f"d{index}"))
    context = multiprocessing.get_context("spawn")
    found: multiprocessing.Queue[str] = context.Queue()
    processes = [context.Process(target=_take_all, args=(str(path), 150, found))
                 for _ in range(2)]
    for process in processes:
        process.start()
    taken: list[str] = []
    done = 0
    while done < 2:
        item = found.get(timeout=60)
        if item == "done":
            done += 1
        else:
            taken.append(item)
    for process in processes:
        process.join(10)
    assert sorted(taken) == sorted(f"d{index}" for index in range(200))  # each exactly once
