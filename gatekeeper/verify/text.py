"""Shortening messages for people: at a word boundary, never in the middle of a word."""

from __future__ import annotations

__all__ = ["MESSAGE_LIMIT", "first_line", "shorten"]

#: Long enough for an expectation and a finding with long identities and issuers.
MESSAGE_LIMIT = 2000


def shorten(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` if it fits, else its words up to ``limit`` characters followed by `` …``.

    A single word longer than the limit (a base64 blob) is kept whole rather than split.
    """
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit - 1)
    if cut <= 0:
        end = text.find(" ")
        return text if end == -1 else text[:end] + " …"
    return text[:cut].rstrip(" ,;:") + " …"


def first_line(exc: BaseException, limit: int = MESSAGE_LIMIT) -> str:
    """The first line of an exception's text, shortened; its type name when it has none."""
    text = str(exc).strip()
    return shorten(text.splitlines()[0], limit) if text else type(exc).__name__
