"""A blocking, thread-safe HTTP/1.1 client for the policy engine's queries, with keep-alive.

The evaluation service (``POST /v1/evaluations``, pipelines, the CLI) asks OPA twice per
evaluation from worker threads: the prefilter and the decision. Why not ``httpx.Client``:
profiled on a cold evaluation (``benchmarks/profile_cold.py``), most of the client's CPU per
query was httpx's request and connection-pool machinery, not the exchange. This client sends
one ``POST`` over a kept-alive socket (OPA's unix socket for the embedded engine, or TCP for
a sidecar) and reads one answer with the framing and limits of
:class:`~gatekeeper.policy.http_framing.ResponseParser`, the one the asyncio client of the
admission path uses.

- One timeout for the whole exchange (connect, send, every read): a server that hangs is a
  :class:`TimeoutError` after ``timeout`` seconds, however it drips its answer.
- Thread-safe: a connection serves one thread at a time; idle ones wait in a small pool (at
  most ``max_idle``; more are closed once answered).
- A pooled connection found closed before any byte of the answer (the server closed it while
  it was idle: an OPA restart, an idle timeout) costs one retry on a new connection (the query
  is idempotent); the other idle connections, as old or older, are dropped with it.
- A failed connect raises :class:`OpaHttpError` with the operating system's text
  (``[Errno 111] Connection refused``), the text the httpx client gave.
"""

from __future__ import annotations

import socket
import time

from gatekeeper.policy.http_framing import (
    ConnectionClosed,
    OpaHttpError,
    OpaResponse,
    PoolSettings,
    ResponseParser,
    request_bytes,
)

__all__ = ["OpaConnectionPool"]

_READ_SIZE = 64 * 1024


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


class OpaConnectionPool(PoolSettings[socket.socket]):
    """POSTs to one HTTP server over kept-alive connections, from any thread."""

    def post(self, path: str, body: bytes) -> OpaResponse:
        """POST ``body`` (JSON) to ``path``; raises :class:`OpaHttpError` or TimeoutError."""
        request = request_bytes(path, self._host_header, body)
        deadline = time.monotonic() + self._timeout
        with self._lock:
            pooled = self._idle.pop() if self._idle else None
        try:
            if pooled is not None:
                try:
                    return self._exchange(pooled, request, deadline)
                except ConnectionClosed as exc:
                    if exc.answered:
                        raise
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close()  # the idle ones left are as stale: the retry opens a new one
            return self._exchange(self._connect(deadline), request, deadline)
        except TimeoutError:
            raise
        except OSError as exc:
            raise OpaHttpError(str(exc)) from exc

    def _connect(self, deadline: float) -> socket.socket:
        if self._unix_socket is None:
            connection = socket.create_connection(
                (self._host, self._port), timeout=_remaining(deadline))
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                connection.settimeout(_remaining(deadline))
                connection.connect(self._unix_socket)
            except BaseException:
                connection.close()
                raise
        with self._lock:
            self.connections_opened += 1
        return connection

    def _exchange(self, connection: socket.socket, request: bytes, deadline: float) -> OpaResponse:
        parser = ResponseParser(self._max_body)
        try:
            connection.settimeout(_remaining(deadline))
            connection.sendall(request)
            while True:
                connection.settimeout(_remaining(deadline))
                response = parser.feed(connection.recv(_READ_SIZE))
                if response is not None:
                    return response
        except BaseException:
            parser.keep_alive = False
            raise
        finally:
            if not (parser.keep_alive and self._keep(connection)):
                connection.close()

    def _keep(self, connection: socket.socket) -> bool:
        with self._lock:
            if len(self._idle) >= self._max_idle:
                return False
            self._idle.append(connection)
            return True

    def close(self) -> None:
        """Close the idle connections (those in use close when their exchange ends)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
