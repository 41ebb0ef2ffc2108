"""One evaluation per admission: the validating webhook reuses the mutating webhook's decision.

The API server calls the mutating webhook, applies its JSONPatch, then calls the validating
webhook with the *same* request ``uid``. Evaluating twice would record two decisions for one
admission and answer the same warnings twice (once naming the tag, once the pinned digest). So
the mutating webhook remembers, per uid, the decision it recorded and the images the object
carries once its patch is applied (each evaluated tag pinned to the digest that was verified);
the validating webhook answers from that decision when its review is the same admission:
same uid, namespace, mode and dry-run flag, and exactly those images. Anything else (a later
mutating webhook changed an image, another replica evaluated the mutation, the entry expired)
is evaluated afresh: reuse can only save work, never admit something unevaluated.

Bounded (``max_entries``, least recently stored out first) and short-lived (``ttl_seconds``;
the API server calls the validating webhook right after the mutating one).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gatekeeper.domain import Decision, EnforcementMode

__all__ = ["AdmissionKey", "DecisionReuse"]


@dataclass(frozen=True, slots=True)
class AdmissionKey:
    """What must match for a validating review to be the mutating webhook's admission."""

    uid: str
    namespace: str
    mode: EnforcementMode
    dry_run: bool
    #: The images evaluated for this admission as the validating webhook will see them.
    images: frozenset[str]
    #: sha256 of the object with its images blanked (``workload_fingerprint``): another
    #: mutating webhook that changed the workload makes the validating review evaluate.
    fingerprint: str = ""


class DecisionReuse:
    """``uid -> (key, decision)`` for the validating webhook; thread-safe."""

    def __init__(
        self,
        *,
        ttl_seconds: float = 60.0,
        max_entries: int = 4096,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._monotonic = monotonic
        self._entries: OrderedDict[str, tuple[float, AdmissionKey, Decision]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, key: AdmissionKey, decision: Decision) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._entries[key.uid] = (self._monotonic() + self._ttl, key, decision)
            self._entries.move_to_end(key.uid)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def find(self, key: AdmissionKey) -> Decision | None:
        """The decision remembered for exactly ``key``, or None. Kept until it expires: a
        reinvoked mutating webhook (``reinvocationPolicy: IfNeeded``) finds it too."""
        with self._lock:
            entry = self._entries.get(key.uid)
        if entry is None:
            return None
        expires, remembered, decision = entry
        if expires <= self._monotonic() or remembered != key:
            return None
        return decision

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
