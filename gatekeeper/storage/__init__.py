"""Shared storage: the SQLAlchemy engine and the versioned migrations every SQL adapter uses."""

from gatekeeper.storage.engine import create_database_engine, describe_url
from gatekeeper.storage.migrations import Migration, apply_migrations, migration_table

__all__ = [
    "Migration",
    "apply_migrations",
    "create_database_engine",
    "describe_url",
    "migration_table",
]
