"""A lean HTTP/1.1 path to one registry host: kept-alive ``http.client`` connections.

Why: a registry round trip through ``httpx.Client`` costs about 0.7 ms of CPU in this
process (URL merging, request and response models, the auth and redirect flows, h11), under
the GIL; a cold evaluation makes seven, several at once. Over ``http.client`` it is about
0.3 ms. The session uses this path only where it behaves exactly as the ``httpx`` client
would: no proxy in the environment, no tracing instrumentation of the client, no injected
transport; TLS with the very ``SSLContext`` httpx builds for the same ``verify`` setting (built
at the first https connection, so a plain-HTTP host never loads a CA bundle). A
redirect is handed back to the caller, which follows it with ``httpx`` (cross-origin rules,
further hops), and so are the cases this module does not handle.

Failures are raised as the ``httpx`` exceptions the session already maps (``ConnectError``,
``ConnectTimeout``, ``ReadTimeout``, ``ReadError``, ``RemoteProtocolError``...), so messages
and metrics do not depend on the path taken.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from gatekeeper.registry._http import read_within_limit

__all__ = ["LeanHost", "LeanAnswer"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ERROR_BODY_BYTES = 4096
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class LeanAnswer:
    status: int
    headers: httpx.Headers
    content: bytes
    #: ``Location`` of a redirect, resolved against the request URL (the caller follows it).
    redirect: str | None = None


class LeanHost:
    """Kept-alive connections to one ``scheme://host:port``; thread-safe. The caller bounds
    the requests in flight (the session's host slots), so at most that many connections open;
    idle ones are kept for reuse."""

    def __init__(
        self, scheme: str, host: str, port: int | None,
        tls: Callable[[], ssl.SSLContext] | None, user_agent: str,
    ) -> None:  # fmt: skip
        """``tls`` gives the context of an https host, called at each new connection (the
        session builds it once, on the first one)."""
        self._https = scheme == "https"
        self._host = host
        self._port = port or (443 if self._https else 80)
        self._tls = tls
        self._user_agent = user_agent
        self._origin = f"{scheme}://{host}" + (f":{port}" if port else "")
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def send(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        max_bytes: int,
        timeout: httpx.Timeout,
        registry: str,
        what: str,
    ) -> LeanAnswer:
        """One request; a kept-alive connection that the server closed meanwhile is replaced
        once (GET and HEAD are idempotent)."""
        request_headers = {"User-Agent": self._user_agent, "Accept-Encoding": "identity"}
        request_headers.update(headers)
        connection, reused = self._connection(timeout)
        try:
            return self._exchange(connection, method, path, request_headers, max_bytes,
                                  timeout, registry, what)  # fmt: skip
        except _Stale:
            if not reused:
                raise httpx.RemoteProtocolError("server disconnected without answering") from None
        connection, _ = self._connection(timeout, fresh=True)
        try:
            return self._exchange(connection, method, path, request_headers, max_bytes,
                                  timeout, registry, what)  # fmt: skip
        except _Stale:
            raise httpx.RemoteProtocolError("server disconnected without answering") from None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # -- internals ---------------------------------------------------------------------------

    def _connection(
        self, timeout: httpx.Timeout, *, fresh: bool = False
    ) -> tuple[http.client.HTTPConnection, bool]:
        while not fresh:
            with self._lock:
                if not self._idle:
                    break
                idle = self._idle.pop()
            if _still_open(idle):
                return idle, True
            idle.close()  # closed by the server while idle (its keep-alive timeout)
        connection: http.client.HTTPConnection
        if self._tls is not None:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout.connect, context=self._tls()
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout.connect)
        try:
            connection.connect()
        except TimeoutError as exc:
            connection.close()
            raise httpx.ConnectTimeout(f"connecting to {self._origin} timed out") from exc
        except OSError as exc:  # refused, unreachable, TLS handshake or certificate refused
            connection.close()
            raise httpx.ConnectError(f"connecting to {self._origin}: {exc}") from exc
        if connection.sock is not None:
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, False

    def _exchange(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        headers: dict[str, str],
        max_bytes: int,
        timeout: httpx.Timeout,
        registry: str,
        what: str,
    ) -> LeanAnswer:
        keep = False
        try:
            if connection.sock is not None:
                # One socket timeout for the write and the read: the session gives both the
                # time left in the caller's budget (a syscall saved per round trip).
                connection.sock.settimeout(timeout.read)
            try:
                connection.request(method, path, headers=headers)
            except TimeoutError as exc:
                raise httpx.WriteTimeout(f"sending to {self._origin} timed out") from exc
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise _Stale from exc
            except OSError as exc:
                raise httpx.WriteError(f"sending to {self._origin}: {exc}") from exc
            try:
                response = connection.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, ssl.SSLEOFError,
                    ssl.SSLZeroReturnError) as exc:  # fmt: skip
                raise _Stale from exc
            answer, keep = self._read(response, method, path, max_bytes, registry, what)
            return answer
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"reading from {self._origin} timed out") from exc
        except http.client.HTTPException as exc:
            raise httpx.RemoteProtocolError(f"{self._origin}: {exc!r}") from exc
        except OSError as exc:
            raise httpx.ReadError(f"reading from {self._origin}: {exc}") from exc
        finally:
            if keep:
                with self._lock:
                    self._idle.append(connection)
            else:
                connection.close()

    def _read(
        self,
        response: http.client.HTTPResponse,
        method: str,
        path: str,
        max_bytes: int,
        registry: str,
        what: str,
    ) -> tuple[LeanAnswer, bool]:
        """The answer, and whether the connection can be reused (the body was read whole)."""
        status = response.status
        headers = httpx.Headers(response.getheaders())
        if status in _REDIRECTS and headers.get("Location"):
            location = str(httpx.URL(self._origin + path).join(headers["Location"]))
            return LeanAnswer(status, headers, b"", location), self._drained(response)
        if method == "HEAD":
            response.read()
            return LeanAnswer(status, headers, b""), not response.will_close
        if status != 200:
            # Error bodies are read only for their first bytes (never needed beyond logs).
            body = response.read(_ERROR_BODY_BYTES + 1)
            return LeanAnswer(status, headers, body), self._drained(response)
        chunks = iter(lambda: response.read(_CHUNK), b"")
        content = read_within_limit(
            chunks, headers.get("Content-Length"), max_bytes, registry, what
        )
        return LeanAnswer(status, headers, content), not response.will_close

    @staticmethod
    def _drained(response: http.client.HTTPResponse) -> bool:
        """Read what is left of a short body, so the connection can serve the next request."""
        if response.will_close:
            return False
        left = response.read(_ERROR_BODY_BYTES + 1)
        return len(left) <= _ERROR_BODY_BYTES and response.isclosed()


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection has nothing to read; if its socket is readable, the
    server closed it (or sent something unasked): not reusable."""
    if connection.sock is None:
        return False
    poller = select.poll()
    poller.register(connection.sock, select.POLLIN)
    return not poller.poll(0)


class _Stale(Exception):
    """A kept-alive connection the server had closed: no byte of an answer was read."""
