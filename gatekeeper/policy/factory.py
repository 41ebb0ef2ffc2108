"""A replica's policy state directories, and its :class:`~gatekeeper.policy.replica.OpaReplica`
for an embedded OPA or a sidecar."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from gatekeeper.policy.exceptions import (
    DataApiExceptionPublisher,
    ExceptionFilePublisher,
    ExceptionPublisher,
)
from gatekeeper.policy.replica import OpaReplica

__all__ = ["PolicyStatePaths", "create_replica"]


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
        OpaReplica.seed_active_dir(self.active, policy_dir)
        ExceptionFilePublisher(self.exceptions).ensure()


def create_replica(
    *,
    state: PolicyStatePaths | None,
    embedded_socket: Path | None = None,
    sidecar_url: str | None = None,
    timeout: float = 5.0,
    on_revision: Callable[[str | None], None] | None = None,
) -> OpaReplica:
    """The replica of an embedded OPA (``state`` + ``embedded_socket``) or a sidecar
    (``sidecar_url``: exceptions go to its Data API; it pulls the active revision as a bundle
    from ``GET /v1/policies/bundle``); neither: nothing to feed (the CLI). ``on_revision``:
    see :class:`OpaReplica`."""
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
    return OpaReplica(
        active_dir=state.active if state is not None and sidecar_url is None else None,
        publisher=publisher,
        opa_client=opa_client,
        on_revision=on_revision,
    )
