"""The body of a document upload (``POST /v1/sboms``, ``POST /v1/vex``): its media type checked
against the accepted ones (415) and its size against the limit (413), read without buffering
past the limit."""

from __future__ import annotations

from collections.abc import Collection

from fastapi import Request
from fastapi.responses import Response

from gatekeeper.api.models import error_response

__all__ = ["read_limited", "read_upload"]


async def read_limited(request: Request, max_bytes: int) -> bytes | None:
    """The body, or None as soon as it grows past ``max_bytes`` (never buffered further)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(
    request: Request, *, media_types: Collection[str], max_bytes: int, what: str
) -> bytes | Response:
    """The uploaded document, or the 415 / 413 answer naming ``what`` was sent wrong."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in media_types:
        return error_response(
            415,
            "unsupported_media_type",
            f"send the {what} as one of: {', '.join(sorted(media_types))}",
        )
    content = await read_limited(request, max_bytes)
    if content is None:
        return error_response(413, "too_large", f"{what} larger than {max_bytes} bytes")
    return content
