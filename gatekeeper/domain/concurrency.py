"""Per-evaluation memo (single flight) and a bounded fan-out of blocking calls over threads.

Collectors, the registry client and the stores are synchronous (httpx.Client, boto3,
SQLAlchemy), so concurrency is a bounded thread pool rather than asyncio: a call that waits on
the network releases the GIL, and nothing has to be rewritten as a coroutine. Two rules keep
the pools deadlock-free:

* a pool's worker never waits on its own pool: :meth:`FanOut.run` called from one of its
  workers runs the calls inline, one after the other;
* a memo waiter waits on a computation that is *running* in another thread (single flight),
  never on a queued task.

Each task runs in a copy of the caller's :mod:`contextvars` context, so a workload's own
registry logins and the current trace span follow the work into the pool.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

if TYPE_CHECKING:  # imported when a pool is first needed: the CLI starts without it
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["EvaluationMemo", "FanOut", "ask_last_first"]

T = TypeVar("T")
S = TypeVar("S")


class _Outcome(Generic[T]):
    """A value or an exception, set once; readers wait for it."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    def settle(self, call: Callable[[], T]) -> None:
        try:
            self._value = call()
        except BaseException as exc:  # re-raised by every reader
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> T:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return cast(T, self._value)


class EvaluationMemo:
    """What one evaluation already computed, by key; thread-safe, single flight.

    Unlike the TTL caches, it does not depend on any setting: it lives as long as the
    evaluation's :class:`~gatekeeper.domain.ports.EvidenceContext`, so a cache TTL of 0 still
    means one registry lookup per image per evaluation. A failure is remembered too (the same
    evaluation sees the same answer; the next evaluation starts afresh).
    """

    __slots__ = ("_entries", "_lock")

    def __init__(self) -> None:
        self._entries: dict[Hashable, _Outcome[Any]] = {}
        self._lock = threading.Lock()

    def once(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()`` the first time ``key`` is asked for; every other caller (concurrent or
        later) gets its result, or its exception raised again."""
        with self._lock:
            outcome = self._entries.get(key)
            owner = outcome is None
            if outcome is None:
                outcome = _Outcome()
                self._entries[key] = outcome
        if owner:
            outcome.settle(compute)
        return cast(T, outcome.result())

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries


class FanOut:
    """Runs independent blocking calls concurrently on at most ``max_workers`` threads."""

    def __init__(self, max_workers: int, *, name: str) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max_workers = max_workers
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def run(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """The results of ``calls`` in their order. Every call has ended when this returns; the
        first exception (in call order) is then raised. The first call runs in the caller's
        thread, the others on the pool (inline when the caller is one of its workers)."""
        if len(calls) <= 1 or self._max_workers == 1 or getattr(self._local, "worker", False):
            return [call() for call in calls]
        pool = self._executor()
        outcomes: list[_Outcome[T]] = [_Outcome() for _ in calls]
        for outcome, call in zip(outcomes[1:], calls[1:], strict=True):
            pool.submit(self._in_worker, contextvars.copy_context(), outcome, call)
        outcomes[0].settle(calls[0])
        results: list[T] = []
        failure: BaseException | None = None
        for outcome in outcomes:
            try:
                results.append(outcome.result())
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return results

    def submit(self, call: Callable[[], None]) -> None:
        """Start ``call`` on the pool (in a copy of the caller's context) and return at once.
        ``call`` reports its own outcome; it must never wait on another call of this pool
        (it may start more). Used to start fetches the moment their input arrives."""
        context = contextvars.copy_context()
        self._executor().submit(self._in_worker, context, _Outcome(), call)

    def _in_worker(
        self, context: contextvars.Context, outcome: _Outcome[T], call: Callable[[], T]
    ) -> None:
        self._local.worker = True
        context.run(outcome.settle, call)

    def _executor(self) -> ThreadPoolExecutor:
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix=self._name)
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


def ask_last_first(sources: Sequence[S], ask: Callable[[S], T]) -> list[T]:
    """``ask(source)`` for each source, answers in the sources' order, asked from the last.

    The evidence collectors list the sources that wait on the registry (the image's cosign
    discovery, its referrers) first and the database's last: asked last first, the database
    lookups run while the registry answers instead of after it. Every source is asked; the
    failure of the first failing source in the sources' order is raised, as asking them in
    order would raise it."""
    answers: list[T | None] = [None] * len(sources)
    failures: dict[int, Exception] = {}
    for index in reversed(range(len(sources))):
        try:
            answers[index] = ask(sources[index])
        except Exception as exc:  # re-raised below, by the sources' order
            failures[index] = exc
    if failures:
        raise failures[min(failures)]
    return cast("list[T]", answers)
