"""A small asyncio HTTP/1.1 client for the policy engine's Data API, with keep-alive.

Why not ``httpx.AsyncClient``: profiled on the warm admission path, its per-request machinery
(anyio cancellation shields, the connection pool's bookkeeping, a failed ``import sniffio``
per request) cost more CPU than the OPA evaluation it waited for. OPA answers a POST with one
JSON document; this client sends exactly that request over a pooled connection (a unix socket
for the embedded OPA, or TCP for a sidecar) and reads exactly one response: a status line,
headers, and a body framed by ``Content-Length`` or ``Transfer-Encoding: chunked`` (what Go's
``net/http`` sends, RFC 9112 sections 6 and 7.1). Anything else is an error, never guessed at.

Bounded: response headers (64 KiB), body (``max_body`` bytes), one timeout for the whole
exchange. A pooled connection the server closed while idle is retried once on a new one (the
Data API query is idempotent). Only the event loop that created the client uses it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

__all__ = ["AsyncOpaConnectionPool", "OpaHttpError", "OpaResponse"]

_MAX_HEADER_BYTES = 64 * 1024
_DEFAULT_MAX_BODY = 64 * 1024 * 1024


class OpaHttpError(Exception):
    """The exchange failed (connection, framing, limits); the adapter turns it into a
    :class:`~gatekeeper.errors.PolicyEngineError`."""


@dataclass(frozen=True, slots=True)
class OpaResponse:
    status: int
    body: bytes


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class AsyncOpaConnectionPool:
    """POSTs to one HTTP server over kept-alive connections (at most ``max_idle`` kept)."""

    def __init__(
        self,
        *,
        unix_socket: str | None = None,
        host: str = "127.0.0.1",
        port: int = 80,
        host_header: str = "opa",
        timeout: float = 2.0,
        max_idle: int = 32,
        max_body: int = _DEFAULT_MAX_BODY,
    ) -> None:
        self._unix_socket = unix_socket
        self._host = host
        self._port = port
        self._host_header = host_header.encode("ascii")
        self._timeout = timeout
        self._max_idle = max_idle
        self._max_body = max_body
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        if self._unix_socket is not None:
            return await asyncio.open_unix_connection(self._unix_socket, limit=_MAX_HEADER_BYTES)
        return await asyncio.open_connection(self._host, self._port, limit=_MAX_HEADER_BYTES)

    async def post(self, path: str, body: bytes) -> OpaResponse:
        """POST ``body`` (JSON) to ``path``; raises :class:`OpaHttpError` or TimeoutError."""
        head = b"".join((
            b"POST ", path.encode("ascii"), b" HTTP/1.1\r\nHost: ", self._host_header,
            b"\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
            b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n\r\n",
        ))
        async with asyncio.timeout(self._timeout):
            while self._idle:
                connection = self._idle.pop()
                try:
                    return await self._exchange(connection, head, body)
                except (ConnectionError, asyncio.IncompleteReadError, _Closed):
                    continue  # closed by the server while idle: try the next, then a new one
            try:
                connection = await self._connect()
            except OSError as exc:
                raise OpaHttpError(f"cannot connect: {exc}") from exc
            try:
                return await self._exchange(connection, head, body)
            except (ConnectionError, asyncio.IncompleteReadError, _Closed) as exc:
                raise OpaHttpError(f"connection lost: {exc or type(exc).__name__}") from exc

    async def _exchange(self, connection: _Connection, head: bytes, body: bytes) -> OpaResponse:
        reader, writer = connection
        keep = False
        try:
            writer.write(head + body)
            await writer.drain()
            status, length, chunked, keep = await self._read_head(reader)
            if chunked:
                content = await self._read_chunked(reader)
            elif length is not None:
                if length > self._max_body:
                    raise OpaHttpError(f"answer of {length} bytes is over the limit")
                content = await reader.readexactly(length)
            else:
                raise OpaHttpError("answer has neither Content-Length nor chunked framing")
            return OpaResponse(status, content)
        except BaseException:
            keep = False
            raise
        finally:
            if keep and len(self._idle) < self._max_idle:
                self._idle.append(connection)
            else:
                writer.close()

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[int, int | None, bool, bool]:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise OpaHttpError("answer headers are over 64 KiB") from exc
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _Closed() from exc  # nothing read: the idle connection was closed
            raise
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise OpaHttpError(f"malformed status line {lines[0][:80]!r}")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        keep = parts[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise OpaHttpError(f"malformed header line {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise OpaHttpError("invalid Content-Length")
                length = int(value)
            elif name == b"transfer-encoding":
                if value.lower() != b"chunked":
                    raise OpaHttpError(f"unsupported Transfer-Encoding {value[:40]!r}")
                chunked = True
            elif name == b"connection":
                keep = keep and value.lower() != b"close"
        if chunked and length is not None:
            raise OpaHttpError("answer has both Content-Length and chunked framing")
        return status, length, chunked, keep

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = (await reader.readuntil(b"\r\n"))[:-2]
            size_text = size_line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise OpaHttpError(f"malformed chunk size {size_text[:20]!r}") from exc
            if size < 0:
                raise OpaHttpError("malformed chunk size")
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers: none expected, skipped up to the blank line
                return b"".join(chunks)
            total += size
            if total > self._max_body:
                raise OpaHttpError(f"answer is over the limit of {self._max_body} bytes")
            chunks.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise OpaHttpError("malformed chunk end")

    def close(self) -> None:
        """Close the idle connections (call on the loop that uses the pool)."""
        while self._idle:
            self._idle.pop()[1].close()


class _Closed(Exception):
    """An idle connection was closed by the server before answering."""
