"""Runs the fetches of one cosign discovery, each the moment what it needs has arrived.

A task answers the tasks its result makes possible (a manifest: its blobs); the flow runs the
first of them in the same thread (no hop) and hands the others to the caller's
:class:`~gatekeeper.domain.concurrency.FanOut` pool. Used by :mod:`gatekeeper.verify.discovery`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from functools import partial

from gatekeeper.domain.concurrency import FanOut

__all__ = ["Flow", "Task"]

#: A unit of discovery work: its rank (which failure is reported first) and the call, which
#: answers the work its result makes possible.
Task = tuple[tuple[int, int], Callable[[], "list[Task]"]]


class Flow:
    """Runs the tasks of one discovery and what they start, until none is left.

    A task that starts others runs the first of them itself (no thread hop) and hands the rest
    to ``fan_out``'s pool (without a pool, the caller runs them one after the other). The
    caller runs the first task and waits. After a failure nothing new starts; once every task
    has ended, the failure of the lowest rank is raised (the lookups before the blobs, each
    round in its order), as a round-by-round lookup would."""

    def __init__(self, fan_out: FanOut | None) -> None:
        self._fan_out = fan_out
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._open = 0  # tasks started or queued, not ended
        self._queue: deque[Task] = deque()  # without a pool: tasks for the caller
        self._failures: list[tuple[tuple[int, int], BaseException]] = []

    def run(self, tasks: list[Task]) -> None:
        with self._lock:
            self._open += len(tasks)
        self._hand_over(tasks[1:])
        self._work(tasks[0])
        while True:
            with self._lock:
                if self._queue:
                    task = self._queue.popleft()
                elif self._open == 0:
                    break
                else:
                    self._idle.wait()
                    continue
            self._work(task)
        if self._failures:
            raise min(self._failures, key=lambda failure: failure[0])[1]

    def _hand_over(self, tasks: list[Task]) -> None:
        for task in tasks:
            if self._fan_out is None:
                with self._lock:
                    self._queue.append(task)
                continue
            try:
                self._fan_out.submit(partial(self._work, task))
            except BaseException as exc:  # a pool that was shut down: the task never runs
                with self._lock:
                    self._failures.append((task[0], exc))
                    self._open -= 1
                    if self._open == 0:
                        self._idle.notify_all()

    def _work(self, task: Task) -> None:
        while True:
            rank, call = task
            follow: list[Task] = []
            try:
                if not self._failures:
                    follow = call()
            except BaseException as exc:  # raised by ``run`` once every task has ended
                with self._lock:
                    self._failures.append((rank, exc))
            with self._lock:
                self._open += len(follow) - 1
                if not follow:
                    if self._open == 0:
                        self._idle.notify_all()
                    return
            self._hand_over(follow[1:])
            task = follow[0]
