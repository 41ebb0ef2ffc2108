"""The verification result cache: :class:`gatekeeper.domain.ttl_cache.TtlCache` (re-exported)."""

from __future__ import annotations

from gatekeeper.domain.ttl_cache import TtlCache

__all__ = ["TtlCache"]
