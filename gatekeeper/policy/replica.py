"""``OpaReplica``: how one replica's OPA gets the active revision and the exceptions.

The embedded OPA watches the **active directory** (the active revision's policy files, written
by :func:`~gatekeeper.policy.candidates.replace_tree`) and an exceptions data directory; an OPA
sidecar pulls the revision as a bundle and takes the exceptions through its Data API. With an
OPA client, :meth:`OpaReplica.publish` can wait until the engine serves what was published.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gatekeeper.domain.policy_lifecycle import PolicyCandidate
from gatekeeper.errors import PolicyEngineError
from gatekeeper.policy.bundle import PolicyFiles, as_policy_files
from gatekeeper.policy.candidates import replace_tree
from gatekeeper.policy.exceptions import ExceptionPublisher
from gatekeeper.policy.sidecar import opa_serves

__all__ = ["OpaReplica"]

_LOAD_TIMEOUT = 10.0


class OpaReplica:
    """The :class:`~gatekeeper.domain.ports.policy.PolicyReplica` port for an embedded OPA
    (``active_dir`` + a file publisher + a client on its socket) or a sidecar (a Data API
    publisher only)."""

    def __init__(
        self,
        *,
        active_dir: Path | None,
        publisher: ExceptionPublisher | None,
        opa_client: httpx.Client | None = None,
        on_revision: Callable[[str | None], None] | None = None,
    ) -> None:
        """``on_revision``: told ``None`` before :meth:`publish` rewrites the active directory
        (the engine then hashes the directory, as it would without a lifecycle), and the
        revision id once it has materialised it and, when it waits, seen the engine serve
        it: between two changes the engine knows its revision without a directory walk."""
        self._on_revision = on_revision
        self._active_dir = active_dir
        self._publisher = publisher
        self._opa_client = opa_client

    @staticmethod
    def seed_active_dir(active_dir: Path, policy_dir: Path) -> None:
        """Before the embedded OPA exists: give it the shipped policies if the dir is empty
        (OPA needs a directory with Rego to start; the lifecycle then syncs from the store)."""
        if active_dir.is_dir() and any(active_dir.rglob("*.rego")):
            return
        PolicyFiles.from_directory(policy_dir).write_policies(active_dir)

    def publish(
        self, revision: PolicyCandidate | None, exceptions: list[dict[str, Any]], *, wait: bool
    ) -> None:
        if revision is not None and self._active_dir is not None:
            if self._on_revision is not None:
                self._on_revision(None)  # changing: OPA reloads on its own time
            replace_tree(self._active_dir, revision)
        if self._publisher is not None:
            self._publisher.publish(exceptions)
        if wait and revision is not None and self._opa_client is not None:
            self._wait_loaded(as_policy_files(revision), exceptions)
        if revision is not None and self._active_dir is not None and self._on_revision:
            self._on_revision(as_policy_files(revision).revision_id)

    def _wait_loaded(self, files: PolicyFiles, document: list[dict[str, Any]]) -> None:
        assert self._opa_client is not None
        deadline = time.monotonic() + _LOAD_TIMEOUT
        while time.monotonic() < deadline:
            if opa_serves(self._opa_client, files, document):
                return
            time.sleep(0.05)
        raise PolicyEngineError(
            f"the policy engine did not load revision {files.revision_id} "
            f"within {_LOAD_TIMEOUT:.0f}s"
        )

    def close(self) -> None:
        if self._opa_client is not None:
            self._opa_client.close()
