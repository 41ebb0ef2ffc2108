"""``POST /v1/sboms`` and ``GET /v1/sboms/{id}``: SBOM uploads over REST.

Mounted by :func:`gatekeeper.app.create_app` with the SBOM size limit of the settings.

The body is the SBOM document itself (``application/vnd.cyclonedx+json``,
``application/spdx+json`` or ``application/json``), so its sha256 is that of the exact bytes
the pipeline sent; the image digest and the ticket travel as query parameters::

    curl -X POST --data-binary @bom.json -H 'Content-Type: application/vnd.cyclonedx+json' \\
        'https://gatekeeper/v1/sboms?image_digest=sha256:...&ticket_id=CHG-1042'

Answers 201 with the stored SBOM's id, sha256 and binding state; 422 naming the JSON path of
the first problem of an invalid document (raised as :class:`SbomDocumentError`, rendered by the
app's ``GatekeeperError`` handler); 413 when larger than ``max_bytes``; 415 for other types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.params import Depends
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from gatekeeper.api.models import (
    BINARY_SCHEMA,
    ErrorBody,
    request_body,
)
from gatekeeper.api.models_records import SbomMetadata, SbomUploadDocument
from gatekeeper.api.uploads import read_upload
from gatekeeper.domain.ports.sbom import StoredSbom
from gatekeeper.domain.reference import parse_digest
from gatekeeper.usecases.sbom_upload import SbomUploads

__all__ = ["SBOM_MEDIA_TYPES", "build_sbom_router"]

SBOM_MEDIA_TYPES = frozenset({
    "application/json",
    "application/vnd.cyclonedx+json",
    "application/spdx+json",
})
_MEDIA_TYPE_OF_FORMAT = {"cyclonedx": "application/vnd.cyclonedx+json",
                         "spdx": "application/spdx+json"}


def _metadata(stored: StoredSbom) -> dict[str, Any]:
    return {
        "id": stored.id,
        "image_digest": stored.image_digest,
        "sha256": stored.sha256,
        "format": stored.format,
        "spec_version": stored.spec_version,
        "component_count": stored.component_count,
        "size": stored.size,
        "uploaded_at": stored.uploaded_at.isoformat().replace("+00:00", "Z"),
        "ticket_id": stored.ticket_id,
        "uploaded_by": stored.uploaded_by,
        "source": stored.source,
    }


def build_sbom_router(
    uploader_of: Callable[[Request], SbomUploads],
    *,
    max_bytes: int,
    dependencies: Sequence[Depends] = (),
    upload_dependencies: Sequence[Depends] = (),
    read_dependencies: Sequence[Depends] = (),
) -> APIRouter:
    router = APIRouter(dependencies=list(dependencies), tags=["sboms"])

    @router.post(
        "/v1/sboms",
        status_code=201,
        summary="Upload an SBOM for an image digest",
        dependencies=list(upload_dependencies),
        response_model=SbomUploadDocument,
        responses={
            413: {"model": ErrorBody, "description": "Larger than the SBOM size limit"},
            415: {"model": ErrorBody, "description": "Not an SBOM media type"},
        },
        openapi_extra=request_body(
            media_types=tuple(sorted(SBOM_MEDIA_TYPES)),
            description="The SBOM document (CycloneDX or SPDX 2.3 JSON)",
        ),
    )
    async def upload_sbom(
        request: Request,
        image_digest: Annotated[str, Query(description="sha256:... of the image manifest")],
        ticket_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    ) -> Response:
        digest = parse_digest(image_digest, field="image_digest")
        content = await read_upload(
            request, media_types=SBOM_MEDIA_TYPES, max_bytes=max_bytes, what="SBOM"
        )
        if isinstance(content, Response):
            return content
        principal = getattr(request.state, "principal", None)
        uploader = uploader_of(request)
        # Parsing and validating a 10,000 component SBOM takes ~150 ms of CPU: off the loop.
        result = await run_in_threadpool(
            uploader.upload, content, digest, ticket_id=ticket_id,
            uploaded_by=getattr(principal, "subject", None),
        )
        return JSONResponse(
            result.as_response(), status_code=201,
            headers={"Location": f"/v1/sboms/{result.stored.id}"},
        )

    @router.get(
        "/v1/sboms/{sbom_id}",
        summary="An uploaded SBOM's metadata, or the document",
        dependencies=list(read_dependencies),
        response_model=SbomMetadata,
        responses={200: {"content": {
            media_type: {"schema": BINARY_SCHEMA}
            for media_type in _MEDIA_TYPE_OF_FORMAT.values()
        }, "description": "The metadata, or with document=true the document itself"}},
    )
    async def get_sbom(sbom_id: str, request: Request, document: bool = False) -> Response:
        stored = await run_in_threadpool(uploader_of(request).get, sbom_id)
        if document:
            return Response(stored.content, media_type=_MEDIA_TYPE_OF_FORMAT[stored.format])
        return JSONResponse(_metadata(stored))

    return router
