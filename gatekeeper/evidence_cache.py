"""Evidence of admitted digests, kept for a short time so that controller-made children are cheap.

When ``kubectl create deployment`` is admitted, the mutating webhook pins every image to the
digest it verified; the ReplicaSet and then the Pods the controllers create from it carry those
pinned digests. Gathering the same evidence again for each of them (signatures, attestations,
SBOM referrers: several registry round trips per image) proves nothing new. This cache keeps the
evidence sections of a digest after an *admitted* admission decision, so that those children are
decided by the policy (Rego still decides, and each child is still recorded) without a registry
round trip.

Bounded and short-lived on purpose: at most ``max_entries`` digests (least recently used out
first), each for ``ttl_seconds`` (a revoked signature or a new scan finding is seen again after
that). The key includes the environment and namespace (collectors may read both). Only
admission requests read it, and only an admitted admission decision whose evidence was
gathered without a failure writes it; a pipeline evaluation always gathers afresh.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["EvidenceCache", "EvidenceKey"]


@dataclass(frozen=True, slots=True)
class EvidenceKey:
    """What the evidence of one image depends on."""

    name: str  # registry/repository, normalised
    digest: str
    environment: str
    namespace: str | None


class EvidenceCache:
    """LRU map ``EvidenceKey -> evidence sections`` with a time to live; thread-safe."""

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds <= 0 or max_entries < 1:
            raise ValueError("evidence cache needs a positive ttl and at least one entry")
        self._ttl = ttl_seconds
        self._max = max_entries
        self._monotonic = monotonic
        #: Kept as JSON text: every ``get`` hands out a fresh copy (nothing shared between
        #: decisions) at the cost of one C-speed parse, not a Python deep copy.
        self._entries: OrderedDict[EvidenceKey, tuple[float, str]] = OrderedDict()
        #: ``(name, environment, namespace)`` -> when its latest admitted digest expires: the
        #: repository was admitted there lately (see :meth:`admitted_lately`).
        self._repositories: dict[tuple[str, str, str | None], float] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: EvidenceKey) -> dict[str, Any] | None:
        """A copy of the cached sections, or None (unknown or expired)."""
        now = self._monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= now:
                if entry is not None:
                    del self._entries[key]
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            text = entry[1]
        try:
            evidence: dict[str, Any] = orjson.loads(text)
        except orjson.JSONDecodeError:  # NaN written by json.dumps: orjson refuses it
            evidence = json.loads(text)
        return evidence

    def admitted_lately(self, name: str, environment: str, namespace: str | None) -> bool:
        """Whether some digest of repository ``name`` was admitted in this environment and
        namespace within the time to live (its network-free rules passed then)."""
        with self._lock:
            expires = self._repositories.get((name, environment, namespace))
            return expires is not None and expires > self._monotonic()

    def contains(self, key: EvidenceKey) -> bool:
        """Whether :meth:`get` would answer (without counting a hit or a miss)."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry[0] > self._monotonic()

    def put(self, key: EvidenceKey, evidence: Mapping[str, Any]) -> None:
        expires = self._monotonic() + self._ttl
        text = json.dumps(evidence, separators=(",", ":"))
        with self._lock:
            self._entries[key] = (expires, text)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            self._repositories[(key.name, key.environment, key.namespace)] = expires
            if len(self._repositories) > self._max:
                now = self._monotonic()
                live = sorted(((v, k) for k, v in self._repositories.items() if v > now),
                              reverse=True)[: self._max]
                self._repositories = {k: v for v, k in live}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
