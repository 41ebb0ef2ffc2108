"""Where in-process commands get their use cases: the policy lifecycle (with its exceptions),
the policy authoring checks and the audit trail, all from :mod:`gatekeeper.wiring` (the
commands never build a store)."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatekeeper.config import Settings
    from gatekeeper.usecases.audit_trail import AuditTrail
    from gatekeeper.usecases.policy_lifecycle import PolicyAuthoring, PolicyLifecycle

__all__ = ["actor_name", "open_audit", "open_authoring", "open_lifecycle", "write_signing_key"]


def open_lifecycle(settings: Settings) -> PolicyLifecycle:
    """The policy lifecycle on the configured store, migrated (no OPA of its own to feed:
    running gatekeepers pick changes up on their next sync); ``.exceptions`` for waivers."""
    from gatekeeper.wiring import open_policy_services

    return open_policy_services(settings)


def open_authoring(settings: Settings) -> PolicyAuthoring:
    """Candidate loading, activation checks and policy tests with the configured ``opa``."""
    from gatekeeper.wiring import open_policy_authoring

    return open_policy_authoring(settings)


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
