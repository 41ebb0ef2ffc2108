"""Pure ASGI middleware: the request guard (authenticate before reading, refuse control
characters in the path and query), the body-size limit and body read timeout, per-route metrics
(no per-request task overhead)."""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatekeeper.api.auth import Authenticator, AuthError
from gatekeeper.api.models import error_document
from gatekeeper.asgi_request import BodyTooLarge, control_character, read_body
from gatekeeper.metrics import Metrics

__all__ = [
    "BodySizeLimitMiddleware",
    "RequestGuardMiddleware",
    "RequestMetricsMiddleware",
    "guard_request",
    "read_limited_body",
    "send_json",
]


async def send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestGuardMiddleware:
    """Bounded before trusted: runs before anything reads the body.

    * A path or query string (percent-decoded) with a control character is a 400 naming it: it
      never reaches a route, a database query or a log line.
    * Under ``/v1/`` the bearer token is verified first (``app.state.authenticator``); a missing
      or bad token is answered 401 without reading a byte of the body. Role checks stay on the
      routes (``require_roles``).
    """

    def __init__(self, app: ASGIApp, *, protected_prefix: str = "/v1/") -> None:
        self.app = app
        self.protected_prefix = protected_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or await guard_request(
                scope, receive, send, protected_prefix=self.protected_prefix):
            await self.app(scope, receive, send)


async def guard_request(
    scope: Scope, receive: Receive, send: Send, *, protected_prefix: str = "/v1/"
) -> bool:
    """The request guard of :class:`RequestGuardMiddleware`: True when the request may go on,
    False when it has been answered (400 for a control character, 401 for a missing or bad
    token under ``protected_prefix``)."""
    path = scope.get("path", "")
    query = urllib.parse.unquote_to_bytes(scope.get("query_string", b""))
    for field, value in (("path", path.encode("utf-8", "surrogateescape")), ("query", query)):
        byte = control_character(value)
        if byte is not None:
            await send_json(send, 400, {
                "error": "invalid_input",
                "message": f"the request {field} contains the control character U+{byte:04X}",
                "field": field,
            })
            return False
    if path.startswith(protected_prefix):
        application = scope.get("app")
        authenticator = getattr(getattr(application, "state", None), "authenticator", None)
        if isinstance(authenticator, Authenticator):
            authorization = None
            for name, value in scope.get("headers", []):
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            try:
                authenticator.authenticate(authorization)
            except AuthError as exc:
                await exc.response()(scope, receive, send)
                return False
    return True


class BodySizeLimitMiddleware:
    """Answers 413 for a body larger than ``limit`` bytes, declared or streamed, and 408 for a
    body that does not arrive within ``read_timeout`` seconds (a slow client cannot hold a
    worker and its buffer forever)."""

    def __init__(
        self, app: ASGIApp, *, limit: int, path_limits: dict[str, int] | None = None,
        read_timeout: float | None = None,
    ) -> None:
        self.app = app
        self.default_limit = limit
        self.path_limits = dict(path_limits or {})
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope.get("path", ""), self.default_limit)
        message = await read_limited_body(scope, receive, send, limit, self.read_timeout)
        if message is not None:
            await self.app(scope, _replay([message], receive), send)


async def read_limited_body(
    scope: Scope, receive: Receive, send: Send, limit: int, read_timeout: float | None,
) -> Message | None:
    """The whole body as one ``http.request`` message (or the message that ended it early, a
    disconnect), or None when it has answered: 413 for a body larger than ``limit`` bytes,
    declared or streamed, 408 for one not in within ``read_timeout`` seconds.

    The whole body is read first (it is small by definition): a streamed body that grows past
    the limit is refused before any handler sees a byte of it."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = 0
            if declared > limit:
                await send_json(send, 413, _too_large(limit))
                return None
    try:
        body = await read_body(receive, limit=limit, read_timeout=read_timeout)
    except BodyTooLarge:
        await send_json(send, 413, _too_large(limit))
        return None
    except TimeoutError:
        await send_json(send, 408, {
            "error": "timeout",
            "message": f"request body not received within {read_timeout:g} s",
        })
        return None
    if not isinstance(body, bytes):
        return body  # the message that ended the body early (a disconnect)
    return {"type": "http.request", "body": body, "more_body": False}


def _too_large(limit: int) -> dict[str, Any]:
    return error_document("payload_too_large", f"request body is larger than {limit} bytes")


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replaying_receive() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replaying_receive


class RequestMetricsMiddleware:
    """Observes latency per (method, route template, status)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_latency.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )
