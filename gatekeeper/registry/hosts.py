"""Per-host state of the registry client: request slots (a concurrency bound) and capabilities."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from gatekeeper.errors import UpstreamUnavailableError

__all__ = ["HostCapabilities", "HostSlots"]


class HostSlots:
    """At most ``limit`` requests in flight per registry host, across all evaluations."""

    def __init__(self, limit: int, monotonic: Callable[[], float]) -> None:
        self._limit = limit
        self._monotonic = monotonic
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    @contextmanager
    def slot(
        self, host: str, *, deadline: float | None, default_wait: float, what: str
    ) -> Iterator[None]:
        """Hold one of ``host``'s slots; wait for one until ``deadline`` (``default_wait``
        seconds without one), else raise :class:`UpstreamUnavailableError`.

        Only a host whose slots all stayed busy is reported here, as the registry timing out
        (its requests in flight did not finish in time); a free slot is taken even when the
        deadline has passed, and the caller reports the spent budget itself."""
        with self._lock:
            slots = self._slots.get(host)
            if slots is None:
                slots = threading.BoundedSemaphore(self._limit)
                self._slots[host] = slots
        wait = default_wait if deadline is None else deadline - self._monotonic()
        acquired = slots.acquire(timeout=wait) if wait > 0 else slots.acquire(blocking=False)
        if not acquired:
            raise UpstreamUnavailableError(
                f"registry {host} timed out {what}: its {self._limit} request slots "
                f"(max_concurrent_requests) stayed busy",
                context={"registry": host, "step": what, "slots": self._limit},
            )
        try:
            yield
        finally:
            slots.release()


class HostCapabilities:
    """What each host was seen to support (the OCI referrers API), remembered for ``ttl``
    seconds: a registry without the API then costs one tag lookup per listing, not a 404
    and the tag. A TTL of 0 remembers nothing."""

    def __init__(self, ttl: float, monotonic: Callable[[], float]) -> None:
        self._ttl = ttl
        self._monotonic = monotonic
        self._referrers_api: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()

    def has_referrers_api(self, host: str) -> bool | None:
        """``True``/``False`` while remembered; ``None`` when not known (ask the API)."""
        with self._lock:
            known = self._referrers_api.get(host)
        if known is None or known[1] <= self._monotonic():
            return None
        return known[0]

    def remember_referrers_api(self, host: str, present: bool) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._referrers_api[host] = (present, self._monotonic() + self._ttl)
