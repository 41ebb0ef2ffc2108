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

__all__ = ["build_admission_router"]

_JSON = "application/json"


def _error(status: int, error: InvalidInputError) -> Response:
    body: dict[str, Any] = {"kind": error.kind, "message": error.message}
    if error.field:
        body["field"] = error.field
    return Response(json.dumps({"error": body}), status_code=status, media_type=_JSON)


class _TooLarge(InvalidInputError):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(
            f"AdmissionReview is {declared} bytes, more than the limit of {limit}", field="body"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(
                f"AdmissionReview is more than the limit of {limit} bytes", field="body"
            )
        chunks.append(chunk)
    return b"".join(chunks)


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
    limit = handler.settings.max_review_bytes

    def refuse(webhook: WebhookKind, status: int, error: InvalidInputError) -> Response:
        if handler.metrics is not None:
            handler.metrics.rejected.labels(webhook=webhook, status=str(status)).inc()
        return _error(status, error)

    async def answer(request: Request, webhook: WebhookKind, mode: str | None) -> Response:
        received_at = time.monotonic()
        path_mode: EnforcementMode | None = None
        if mode is not None:
            try:
                path_mode = EnforcementMode(mode)
            except ValueError:
                return refuse(webhook, 404, InvalidInputError(
                    f"unknown enforcement mode {mode!r:.40} in path "
                    "(expected enforce, warn or audit)", field="path",
                ))
        content_type = request.headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() != _JSON:
            return refuse(webhook, 400, InvalidInputError(
                f"expected Content-Type {_JSON}, got {content_type!r:.80}", field="content-type"
            ))
        try:
            body = await _read_body(request, limit)
            review = parse_admission_review(body, max_bytes=limit)
        except _TooLarge as exc:
            return refuse(webhook, 413, exc)
        except InvalidInputError as exc:
            return refuse(webhook, 400, exc)
        response = await handler.handle(
            review, webhook=webhook, path_mode=path_mode, received_at=received_at
        )
        return Response(orjson.dumps(response.to_review()), media_type=_JSON)

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
