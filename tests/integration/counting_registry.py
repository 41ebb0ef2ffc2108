"""A counting reverse proxy in front of the loopback docker-registry (imported explicitly).

The gatekeeper talks to the proxy as if it were the registry; every request is forwarded to the
real registry over one keep-alive connection per proxy thread and recorded as
``(method, path, status)``, so a test can count the registry round trips of one evaluation.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["CountingRegistry", "counting_registry"]

#: Hop-by-hop headers (RFC 9110 7.6.1) are not forwarded.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
     "upgrade"}
)  # fmt: skip


@dataclass
class CountingRegistry:
    """The proxy's address and what it forwarded."""

    host: str
    upstream: str
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mark(self) -> int:
        """The number of requests seen so far (pass it to :meth:`since`)."""
        with self.lock:
            return len(self.requests)

    def since(self, mark: int) -> list[tuple[str, str, int]]:
        with self.lock:
            return list(self.requests[mark:])


def _handler(registry: CountingRegistry) -> type[BaseHTTPRequestHandler]:
    local = threading.local()

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every keep-alive answer.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
            pass

        def _upstream(self) -> http.client.HTTPConnection:
            connection = getattr(local, "connection", None)
            if connection is None:
                connection = http.client.HTTPConnection(registry.upstream, timeout=30)
                local.connection = connection
            return connection

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
            connection = self._upstream()
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                content = answer.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                local.connection = None
                raise
            with registry.lock:
                registry.requests.append((self.command, self.path.split("?", 1)[0], answer.status))
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() in _HOP_BY_HOP or key.lower() == "content-length":
                    continue
                if key.lower() == "location":
                    value = value.replace(registry.upstream, registry.host)
                self.send_header(key, value)
            declared = answer.getheader("Content-Length")
            self.send_header(
                "Content-Length",
                declared if self.command == "HEAD" and declared else str(len(content)),
            )
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815

    return Forward


@contextmanager
def counting_registry(upstream: str) -> Iterator[CountingRegistry]:
    """A proxy on a free loopback port forwarding to ``upstream`` (``127.0.0.1:PORT``)."""
    registry = CountingRegistry(host="", upstream=upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(registry))
    server.daemon_threads = True
    registry.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="counting-registry", daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
