"""The lean REST path: ``POST /v1/evaluations`` answered by raw ASGI, in front of FastAPI.

A warm evaluation spends most of its time in :meth:`EvaluationService.evaluate`; what FastAPI
puts around it (four middleware layers, the router, dependency resolution, the request object,
its exception middlewares) cost about 0.3 ms more CPU per request than this path, and 0.5 ms of
latency (``benchmarks/bench_rest_transport.py``). :class:`EvaluationPath` answers
``POST /v1/evaluations`` in one coroutine with the same pieces the framework path runs, in the
same order, so the answers are the same bytes:

1. the request guard (:func:`~gatekeeper.api.middleware.guard_request`): 400 for a control
   character in the query, 401 for a missing or bad bearer token, before the body is read;
2. the body limit (:func:`~gatekeeper.api.middleware.read_limited_body`,
   ``GATEKEEPER_MAX_BODY_BYTES``): 413 declared or streamed, 408 when the body is late;
3. the body decoded as FastAPI decodes it (JSON only for an ``application/json`` or ``+json``
   Content-Type; a JSON syntax error is a 422 at ``body[offset]``, undecodable bytes a 400);
4. the route's own role check (:data:`~gatekeeper.api.routes.EVALUATION_ACCESS`, the FastAPI
   dependency itself: 401/403), then FastAPI's validation of the route's body field
   (:class:`~gatekeeper.api.models.EvaluationBody`): 422 with every field path;
5. :func:`~gatekeeper.api.routes.evaluation_document` on AnyIO's thread pool (the one FastAPI
   runs sync routes on, with the request's context, so the service's spans are children of the
   server span), answered as the route answers it (``JSONResponse``);
6. every exception rendered by the application's own exception handlers (GatekeeperError,
   AuthError, validation errors, HTTPException), anything else a plain 500, logged;
7. ``http_request_duration_seconds{method, route, status}``: route ``/v1/evaluations`` once
   the body is in, ``unmatched`` for what the guard or the body limit answered (as the metrics
   middleware sees those: the router never ran).

Anything else (another method or path) goes to FastAPI; so does every request when the
application has no :class:`~gatekeeper.api.auth.Authenticator` (the route then fails closed).
The access log is uvicorn's (off in ``gatekeeper serve``), the same for both paths; the
application has no request id of its own.
"""

from __future__ import annotations

import email.message
import inspect
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi.dependencies.utils import request_body_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute, APIRouter
from pydantic_core import PydanticUndefined
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gatekeeper.api.auth import Authenticator
from gatekeeper.api.middleware import guard_request, read_limited_body
from gatekeeper.api.routes import EVALUATION_ACCESS, Services, evaluation_document

__all__ = ["EVALUATIONS", "EvaluationPath"]

log = logging.getLogger(__name__)

#: The path (and route template) this module answers ``POST`` on.
EVALUATIONS = "/v1/evaluations"
_UNMATCHED = "unmatched"  # the metrics middleware's label for a request no route saw

#: Observes one request: (method, route template, status, seconds).
Observe = Callable[[str, str, int, float], None]
_Handler = Callable[[Request, Exception], Any]


def _evaluation_route(router: APIRouter) -> APIRoute:
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path == EVALUATIONS and route.methods == {"POST"}:
            return route
    raise LookupError(f"the router has no POST {EVALUATIONS} route")


def _decoded_body(scope: Scope, body: bytes) -> Any:
    """The body as FastAPI's request handler hands it to validation (strict Content-Type)."""
    if not body:
        return PydanticUndefined  # FastAPI's Undefined: the body is missing, not null
    content_type: str | None = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.decode("latin-1")
            break
    if not content_type:
        return body
    if content_type != "application/json":  # what pipelines send, known without parsing it
        message = email.message.Message()
        message["content-type"] = content_type
        if message.get_content_maintype() != "application":
            return body
        subtype = message.get_content_subtype()
        if subtype != "json" and not subtype.endswith("+json"):
            return body
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{
            "type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
            "input": {}, "ctx": {"error": exc.msg},
        }], body=exc.doc) from exc
    except Exception as exc:  # e.g. bytes that are not UTF-8/16/32
        raise HTTPException(status_code=400, detail="There was an error parsing the body") \
            from exc


class EvaluationPath:
    """``POST /v1/evaluations``, answered without the web framework (see the module)."""

    def __init__(
        self, app: Any, router: APIRouter, *, observe: Observe, body_limit: int,
        read_timeout: float | None,
    ) -> None:
        """``router``: the one :func:`~gatekeeper.api.routes.build_router` built and ``app``
        includes (its route's body field is what the request is validated with)."""
        self.app = app
        route = _evaluation_route(router)
        self.body_fields = list(route.dependant.body_params)
        self.evaluate: Callable[[Services, Any, Any], dict[str, Any]] = evaluation_document
        self.observe = observe
        self.body_limit = body_limit
        self.read_timeout = read_timeout

    @staticmethod
    def span_details(_scope: Scope) -> tuple[str, dict[str, Any]]:
        """The server span, named as FastAPI's instrumentation names the route's."""
        return f"POST {EVALUATIONS}", {"http.route": EVALUATIONS}

    def serves(self, scope: Scope) -> bool:
        """Whether this path answers the request (else the application does)."""
        return (scope["type"] == "http" and scope["path"] == EVALUATIONS
                and scope["method"] == "POST"
                and isinstance(getattr(self.app.state, "authenticator", None), Authenticator))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        template = _UNMATCHED
        response_started = False

        async def recording_send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
            await send(message)

        scope["app"] = self.app  # what Starlette sets: the guard and the role check read it
        try:
            if not await guard_request(scope, receive, recording_send):
                return
            message = await read_limited_body(
                scope, receive, recording_send, self.body_limit, self.read_timeout)
            if message is None:
                return
            template = EVALUATIONS
            # None: the client went away before its body was in (answered as the route does)
            body = message["body"] if message["type"] == "http.request" else None
            response = await self._answer(scope, receive, body)
            await response(scope, receive, recording_send)
        except Exception:
            log.exception("request to %s failed", EVALUATIONS)
            if not response_started:  # as Starlette's error middleware answers
                await PlainTextResponse("Internal Server Error", status_code=500)(
                    scope, receive, recording_send)
        finally:
            self.observe("POST", template, status, time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive, body: bytes | None) -> Response:
        request = Request(scope, receive)
        try:
            if body is None:
                raise HTTPException(status_code=400, detail="There was an error parsing the body")
            value = _decoded_body(scope, body)
            principal = await EVALUATION_ACCESS(request)
            values, errors = await request_body_to_args(
                self.body_fields, received_body=value, embed_body_fields=False)
            if errors:
                raise RequestValidationError(
                    errors, body=None if value is PydanticUndefined else value)
            document = await run_in_threadpool(
                self.evaluate, self.app.state.container, values[self.body_fields[0].name],
                principal)
            return JSONResponse(document)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            answer = handler(request, exc)
            if inspect.isawaitable(answer):
                answer = await answer
            assert isinstance(answer, Response)
            return answer

    def _handler_for(self, exc: Exception) -> _Handler | None:
        """The application's handler for ``exc``, looked up as Starlette's exception
        middleware looks it up (status code of an HTTPException first, then by class)."""
        handlers: Mapping[Any, _Handler] = self.app.exception_handlers
        if isinstance(exc, HTTPException) and exc.status_code in handlers:
            return handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None

