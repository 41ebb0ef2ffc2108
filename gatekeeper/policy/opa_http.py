"""A small asyncio HTTP/1.1 client for the policy engine's Data API, with keep-alive.

Why not ``httpx.AsyncClient``: profiled on the warm admission path, its per-request machinery
(anyio cancellation shields, the connection pool's bookkeeping, a failed ``import sniffio``
per request) cost more CPU than the OPA evaluation it waited for. OPA answers a POST with one
JSON document; this client sends exactly that request over a pooled connection (a unix socket
for the embedded OPA, or TCP for a sidecar) and reads exactly one response, framed and
bounded by :class:`~gatekeeper.policy.http_framing.ResponseParser` (shared with the blocking
client, :mod:`gatekeeper.policy.opa_blocking`); one timeout for the whole exchange. A pooled
connection the server closed while idle is retried once on a new one (the Data API query is
idempotent). Only the event loop that created the client uses it.
"""

from __future__ import annotations

import asyncio

from gatekeeper.policy.http_framing import (
    ConnectionClosed,
    OpaHttpError,
    OpaResponse,
    PoolSettings,
    ResponseParser,
    request_bytes,
)

__all__ = ["AsyncOpaConnectionPool", "OpaHttpError", "OpaResponse"]

_READ_SIZE = 64 * 1024

_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class AsyncOpaConnectionPool(PoolSettings[_Connection]):
    """POSTs to one HTTP server over kept-alive connections (at most ``max_idle`` kept)."""

    default_max_idle = 32

    async def _connect(self) -> _Connection:
        if self._unix_socket is not None:
            connection = await asyncio.open_unix_connection(self._unix_socket)
        else:
            connection = await asyncio.open_connection(self._host, self._port)
        self.connections_opened += 1
        return connection

    async def post(self, path: str, body: bytes) -> OpaResponse:
        """POST ``body`` (JSON) to ``path``; raises :class:`OpaHttpError` or TimeoutError."""
        request = request_bytes(path, self._host_header, body)
        async with asyncio.timeout(self._timeout):
            while self._idle:
                connection = self._idle.pop()
                try:
                    return await self._exchange(connection, request)
                except (ConnectionError, ConnectionClosed):
                    continue  # closed by the server while idle: try the next, then a new one
            try:
                connection = await self._connect()
            except OSError as exc:
                raise OpaHttpError(f"cannot connect: {exc}") from exc
            try:
                return await self._exchange(connection, request)
            except (ConnectionError, ConnectionClosed) as exc:
                raise OpaHttpError(f"connection lost: {exc or type(exc).__name__}") from exc

    async def _exchange(self, connection: _Connection, request: bytes) -> OpaResponse:
        reader, writer = connection
        parser = ResponseParser(self._max_body)
        try:
            writer.write(request)
            await writer.drain()
            while (response := parser.feed(await reader.read(_READ_SIZE))) is None:
                pass
            return response
        except BaseException:
            parser.keep_alive = False
            raise
        finally:
            if parser.keep_alive and len(self._idle) < self._max_idle:
                self._idle.append(connection)
            else:
                writer.close()

    def close(self) -> None:
        """Close the idle connections (call on the loop that uses the pool)."""
        while self._idle:
            self._idle.pop()[1].close()
