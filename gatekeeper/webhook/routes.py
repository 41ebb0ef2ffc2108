"""HTTP routes of the admission webhooks, as a router the application mounts.

``POST /admission/validate`` and ``POST /admission/mutate`` answer with the mode of the
configuration; ``POST /admission/{validate,mutate}/{enforce,warn,audit}`` are the same webhooks
registered by the chart for namespaces labelled ``gatekeeper.forge.dev/mode`` (see
:mod:`gatekeeper.webhook.scope`). A body that is not JSON, not an ``admission.k8s.io/v1``
AdmissionReview, or without ``request`` gets a 400 with a JSON error (413 when too large):
the API server then applies the webhook's ``failurePolicy``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from gatekeeper.domain import EnforcementMode
from gatekeeper.errors import InvalidInputError
from gatekeeper.webhook.handler import AdmissionHandler
from gatekeeper.webhook.models import ADMISSION_OPENAPI, AdmissionReviewAnswer
from gatekeeper.webhook.review import WebhookKind, parse_admission_review

__all__ = ["AdmissionEndpoint", "Answer", "build_admission_router"]

_JSON = "application/json"


class _TooLarge(InvalidInputError):
    """A streamed AdmissionReview grew past the limit."""


Answer = tuple[int, bytes]


class AdmissionEndpoint:
    """What ``POST /admission/{validate,mutate}[/mode]`` answers, framework-free: each step
    gives ``(status, JSON body)``. Shared by the FastAPI routes (the documented API, the
    OpenAPI schema) and the lean ASGI path ``gatekeeper serve`` answers the API server with
    (:mod:`gatekeeper.webhook.asgi`), so both answer byte for byte the same."""

    def __init__(self, handler: AdmissionHandler) -> None:
        self.handler = handler
        self.limit = handler.settings.max_review_bytes

    def count_rejected(self, webhook: WebhookKind, status: int) -> None:
        if self.handler.metrics is not None:
            self.handler.metrics.rejected.labels(webhook=webhook, status=str(status)).inc()

    def refuse(self, webhook: WebhookKind, status: int, error: InvalidInputError) -> Answer:
        self.count_rejected(webhook, status)
        body: dict[str, Any] = {"kind": error.kind, "message": error.message}
        if error.field:
            body["field"] = error.field
        return status, json.dumps({"error": body}).encode()

    def path_mode(
        self, webhook: WebhookKind, mode: str | None
    ) -> EnforcementMode | None | Answer:
        """The mode named by the path (None: from the configuration), or the 404 answer."""
        if mode is None:
            return None
        try:
            return EnforcementMode(mode)
        except ValueError:
            return self.refuse(webhook, 404, InvalidInputError(
                f"unknown enforcement mode {mode!r:.40} in path "
                "(expected enforce, warn or audit)", field="path",
            ))

    def declared_too_large(self, webhook: WebhookKind, declared: str | None) -> Answer | None:
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return self.refuse(webhook, 413, _TooLarge(
                f"AdmissionReview is {declared} bytes, more than the limit of {self.limit}",
                field="body",
            ))
        return None

    def streamed_too_large(self, webhook: WebhookKind) -> Answer:
        return self.refuse(webhook, 413, _TooLarge(
            f"AdmissionReview is more than the limit of {self.limit} bytes", field="body"))

    def wrong_content_type(self, webhook: WebhookKind, content_type: str) -> Answer | None:
        if content_type.split(";", 1)[0].strip().lower() != _JSON:
            return self.refuse(webhook, 400, InvalidInputError(
                f"expected Content-Type {_JSON}, got {content_type!r:.80}", field="content-type"
            ))
        return None

    async def review(
        self, webhook: WebhookKind, path_mode: EnforcementMode | None, body: bytes,
        received_at: float,
    ) -> Answer:
        """The answer to a complete request body (400 when it is not an AdmissionReview)."""
        try:
            review = parse_admission_review(body, max_bytes=self.limit)
        except InvalidInputError as exc:
            return self.refuse(webhook, 400, exc)
        response = await self.handler.handle(
            review, webhook=webhook, path_mode=path_mode, received_at=received_at
        )
        return 200, orjson.dumps(response.to_review())


#: What /openapi.json says of every admission route (the body is read and limited by hand).
_DOCUMENTED: dict[str, Any] = {
    "response_model": AdmissionReviewAnswer,
    "openapi_extra": ADMISSION_OPENAPI,
    "responses": {
        400: {"description": "Not JSON, not an admission.k8s.io/v1 AdmissionReview"},
        413: {"description": "AdmissionReview larger than the limit"},
    },
}


def build_admission_router(handler: AdmissionHandler) -> APIRouter:
    """The ``/admission/...`` routes answering with ``handler``."""
    router = APIRouter(prefix="/admission", tags=["admission"])
    endpoint = AdmissionEndpoint(handler)

    async def answer(request: Request, webhook: WebhookKind, mode: str | None) -> Response:
        received_at = time.monotonic()
        status, body = await _answer(request, webhook, mode, received_at)
        return Response(body, status_code=status, media_type=_JSON)

    async def _answer(
        request: Request, webhook: WebhookKind, mode: str | None, received_at: float
    ) -> Answer:
        path_mode = endpoint.path_mode(webhook, mode)
        if isinstance(path_mode, tuple):
            return path_mode
        refused = endpoint.wrong_content_type(
            webhook, request.headers.get("content-type", "")
        ) or endpoint.declared_too_large(webhook, request.headers.get("content-length"))
        if refused is not None:
            return refused
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > endpoint.limit:
                return endpoint.streamed_too_large(webhook)
            chunks.append(chunk)
        return await endpoint.review(webhook, path_mode, b"".join(chunks), received_at)

    @router.post(
        "/validate", summary="ValidatingAdmissionWebhook (mode from configuration)",
        **_DOCUMENTED,
    )
    async def validate(request: Request) -> Response:
        return await answer(request, "validate", None)

    @router.post(
        "/validate/{mode}", summary="ValidatingAdmissionWebhook for one mode",
        **_DOCUMENTED,
    )
    async def validate_mode(request: Request, mode: str) -> Response:
        return await answer(request, "validate", mode)

    @router.post(
        "/mutate", summary="MutatingAdmissionWebhook pinning verified digests",
        **_DOCUMENTED,
    )
    async def mutate(request: Request) -> Response:
        return await answer(request, "mutate", None)

    @router.post(
        "/mutate/{mode}", summary="MutatingAdmissionWebhook for one mode",
        **_DOCUMENTED,
    )
    async def mutate_mode(request: Request, mode: str) -> Response:
        return await answer(request, "mutate", mode)

    return router
