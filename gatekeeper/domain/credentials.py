"""Registry logins of one workload (its ``imagePullSecrets``), valid for one evaluation.

The evaluation service makes them current (a context variable) while it gathers evidence for
a request that carries them; the registry client consults them before its own credentials.
They never enter a decision, a log line or a cache that outlives the evaluation: bearer tokens
obtained with them live in the object itself, which is dropped with the request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["WorkloadRegistryLogins", "current_workload_logins", "workload_logins"]


@dataclass(frozen=True, slots=True)
class WorkloadRegistryLogins:
    """``lookup(host)`` answers ``(username, password)`` or None; ``origin`` names the secrets
    they came from (names only, for messages)."""

    lookup: Callable[[str], tuple[str, str] | None] = field(repr=False)
    origin: str
    #: Bearer tokens obtained with these logins, keyed by (registry, repository): scoped to
    #: this evaluation, never shared with other workloads.
    tokens: dict[tuple[str, str], tuple[str, float]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def login_for(self, host: str) -> tuple[str, str] | None:
        return self.lookup(host.lower())


_CURRENT: ContextVar[WorkloadRegistryLogins | None] = ContextVar(
    "gatekeeper_workload_registry_logins", default=None
)


def current_workload_logins() -> WorkloadRegistryLogins | None:
    return _CURRENT.get()


@contextmanager
def workload_logins(logins: WorkloadRegistryLogins | None) -> Iterator[None]:
    """Make ``logins`` current in this thread for the ``with`` block (None: no overlay)."""
    token = _CURRENT.set(logins)
    try:
        yield
    finally:
        _CURRENT.reset(token)
