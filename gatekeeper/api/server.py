"""The HTTP server's own limits: a request's headers must arrive within a deadline.

uvicorn bounds the idle time *between* requests (``timeout_keep_alive``) but not a client that
opens a connection and sends its headers one byte at a time (slowloris): each such connection
holds a socket and a parser for as long as it likes. :class:`HeaderDeadlineProtocol` closes a
connection whose request headers are not complete ``header_timeout`` seconds after it opened
(or after the previous response). The body has its own deadline (the body-size limit's read
timeout, and the admission path's own in :mod:`gatekeeper.webhook.asgi`).

The protocol is uvicorn's ``httptools`` one (the C parser; ``gatekeeper serve`` runs it on
uvloop): h11, the pure-Python parser, cost a large share of every admission's CPU.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeaderDeadlineProtocol", "header_deadline_protocol"]

log = logging.getLogger(__name__)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for the request line and headers."""

    header_timeout: float = 10.0
    _header_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _too_slow(self) -> None:
        self._header_deadline = None
        waiting = self.cycle is None or (self.cycle.response_complete and not self.pipeline)
        if waiting and not self.transport.is_closing():
            log.warning("closing a connection from %s: no complete request headers within %g s",
                        self.client, self.header_timeout)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()  # the headers are in; the body has its own deadline
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own deadline
        super().on_response_complete()


def header_deadline_protocol(
    seconds: float, base: type[HttpToolsProtocol] | None = None
) -> type[HeaderDeadlineProtocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with a ``seconds`` header deadline;
    ``base`` is another HttpToolsProtocol subclass to combine it with (e.g. the TLS
    client-certificate protocol), both cooperating through ``super()``."""
    bases: tuple[type[HttpToolsProtocol], ...] = (HeaderDeadlineProtocol,)
    if base is not None:
        bases = (HeaderDeadlineProtocol, base)
    return type("HeaderDeadlineProtocol", bases, {"header_timeout": seconds})
