"""Deprecated path: the engine moved to :mod:`gatekeeper.storage.engine` (kept for one release)."""

from gatekeeper.storage.engine import create_database_engine, describe_url

__all__ = ["create_database_engine", "describe_url"]
