"""The HTTP server's own limits: a request's headers must arrive within a deadline.

uvicorn bounds the idle time *between* requests (``timeout_keep_alive``) but not a client that
opens a connection and sends its headers one byte at a time (slowloris): each such connection
holds a socket and a parser for as long as it likes. :class:`HeaderDeadlineProtocol` closes a
connection whose request headers are not complete ``header_timeout`` seconds after it opened
(or after the previous response). The body has its own deadline in
:class:`~gatekeeper.api.middleware.BodySizeLimitMiddleware`.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["header_deadline_protocol"]

log = logging.getLogger(__name__)


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request line and headers."""

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
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.warning("closing a connection from %s: no complete request headers within %g s",
                        self.client, self.header_timeout)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the headers are in
            self._disarm()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own deadline
        super().on_response_complete()


def header_deadline_protocol(
    seconds: float, base: type[H11Protocol] | None = None
) -> type[HeaderDeadlineProtocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with a ``seconds`` header deadline;
    ``base`` is another H11Protocol subclass to combine it with (e.g. the TLS client-certificate
    protocol), both cooperating through ``super()``."""
    bases: tuple[type[H11Protocol], ...] = (HeaderDeadlineProtocol,)
    if base is not None:
        bases = (HeaderDeadlineProtocol, base)
    return type("HeaderDeadlineProtocol", bases, {"header_timeout": seconds})
