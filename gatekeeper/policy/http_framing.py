"""The framing of one HTTP/1.1 exchange with the policy engine's Data API, without I/O.

Both OPA clients of the gatekeeper use it: the asyncio pool of the admission path
(:mod:`gatekeeper.policy.opa_http`) and the blocking pool of the evaluation service and the CLI
(:mod:`gatekeeper.policy.opa_blocking`). Each sends :func:`request_bytes` and feeds what it
receives to a :class:`ResponseParser` until it returns the answer; the socket work is theirs.

OPA answers a POST with one JSON document: a status line, headers, and a body framed by
``Content-Length`` or ``Transfer-Encoding: chunked`` (what Go's ``net/http`` sends, RFC 9112
sections 6 and 7.1). Anything else is an error, never guessed at. Bounded: response headers
(64 KiB), body (``max_body`` bytes), chunk-size and trailer lines (4 KiB).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "DEFAULT_MAX_BODY",
    "ConnectionClosed",
    "OpaHttpError",
    "OpaResponse",
    "PoolSettings",
    "ResponseParser",
    "request_bytes",
]

MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_BODY = 64 * 1024 * 1024
_MAX_LINE = 4096
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")


class OpaHttpError(Exception):
    """The exchange failed (connection, framing, limits); the adapter turns it into a
    :class:`~gatekeeper.errors.PolicyEngineError`."""


class ConnectionClosed(OpaHttpError):
    """The server closed the connection before the answer was complete. ``answered``: some of
    the answer had arrived (else a pooled connection closed while idle: worth one retry)."""

    def __init__(self, answered: bool) -> None:
        super().__init__("the server closed the connection in the middle of its answer" if answered
                         else "Server disconnected without sending a response.")
        self.answered = answered


@dataclass(frozen=True, slots=True)
class OpaResponse:
    status: int
    body: bytes


_Connection = TypeVar("_Connection")


class PoolSettings(Generic[_Connection]):
    """Where both clients connect (``unix_socket``, else TCP ``host``:``port``), the ``Host``
    header they send, the exchange's ``timeout``, the idle connections they keep (at most
    ``max_idle``; None: the client's default) and the largest answer (``max_body`` bytes)."""

    default_max_idle = 8

    def __init__(
        self,
        *,
        unix_socket: str | None = None,
        host: str = "127.0.0.1",
        port: int = 80,
        host_header: str = "opa",
        timeout: float = 2.0,
        max_idle: int | None = None,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self._unix_socket = unix_socket
        self._host = host
        self._port = port
        self._host_header = host_header.encode("ascii")
        self._timeout = timeout
        self._max_idle = self.default_max_idle if max_idle is None else max_idle
        self._max_body = max_body
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()  # the blocking client's threads share ``_idle``
        #: Connections opened so far (a reused one is not counted again).
        self.connections_opened = 0


def request_bytes(path: str, host_header: bytes, body: bytes) -> bytes:
    """A ``POST`` of a JSON ``body`` to ``path``, head and body in one buffer (one write)."""
    return b"".join((
        b"POST ", path.encode("ascii"), b" HTTP/1.1\r\nHost: ", host_header,
        b"\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
        b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n\r\n", body,
    ))


def _parse_head(raw: bytes) -> tuple[int, int | None, bool, bool]:
    """Status, Content-Length, chunked, keep-alive of a response head (without its blank line)."""
    lines = raw.split(b"\r\n")
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
    if not chunked and length is None:
        raise OpaHttpError("answer has neither Content-Length nor chunked framing")
    return status, length, chunked, keep


_HEAD, _BODY, _SIZE, _DATA, _TRAILER = range(5)


class ResponseParser:
    """One response, from the bytes received so far. :meth:`feed` returns the answer once it
    is complete (None until then); :attr:`keep_alive` then says whether the connection may
    serve another request."""

    __slots__ = ("_buffer", "_chunks", "_left", "_max_body", "_state", "_status", "_total",
                 "keep_alive", "received")

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self._buffer = bytearray()
        self._max_body = max_body
        self._state = _HEAD
        self._status = 0
        self._left = 0  # Content-Length, the size of the chunk being read, or head searched
        self._total = 0
        self._chunks: list[bytes] = []
        self.keep_alive = False
        self.received = False

    def feed(self, data: bytes) -> OpaResponse | None:
        """Take the next bytes read (``b""``: the server closed the connection)."""
        if not data:
            raise ConnectionClosed(self.received)
        self.received = True
        buffer = self._buffer
        buffer += data
        if self._state == _HEAD:
            end = buffer.find(b"\r\n\r\n", self._left, MAX_HEADER_BYTES)
            if end < 0:
                self._left = max(0, len(buffer) - 3)  # searched up to here (head dripped in)
                if len(buffer) >= MAX_HEADER_BYTES:
                    raise OpaHttpError("answer headers are over 64 KiB")
                return None
            self._status, length, chunked, self.keep_alive = _parse_head(bytes(buffer[:end]))
            del buffer[:end + 4]
            if not chunked:
                assert length is not None
                if length > self._max_body:
                    raise OpaHttpError(f"answer of {length} bytes is over the limit")
                self._left = length
                self._state = _BODY
            else:
                self._state = _SIZE
        if self._state == _BODY:
            if len(buffer) < self._left:
                return None
            if len(buffer) > self._left:
                self.keep_alive = False  # more than was announced: never reuse this stream
            return OpaResponse(self._status, bytes(buffer[:self._left]))
        return self._feed_chunked(buffer)

    def _feed_chunked(self, buffer: bytearray) -> OpaResponse | None:
        position = 0
        while True:
            if self._state == _DATA:
                end = position + self._left
                if len(buffer) < end + 2:
                    break
                if buffer[end:end + 2] != b"\r\n":
                    raise OpaHttpError("malformed chunk end")
                self._chunks.append(bytes(buffer[position:end]))
                position = end + 2
                self._state = _SIZE
                continue
            eol = buffer.find(b"\r\n", position, position + _MAX_LINE)
            if eol < 0:
                if len(buffer) - position >= _MAX_LINE:
                    raise OpaHttpError("chunk-size or trailer line is over 4 KiB")
                break
            line = bytes(buffer[position:eol])
            position = eol + 2
            if self._state == _TRAILER:
                if line:
                    continue  # trailers: none expected, skipped up to the blank line
                if len(buffer) > position:
                    self.keep_alive = False
                return OpaResponse(self._status, b"".join(self._chunks))
            size_text = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                raise OpaHttpError(f"malformed chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                self._state = _TRAILER
                continue
            self._total += size
            if self._total > self._max_body:
                raise OpaHttpError(f"answer is over the limit of {self._max_body} bytes")
            self._left = size
            self._state = _DATA
        del buffer[:position]
        return None
