"""``POST /v1/vex``: a VEX document (OpenVEX or CycloneDX VEX) uploaded by a VEX publisher.

Only tokens with the ``vex-publisher`` or ``policy-admin`` role (or ``admin``) may upload: a VEX
statement waives vulnerability findings, so it is as strong as an exception. The body is the
document itself (``application/json``, ``application/vnd.openvex+json`` or
``application/vnd.cyclonedx+json``)::

    curl -X POST --data-binary @vex.json -H 'Content-Type: application/json' \\
        'https://gatekeeper/v1/vex?ticket_id=SEC-12'

Answers 201 with the stored document's id, sha256, format, statement count and the image
digests its statements name; 422 naming the JSON path of a document that is not VEX or names no
image digest; 413 over the body limit; 415 for other media types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.params import Depends
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from gatekeeper.api.models import ErrorBody, request_body
from gatekeeper.api.models_records import VexUploadDocument
from gatekeeper.api.uploads import read_upload
from gatekeeper.errors import ConfigurationError
from gatekeeper.usecases.vex_upload import VexUploads

__all__ = ["VEX_MEDIA_TYPES", "build_vex_router"]

VEX_MEDIA_TYPES = frozenset({
    "application/json",
    "application/vnd.openvex+json",
    "application/vnd.cyclonedx+json",
})


def build_vex_router(
    uploader_of: Callable[[Request], VexUploads | None],
    *,
    max_bytes: int,
    upload_dependencies: Sequence[Depends] = (),
) -> APIRouter:
    router = APIRouter(tags=["vex"])

    @router.post(
        "/v1/vex",
        status_code=201,
        summary="Upload a VEX document (role vex-publisher or policy-admin)",
        dependencies=list(upload_dependencies),
        response_model=VexUploadDocument,
        responses={
            413: {"model": ErrorBody, "description": "Larger than the body size limit"},
            415: {"model": ErrorBody, "description": "Not a VEX media type"},
        },
        openapi_extra=request_body(
            media_types=tuple(sorted(VEX_MEDIA_TYPES)),
            description="The VEX document (OpenVEX or CycloneDX with vulnerabilities)",
        ),
    )
    async def upload_vex(
        request: Request,
        ticket_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    ) -> Response:
        content = await read_upload(
            request, media_types=VEX_MEDIA_TYPES, max_bytes=max_bytes, what="VEX document"
        )
        if isinstance(content, Response):
            return content
        uploader = uploader_of(request)
        if uploader is None:
            raise ConfigurationError("VEX uploads are not wired in this gatekeeper")
        principal = getattr(request.state, "principal", None)
        result = await run_in_threadpool(
            uploader.upload, content, uploaded_by=getattr(principal, "subject", None),
            ticket_id=ticket_id,
        )  # fmt: skip
        return JSONResponse(result.as_response(), status_code=201)

    return router
