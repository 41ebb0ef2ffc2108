"""One evaluation per admission: the validating webhook reuses the mutating webhook's decision.

The API server calls the mutating webhook, applies its JSONPatch, then calls the validating
webhook. It gives every call (every round trip) a uid of its own, so the uid cannot tell that
two reviews are the same admission; and between the two calls it completes the object (a
``generateName`` becomes a name; uid, timestamps and status are set). So the mutating webhook
remembers its decision under everything the evaluation depended on, with the images the object
carries once its patch is applied (each evaluated tag pinned to the digest that was verified):
namespace, mode, dry-run flag, and the request facts the policy is given (operation, kind,
sub-resource, name or ``generateName``, user, ticket, the images of ``oldObject``). The
validating webhook takes a remembered decision only when all of these are equal: an evaluation
of its own review would have had exactly that input. Anything else (a later mutating webhook
changed an image or an annotation, another replica evaluated the mutation, the entry expired) is
evaluated afresh: reuse can only save work, never admit something unevaluated.

Each remembered decision answers one validating review (taken, not shared): when a controller
creates identical objects (the replicas of a ReplicaSet), each mutating call records one
decision and each validating call takes one of them, so N objects leave N records.

Bounded (``max_entries``, least recently stored out first) and short-lived (``ttl_seconds``;
the API server calls the validating webhook right after the mutating one).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gatekeeper.domain import Decision, EnforcementMode

__all__ = ["AdmissionKey", "DecisionReuse", "RememberedDecisions"]


@dataclass(frozen=True, slots=True)
class AdmissionKey:
    """What must match for a validating review to be decided by the mutating webhook's decision."""

    namespace: str
    mode: EnforcementMode
    dry_run: bool
    #: The images evaluated for this admission as the validating webhook will see them.
    images: frozenset[str]
    #: Every other fact of the evaluation input (canonical JSON; see ``Prepared.reuse_facts``).
    facts: str
    #: sha256 of the object with its images blanked (``workload_fingerprint``): another
    #: mutating webhook that changed the workload makes the validating review evaluate.
    fingerprint: str = ""


class RememberedDecisions(Protocol):
    """Where the mutating webhook leaves its decisions for the validating one: this process
    (:class:`DecisionReuse`) or every worker of the node
    (:class:`~gatekeeper.webhook.reuse_shared.SharedDecisionReuse`)."""

    def remember(self, key: AdmissionKey, decision: Decision) -> None: ...

    def take(self, key: AdmissionKey) -> Decision | None: ...


class DecisionReuse:
    """``key -> decisions`` the mutating webhook made, each taken once; thread-safe."""

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
        self._sequence = 0
        #: sequence -> (expiry, decision), oldest first; ``_by_key`` holds each key's sequences.
        self._entries: OrderedDict[int, tuple[float, AdmissionKey, Decision]] = OrderedDict()
        self._by_key: dict[AdmissionKey, deque[int]] = {}
        self._lock = threading.Lock()

    def remember(self, key: AdmissionKey, decision: Decision) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._sequence += 1
            self._entries[self._sequence] = (self._monotonic() + self._ttl, key, decision)
            self._by_key.setdefault(key, deque()).append(self._sequence)
            while len(self._entries) > self._max:
                _, (_, evicted, _) = self._entries.popitem(last=False)
                self._forget(evicted)

    def _forget(self, key: AdmissionKey) -> None:
        """Drop ``key``'s oldest sequence (the one just evicted: sequences only grow)."""
        sequences = self._by_key[key]
        sequences.popleft()
        if not sequences:
            del self._by_key[key]

    def take(self, key: AdmissionKey) -> Decision | None:
        """The oldest unexpired decision remembered for exactly ``key`` (removed), or None."""
        now = self._monotonic()
        with self._lock:
            sequences = self._by_key.get(key)
            found: Decision | None = None
            while sequences and found is None:
                expires, _, decision = self._entries.pop(sequences.popleft())
                if expires > now:
                    found = decision
            if sequences is not None and not sequences:
                del self._by_key[key]
            return found

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
