"""Where in-process commands get their use cases: the policy lifecycle (with its exceptions)
and the policy authoring checks from :mod:`gatekeeper.wiring`, the audit trail from the audit
adapter's factory (the commands never build a store)."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatekeeper.audit import SqlAuditLog
    from gatekeeper.config import Settings
    from gatekeeper.usecases.policy_lifecycle import PolicyAuthoring, PolicyLifecycle

__all__ = ["actor_name", "open_audit", "open_authoring", "open_lifecycle"]


def open_lifecycle(settings: Settings) -> PolicyLifecycle:
    """The policy lifecycle on the configured store, migrated (no OPA of its own to feed:
    running gatekeepers pick changes up on their next sync); ``.exceptions`` for waivers."""
    from gatekeeper.wiring import open_policy_services

    return open_policy_services(settings)


def open_authoring(settings: Settings) -> PolicyAuthoring:
    """Candidate loading, activation checks and policy tests with the configured ``opa``."""
    from gatekeeper.wiring import open_policy_authoring

    return open_policy_authoring(settings)


def open_audit(settings: Settings, *, signing: bool) -> SqlAuditLog:
    """The audit trail on the configured store, migrated; with the checkpoint signing key when
    ``signing`` (export, checkpoint, prune), else for reading."""
    from gatekeeper.audit import open_audit_log

    audit = open_audit_log(
        settings.database_url,
        signing_key_file=settings.audit_signing_key_file if signing else None,
        checkpoint_every=settings.audit_checkpoint_every,
        read_only=not signing,
        generate_embedded_key=signing,
    )
    audit.migrate()
    return audit


def actor_name(actor: str | None) -> str:
    """The recorded actor: ``--actor`` or ``cli:<login>``."""
    return actor or f"cli:{getpass.getuser()}"
