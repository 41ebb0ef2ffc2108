"""The lean admission path: the API server's ``POST /admission/...`` answered by raw ASGI.

Every admission is two requests (mutating, then validating webhook), so what lies between the
socket and :meth:`AdmissionHandler.handle` is paid twice per Pod. Through FastAPI that was the
router, dependency resolution, the request/response objects and seven middleware layers, about
as much CPU as the review itself. :class:`AdmissionPath` answers exactly the documented
admission paths (``/admission/{validate,mutate}`` and their ``/enforce``, ``/warn``, ``/audit``
forms) for ``POST`` in one coroutine; anything else (other methods, an unknown mode in the path,
the REST API, probes, docs) goes to the FastAPI application unchanged.

What the path keeps of the stack it bypasses, in the same order and with the same answers:

1. the client certificate (``GATEKEEPER_TLS_CLIENT_CA_FILE``): 403 without a verified one;
2. the request guard: a control character in the query is a 400 naming it;
3. the body limit (``GATEKEEPER_ADMISSION_MAX_REVIEW_BYTES``): 413 for a larger declared or
   streamed body, 408 when the body is not in within ``GATEKEEPER_HTTP_BODY_TIMEOUT_SECONDS``;
4. the route (:class:`~gatekeeper.webhook.routes.AdmissionEndpoint`, shared with the FastAPI
   routes): 400 for a wrong Content-Type or a body that is not a v1 AdmissionReview, else the
   AdmissionReview answer;
5. ``http_request_duration_seconds{method, route, status}`` with the route template
   (``/admission/validate/{mode}``), as the metrics middleware records it; an unexpected
   exception is a plain 500, logged, as Starlette's error middleware answers it.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gatekeeper.asgi_request import BodyTooLarge, control_character, read_body
from gatekeeper.domain import EnforcementMode
from gatekeeper.errors import GatekeeperError
from gatekeeper.webhook.review import WebhookKind
from gatekeeper.webhook.routes import AdmissionEndpoint, Answer
from gatekeeper.webhook.tls import has_client_certificate, send_client_certificate_required

__all__ = ["AdmissionPath", "admission_routes"]

log = logging.getLogger(__name__)

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

#: Observes one request: (method, route template, status, seconds).
Observe = Callable[[str, str, int, float], None]
#: The status and JSON document the application answers a GatekeeperError with.
ErrorAnswer = Callable[[GatekeeperError], tuple[int, dict[str, Any]]]

_JSON_HEADERS = (b"content-type", b"application/json")


def admission_routes() -> dict[str, tuple[WebhookKind, EnforcementMode | None, str]]:
    """Each admission path -> (webhook, mode of the path, route template for the metrics)."""
    routes: dict[str, tuple[WebhookKind, EnforcementMode | None, str]] = {}
    webhooks: tuple[WebhookKind, ...] = ("validate", "mutate")
    for webhook in webhooks:
        routes[f"/admission/{webhook}"] = (webhook, None, f"/admission/{webhook}")
        for mode in EnforcementMode:
            routes[f"/admission/{webhook}/{mode.value}"] = (
                webhook, mode, f"/admission/{webhook}/{{mode}}")
    return routes


def _document(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


class AdmissionPath:
    """``POST`` on the admission paths, answered without the web framework (see the module)."""

    def __init__(
        self,
        endpoint: AdmissionEndpoint,
        *,
        observe: Observe,
        error_answer: ErrorAnswer,
        client_certificate_required: bool,
        body_limit: int,
        read_timeout: float | None,
    ) -> None:
        self.endpoint = endpoint
        self.routes = admission_routes()
        self.observe = observe
        self.error_answer = error_answer
        self.client_certificate_required = client_certificate_required
        self.body_limit = body_limit
        self.read_timeout = read_timeout

    def span_details(self, scope: _Scope) -> tuple[str, dict[str, Any]]:
        """A request's server span, named as FastAPI's instrumentation names a route's."""
        template = self.routes[scope["path"]][2]
        return f"POST {template}", {"http.route": template}

    def serves(self, scope: _Scope) -> bool:
        """Whether this path answers the request (else the application does)."""
        return (scope["type"] == "http" and scope["path"] in self.routes
                and scope["method"] == "POST")

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if self.client_certificate_required and not has_client_certificate(scope):
            await send_client_certificate_required(send)  # not observed, as before
            return
        started = time.perf_counter()
        webhook, mode, template = self.routes[scope["path"]]
        try:
            answer = await self._answer(scope, receive, webhook, mode)
        except Exception:
            self.observe("POST", template, 500, time.perf_counter() - started)
            log.exception("admission request to %s failed", scope["path"])
            body = b"Internal Server Error"
            await send({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if answer is None:  # the client went away before its body was in
            return
        status, body = answer
        await send({"type": "http.response.start", "status": status, "headers": [
            _JSON_HEADERS, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        self.observe("POST", template, status, time.perf_counter() - started)

    async def _answer(
        self, scope: _Scope, receive: _Receive, webhook: WebhookKind,
        mode: EnforcementMode | None,
    ) -> Answer | None:
        received_at = time.monotonic()
        query = scope.get("query_string", b"")
        if query:
            byte = control_character(urllib.parse.unquote_to_bytes(query))
            if byte is not None:
                return self._refuse(webhook, 400, {
                    "error": "invalid_input",
                    "message": f"the request query contains the control character U+{byte:04X}",
                    "field": "query",
                })
        content_type: str | None = None
        declared: bytes | None = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's headers read
            if name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
            elif name == b"content-length" and declared is None:
                declared = value
        limit = self.body_limit
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return self._too_large(webhook, limit)
        try:
            body = await read_body(receive, limit=limit, read_timeout=self.read_timeout)
        except BodyTooLarge:
            return self._too_large(webhook, limit)
        except TimeoutError:
            return self._refuse(webhook, 408, {
                "error": "timeout",
                "message": f"request body not received within {self.read_timeout:g} s",
            })
        if not isinstance(body, bytes):
            return None  # the client went away before its body was in
        endpoint = self.endpoint
        refused = endpoint.wrong_content_type(webhook, content_type or "")
        if refused is not None:
            return refused
        try:
            return await endpoint.review(webhook, mode, body, received_at)
        except GatekeeperError as exc:
            status, document = self.error_answer(exc)
            return status, _document(document)

    def _refuse(self, webhook: WebhookKind, status: int, document: dict[str, Any]) -> Answer:
        self.endpoint.count_rejected(webhook, status)
        return status, _document(document)

    def _too_large(self, webhook: WebhookKind, limit: int) -> Answer:
        return self._refuse(webhook, 413, {
            "error": "payload_too_large", "message": f"request body is larger than {limit} bytes",
        })
