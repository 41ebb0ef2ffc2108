"""What both doors (``gatekeeper.api`` and ``gatekeeper.webhook``) check of an ASGI request
before any handler sees it, without a framework: control characters in the path or query, and
the body read whole under a size limit and one deadline. Each door turns the outcome into its
own answer (its error document, its metrics)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["BodyTooLarge", "control_character", "read_body"]

_Message = MutableMapping[str, Any]


class BodyTooLarge(Exception):
    """The streamed body grew past the limit; nothing more was read."""


def control_character(text: bytes) -> int | None:
    """The first control byte (C0 or DEL) in ``text``, if any."""
    for byte in text:
        if byte < 0x20 or byte == 0x7F:
            return byte
    return None


async def read_body(
    receive: Callable[[], Awaitable[_Message]], *, limit: int, read_timeout: float | None
) -> bytes | _Message:
    """The whole request body, or the message that ended it early (a disconnect).

    Raises :class:`BodyTooLarge` as soon as more than ``limit`` bytes arrived, and
    ``TimeoutError`` when the body is not in within ``read_timeout`` seconds (one deadline for
    the whole body, so a slow client cannot hold a worker and its buffer)."""
    chunks: list[bytes] = []
    received = 0
    async with asyncio.timeout(read_timeout):
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
