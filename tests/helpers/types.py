"""Types of the shared fixtures in ``tests/conftest.py``, for annotating the tests that take them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gatekeeper.config import Settings

__all__ = ["AssetPath", "MakeSettings"]


class MakeSettings(Protocol):
    """The ``make_settings`` fixture: test defaults (SQLite, local OPA, auth off) plus overrides."""

    def __call__(self, **overrides: object) -> Settings: ...


AssetPath = Callable[[str], Path]
"""The ``asset`` fixture: the path of a file under ``tests/assets`` (asserted to exist)."""
