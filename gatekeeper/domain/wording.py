"""Counted nouns for messages people read: ``1 record``, ``2 records``."""

from __future__ import annotations

__all__ = ["counted"]


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun`` in the right number (``plural`` for irregular nouns)."""
    return f"{count} {noun if count == 1 else (plural or noun + 's')}"
