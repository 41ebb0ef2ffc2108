"""Where in-process commands get their use cases: the policy lifecycle and the audit trail,
built by the adapters' own factories from the settings (the commands never build a store)."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatekeeper.config import Settings
    from gatekeeper.policy.lifecycle import PolicyLifecycle
    from gatekeeper.usecases.audit_trail import AuditTrail

__all__ = ["actor_name", "open_audit", "open_lifecycle", "opa_binary", "write_signing_key"]


def opa_binary(settings: Settings) -> str:
    from gatekeeper.wiring import find_opa_binary

    return find_opa_binary(settings)


def open_lifecycle(settings: Settings) -> PolicyLifecycle:
    """The policy lifecycle on the configured store, migrated (no OPA of its own to feed:
    running gatekeepers pick changes up on their next sync)."""
    from gatekeeper.policy.factory import create_policy_lifecycle
    from gatekeeper.storage import create_database_engine

    lifecycle = create_policy_lifecycle(
        database=create_database_engine(settings.database_url),
        opa_binary=opa_binary(settings),
        state=None,
    )
    lifecycle.store.migrate()
    return lifecycle


def open_audit(settings: Settings, *, signing: bool) -> AuditTrail:
    """The audit trail use case on the configured store (opened and migrated on first use);
    with the checkpoint signing key when ``signing`` (export, checkpoint, prune)."""
    from gatekeeper.wiring import open_audit_trail

    return open_audit_trail(settings, signing=signing)


def write_signing_key(file: Path) -> str:
    """``gatekeeper audit keygen``: a new checkpoint signing key at ``file``; its key id."""
    from gatekeeper.wiring import write_audit_signing_key

    return write_audit_signing_key(file)


def actor_name(actor: str | None) -> str:
    """The recorded actor: ``--actor`` or ``cli:<login>``."""
    return actor or f"cli:{getpass.getuser()}"
