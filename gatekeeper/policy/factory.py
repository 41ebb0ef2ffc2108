"""Assembly of the policy lifecycle: a replica's state directories and the lifecycle for an
embedded OPA or a sidecar."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy.engine import Engine

from gatekeeper.policy.checks import OpaCandidateChecker
from gatekeeper.policy.exceptions import (
    DataApiExceptionPublisher,
    ExceptionFilePublisher,
    ExceptionPublisher,
)
from gatekeeper.policy.lifecycle import PolicyLifecycle

__all__ = ["PolicyStatePaths", "create_policy_lifecycle"]


class PolicyStatePaths:
    """Where one replica keeps what its embedded OPA serves, under ``state_dir``.

    ``active/`` holds the active revision's policy files (the embedded OPA's policy directory);
    ``exceptions/`` holds ``data.json`` with ``data.gatekeeper.exceptions`` (an extra data path
    of the embedded OPA, outside the revision hash).
    """

    def __init__(self, state_dir: Path) -> None:
        self.active = state_dir / "active"
        self.exceptions = state_dir / "exceptions"

    def prepare(self, policy_dir: Path) -> None:
        """Before the embedded OPA is built: something to serve, and an exceptions document."""
        PolicyLifecycle.seed_active_dir(self.active, policy_dir)
        ExceptionFilePublisher(self.exceptions).ensure()


def create_policy_lifecycle(
    *,
    database: Engine,
    opa_binary: str,
    state: PolicyStatePaths | None,
    embedded_socket: Path | None = None,
    sidecar_url: str | None = None,
    timeout: float = 5.0,
    clock: Callable[[], datetime] | None = None,
    tag_resolver: Callable[[str], str] | None = None,
    on_revision: Callable[[str | None], None] | None = None,
) -> PolicyLifecycle:
    """The lifecycle for an embedded OPA (``state`` + ``embedded_socket``) or a sidecar
    (``sidecar_url``: exceptions go to its Data API; it pulls the active revision as a bundle
    from ``GET /v1/policies/bundle``). ``on_revision``: see :class:`PolicyLifecycle`."""
    from gatekeeper.policy.replay import SqlDecisionHistory
    from gatekeeper.policy.store import SqlPolicyStore

    publisher: ExceptionPublisher | None = None
    opa_client: httpx.Client | None = None
    if sidecar_url is not None:
        publisher = DataApiExceptionPublisher(
            httpx.Client(base_url=sidecar_url, timeout=timeout), describe=f"OPA at {sidecar_url}"
        )
    elif state is not None:
        publisher = ExceptionFilePublisher(state.exceptions)
        if embedded_socket is not None:
            opa_client = httpx.Client(
                transport=httpx.HTTPTransport(uds=str(embedded_socket)),
                base_url="http://opa", timeout=timeout,
            )
    return PolicyLifecycle(
        store=SqlPolicyStore(database, clock=clock),
        checker=OpaCandidateChecker(opa_binary),
        opa_binary=opa_binary,
        active_dir=state.active if state is not None and sidecar_url is None else None,
        publisher=publisher,
        history=SqlDecisionHistory(database),
        opa_client=opa_client,
        clock=clock,
        tag_resolver=tag_resolver,
        on_revision=on_revision,
    )
