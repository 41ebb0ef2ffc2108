"""A short memory of tag -> digest resolutions, so an admission does not ask the registry again.

Every admission of an image named by tag (``app:1.4``) turns the tag into the digest it names
now: a registry round trip (HEAD of the manifest) on each Pod a controller creates. This
memory keeps each successful resolution for ``ttl_seconds`` (default 30 s; 0 turns it off, and
every admission asks the registry), for at most ``max_entries`` tags (least recently used out
first).

Why this is safe for admission: the mutating webhook pins the digest it resolved into the object
(``app:1.4@sha256:...``), and that digest is what was verified; the Pod runs exactly it, however
the tag moves afterwards. A tag re-pushed within the TTL is seen after the TTL has run out (the
admission then evaluates and pins the new digest); until then the previous digest, verified
as such, is admitted and pinned. Only successful resolutions are remembered: a tag that was
missing, refused (401/403) or unreachable is asked again next time.

Peers differ: Kyverno caches image verification results per reference (60 min by default);
sigstore's policy-controller resolves on every admission. The default here is short.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gatekeeper.domain import Digest, ImageReference
from gatekeeper.domain.ttl_cache import TtlCache

__all__ = ["REMEMBERED_OUTCOME", "TagDigestMemory"]

#: The outcome of a digest step answered from this memory (trace span attribute, metric label).
REMEMBERED_OUTCOME = "resolved (remembered)"

_Key = tuple[str, str, str]


class TagDigestMemory:
    """``registry/repository:tag -> digest`` for ``ttl_seconds``, bounded; thread-safe."""

    def __init__(
        self,
        *,
        ttl_seconds: float = 30.0,
        max_entries: int = 4096,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds < 0 or max_entries < 1:
            raise ValueError("tag digest memory needs ttl_seconds >= 0 and max_entries >= 1")
        self._ttl = ttl_seconds
        self._cache: TtlCache[Digest] = TtlCache(max_entries=max_entries, monotonic=monotonic)

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    @staticmethod
    def _key(reference: ImageReference) -> _Key | None:
        if reference.digest is not None:
            return None  # pinned: nothing to resolve
        # no tag means ``latest``, as the registry client resolves it
        return (reference.registry, reference.repository, reference.tag or "latest")

    def recall(self, reference: ImageReference) -> Digest | None:
        """The digest remembered for ``reference``'s tag, unless it has expired."""
        key = self._key(reference)
        if key is None or self._ttl <= 0:
            return None
        return self._cache.get(key)

    def remember(self, reference: ImageReference, digest: Digest) -> None:
        """Keep a *successful* resolution of ``reference``'s tag for the TTL."""
        key = self._key(reference)
        if key is not None:
            self._cache.put(key, digest, self._ttl)  # a TTL of 0 stores nothing

    def __len__(self) -> int:
        return len(self._cache)
