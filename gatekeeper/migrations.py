"""Deprecated path: migrations moved to :mod:`gatekeeper.storage.migrations` (kept one release)."""

from gatekeeper.storage.migrations import Migration, apply_migrations, migration_table

__all__ = ["Migration", "apply_migrations", "migration_table"]
