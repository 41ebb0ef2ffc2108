"""Concurrency for tests: the same call from several threads at once (replicas starting together)."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["failures_of_concurrent_calls"]


def failures_of_concurrent_calls(call: Callable[[], object], *, count: int) -> list[BaseException]:
    """Run ``call`` in ``count`` threads started together; what they raised (``[]``: none)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - collected for the caller's assertion
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
