"""The per-evaluation memo (single flight) and the bounded fan-out."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from gatekeeper.domain.concurrency import EvaluationMemo, FanOut, ask_last_first
from gatekeeper.errors import UpstreamUnavailableError

CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="none")


def test_concurrent_askers_share_one_computation() -> None:
    memo = EvaluationMemo()
    started = threading.Event()
    computed: list[int] = []

    def compute() -> int:
        started.set()
        time.sleep(0.05)
        computed.append(1)
        return 42

    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(memo.once("k", compute)))
               for _ in range(4)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == [42, 42, 42, 42]
    assert computed == [1]


def test_a_failure_is_raised_again_for_the_same_evaluation() -> None:
    memo = EvaluationMemo()
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        raise UpstreamUnavailableError("registry r timed out")

    for _ in range(2):
        with pytest.raises(UpstreamUnavailableError, match="registry r timed out"):
            memo.once("k", compute)
    assert calls == [1]
    assert EvaluationMemo().once("k", lambda: 7) == 7  # the next evaluation starts afresh


def test_fan_out_runs_calls_concurrently_in_order_with_the_callers_context() -> None:
    fan_out = FanOut(4, name="test")
    CURRENT.set("request-1")
    barrier = threading.Barrier(3, timeout=5)  # only passes if the three run at once

    def call(index: int) -> str:
        barrier.wait()
        return f"{index}:{CURRENT.get()}"

    try:
        assert fan_out.run([lambda i=i: call(i) for i in range(3)]) == [  # type: ignore[misc]
            "0:request-1", "1:request-1", "2:request-1",
        ]  # fmt: skip
    finally:
        fan_out.close()


def test_fan_out_waits_for_every_call_then_raises_the_first_failure() -> None:
    fan_out = FanOut(2, name="test")
    finished: list[str] = []

    def slow() -> str:
        time.sleep(0.05)
        finished.append("slow")
        return "slow"

    def failing() -> str:
        raise UpstreamUnavailableError("registry r answered 503")

    try:
        with pytest.raises(UpstreamUnavailableError, match="answered 503"):
            fan_out.run([failing, slow])
        assert finished == ["slow"]
    finally:
        fan_out.close()


def test_a_worker_fanning_out_on_its_own_pool_runs_inline() -> None:
    fan_out = FanOut(1 + 1, name="test")

    def nested() -> list[int]:
        return fan_out.run([lambda: 1, lambda: 2, lambda: 3])

    try:  # two workers, each fanning out again: would deadlock if they queued on the pool
        assert fan_out.run([nested, nested, nested]) == [[1, 2, 3]] * 3
    finally:
        fan_out.close()


def test_ask_last_first_answers_in_order_and_raises_the_first_failure_in_order() -> None:
    asked: list[str] = []

    def ask(name: str) -> str:
        asked.append(name)
        if name in ("b", "d"):
            raise ValueError(f"{name} failed")
        return name.upper()

    assert ask_last_first(["a", "c"], ask) == ["A", "C"]
    assert asked == ["c", "a"]
    asked.clear()
    with pytest.raises(ValueError, match="b failed"):
        ask_last_first(["a", "b", "c", "d"], ask)
    assert asked == ["d", "c", "b", "a"]  # every source asked


def test_submit_runs_on_the_pool_in_the_callers_context() -> None:
    fan_out = FanOut(2, name="test")
    variable: contextvars.ContextVar[str] = contextvars.ContextVar("variable", default="none")
    variable.set("caller")
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def call() -> None:
        seen.append((variable.get(), threading.current_thread().name))
        done.set()

    try:
        fan_out.submit(call)
        assert done.wait(5)
    finally:
        fan_out.close()
    assert seen[0][0] == "caller"
    assert seen[0][1].startswith("test")
