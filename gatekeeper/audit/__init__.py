"""Audit store adapters."""

from gatekeeper.audit.sql import SqlAuditLog, create_database_engine

__all__ = ["SqlAuditLog", "create_database_engine"]
