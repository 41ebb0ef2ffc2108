"""Audit store adapters: the hash-chained, append-only trail of every decision."""

from gatekeeper.audit.chain import Checkpoint, CheckpointSigner
from gatekeeper.audit.factory import open_audit_log
from gatekeeper.audit.spool import DurableSpool
from gatekeeper.audit.sql import AuditSettings, SqlAuditLog
from gatekeeper.audit.verify import ChainBrokenError, VerificationReport, verify_database
from gatekeeper.storage.engine import create_database_engine

__all__ = [
    "AuditSettings",
    "ChainBrokenError",
    "Checkpoint",
    "CheckpointSigner",
    "DurableSpool",
    "SqlAuditLog",
    "VerificationReport",
    "create_database_engine",
    "open_audit_log",
    "verify_database",
]
