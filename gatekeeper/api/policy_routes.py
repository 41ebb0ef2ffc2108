"""REST routes of the policy lifecycle: revisions, activation, rollback, replay, exceptions.

Thin: parse -> the use cases :class:`~gatekeeper.usecases.policy_lifecycle.PolicyLifecycle` and
:class:`~gatekeeper.usecases.exceptions.PolicyExceptions` (``lifecycle.exceptions``) ->
serialise. Writes need
the role ``policy-admin``; reads also accept ``auditor`` (``admin`` passes every check).
The lifecycle is found on ``request.app.state.policy_lifecycle`` unless another lookup is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from gatekeeper.api.auth import AuthError, Principal, Role, require_roles
from gatekeeper.api.models import BINARY_SCHEMA, ErrorBody, error_response, request_body
from gatekeeper.api.models_policy import (
    ActivationDocument,
    ExceptionBody,
    ExceptionDocument,
    ExceptionExport,
    ExceptionList,
    PoliciesOverview,
    PolicyEventList,
    PolicyFilesBody,
    PolicyRefusedBody,
    ReasonBody,
    ReplayDocument,
    RevisionDocument,
)
from gatekeeper.domain.policy_lifecycle import PolicyCandidate, PolicyConflictError, PolicyEvent
from gatekeeper.errors import ConfigurationError, InvalidInputError, NotFoundError
from gatekeeper.usecases.policy_lifecycle import PolicyLifecycle

__all__ = ["build_policy_router", "lifecycle_from_state"]

_TARBALL_TYPES = ("application/gzip", "application/x-gzip", "application/x-tar",
                  "application/octet-stream")
_EXCEPTION_STATUSES = ("pending", "active", "expired", "revoked")


# Module level: FastAPI resolves these (string) annotations in the module's namespace.
#: Reads: the security team and auditors.
reader = Annotated[Principal, Depends(require_roles(Role.POLICY_ADMIN, Role.AUDITOR))]
#: Writes (and replays, which are heavy): the security team only.
writer = Annotated[Principal, Depends(require_roles(Role.POLICY_ADMIN))]
#: Approving a pending exception: the security team or a dedicated approver.
approver = Annotated[
    Principal, Depends(require_roles(Role.POLICY_ADMIN, Role.EXCEPTION_APPROVER))
]


def lifecycle_from_state(request: Request) -> PolicyLifecycle:
    lifecycle = getattr(request.app.state, "policy_lifecycle", None)
    if not isinstance(lifecycle, PolicyLifecycle):
        raise ConfigurationError("the policy lifecycle is not configured on this server")
    return lifecycle


def _conflict(exc: PolicyConflictError) -> JSONResponse:
    return error_response(409, exc.kind, exc.message)


_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "The lifecycle state forbids it"},
}
_GZIP: dict[str, Any] = {"content": {"application/gzip": {"schema": BINARY_SCHEMA}}}


def _event(event: PolicyEvent) -> dict[str, Any]:
    return event.as_dict()


async def _json_object(request: Request, *, required: bool) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise InvalidInputError("a JSON object body is required", field="body")
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidInputError("body is not valid JSON", field="body") from exc
    if not isinstance(body, dict):
        raise InvalidInputError("body must be a JSON object", field="body")
    return body


def _optional_text(body: dict[str, Any], name: str, limit: int = 2000) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidInputError(
            f"{name} must be a string of at most {limit} characters", field=name
        )
    return value


def _files_from_json(lifecycle: PolicyLifecycle, body: dict[str, Any]) -> PolicyCandidate:
    unknown = set(body) - {"policies", "tests", "description"}
    if unknown:
        raise InvalidInputError(f"unknown fields: {', '.join(sorted(unknown))}", field="body")
    policies, tests = body.get("policies"), body.get("tests", {})
    for name, value in (("policies", policies), ("tests", tests)):
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise InvalidInputError(
                f"{name} must be a JSON object of file path -> file text", field=name
            )
    assert isinstance(policies, dict) and isinstance(tests, dict)
    return lifecycle.authoring.from_text(policies, tests)


def build_policy_router(
    lifecycle_of: Callable[[Request], PolicyLifecycle] = lifecycle_from_state,
) -> APIRouter:
    router = APIRouter(tags=["policies"])

    @router.get(
        "/v1/policies",
        summary="The active revision (with its files) and the history",
        response_model=PoliciesOverview,
    )
    def get_policies(request: Request, _principal: reader) -> JSONResponse:
        return JSONResponse(lifecycle_of(request).overview())

    @router.post(
        "/v1/policies/revisions",
        summary="Upload a candidate (tar.gz, or JSON {policies, tests}); it is checked with opa",
        status_code=201,
        response_model=RevisionDocument,
        responses={
            200: {"model": RevisionDocument, "description": "The same files were uploaded before"},
            422: {"model": PolicyRefusedBody, "description": "Refused by the checks (kept)"},
        },
        openapi_extra=request_body(
            PolicyFilesBody, media_types=_TARBALL_TYPES,
            description="JSON {policies, tests, description}, or a tar.gz of the files "
            "(description as a query parameter)",
        ),
    )
    async def create_revision(request: Request, principal: writer) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        description: str | None = None
        lifecycle = lifecycle_of(request)
        files: PolicyCandidate
        if content_type in _TARBALL_TYPES:
            files = lifecycle.authoring.from_tarball(await request.body())
            description = request.query_params.get("description")
        elif content_type == "application/json":
            body = await _json_object(request, required=True)
            files = _files_from_json(lifecycle, body)
            description = _optional_text(body, "description")
        else:
            raise InvalidInputError(
                "send application/json ({\"policies\": {...}, \"tests\": {...}}) or a "
                "tar.gz (application/gzip)",
                field="content-type",
            )
        record, created = await run_in_threadpool(
            lambda: lifecycle.submit(
                files, actor=principal.subject, source="api", description=description
            )
        )
        document = record.as_dict(active_revision=lifecycle.active_revision_id())
        if not record.accepted:
            return error_response(
                422, "policy_refused",
                f"candidate {record.revision_id} refused: {record.report.summary()}",
                revision=document,
            )
        return JSONResponse(document, status_code=201 if created else 200)

    @router.get("/v1/policies/revisions/{revision_id}", response_model=RevisionDocument)
    def get_revision(revision_id: str, request: Request, _principal: reader) -> JSONResponse:
        lifecycle = lifecycle_of(request)
        record = lifecycle.revision(revision_id)
        return JSONResponse(
            record.as_dict(active_revision=lifecycle.active_revision_id(), contents=True)
        )

    @router.get(
        "/v1/policies/revisions/{revision_id}/bundle",
        summary="The revision as an OPA bundle (tar.gz) for an OPA sidecar's bundle service",
        response_class=Response,
        responses={200: _GZIP},
    )
    def get_bundle(revision_id: str, request: Request, _principal: reader) -> Response:
        bundle = lifecycle_of(request).bundle(revision_id)
        return Response(
            bundle.content,
            media_type="application/gzip",
            headers={"ETag": f'"{bundle.revision_id}"'},
        )

    @router.get(
        "/v1/policies/bundle",
        summary="The active revision as an OPA bundle: the resource an OPA sidecar polls",
        response_class=Response,
        responses={200: _GZIP, 304: {"description": "If-None-Match names the active revision"}},
    )
    def get_active_bundle(request: Request, _principal: reader) -> Response:
        lifecycle = lifecycle_of(request)
        active = lifecycle.active_revision_id()
        if active is None:
            raise NotFoundError("no active policy revision")
        etag = f'"{active}"'
        # OPA's bundle service sends the last ETag back; 304 saves re-downloading the bundle.
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        bundle = lifecycle.active_bundle()
        if bundle is None:
            raise NotFoundError("no active policy revision")
        return Response(
            bundle.content, media_type="application/gzip",
            headers={"ETag": f'"{bundle.revision_id}"'},
        )

    @router.post(
        "/v1/policies/revisions/{revision_id}/activate",
        response_model=ActivationDocument, responses=_CONFLICT,
        openapi_extra=request_body(ReasonBody, required=False),
    )
    async def activate(revision_id: str, request: Request, principal: writer) -> JSONResponse:
        body = await _json_object(request, required=False)
        reason = _optional_text(body, "reason")
        lifecycle = lifecycle_of(request)
        try:
            event = await run_in_threadpool(
                lambda: lifecycle.activate(revision_id, actor=principal.subject, reason=reason)
            )
        except PolicyConflictError as exc:
            return _conflict(exc)
        return JSONResponse({"active_revision": event.to_revision, "event": _event(event)})

    @router.post(
        "/v1/policies/rollback",
        response_model=ActivationDocument, responses=_CONFLICT,
        openapi_extra=request_body(ReasonBody, required=False),
    )
    async def rollback(request: Request, principal: writer) -> JSONResponse:
        body = await _json_object(request, required=False)
        reason = _optional_text(body, "reason")
        lifecycle = lifecycle_of(request)
        try:
            event = await run_in_threadpool(
                lambda: lifecycle.rollback(actor=principal.subject, reason=reason)
            )
        except PolicyConflictError as exc:
            return _conflict(exc)
        return JSONResponse({"active_revision": event.to_revision, "event": _event(event)})

    @router.post(
        "/v1/policies/revisions/{revision_id}/replay",
        summary="Re-evaluate stored decisions in [since, until) against the revision",
        response_model=ReplayDocument,
    )
    def replay(
        revision_id: str,
        request: Request,
        _principal: writer,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> JSONResponse:
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise InvalidInputError(f"{name} needs a time zone (Z or +hh:mm)", field=name)
        # "running now": the background loop's latest input of each running workload.
        background = getattr(request.app.state, "compliance", None)
        running = background.running_decisions() if background is not None else None
        report = lifecycle_of(request).replay(revision_id, since=since, until=until,
                                              running=running)
        return JSONResponse(report.as_dict())

    @router.get(
        "/v1/policies/events", summary="Lifecycle audit records, newest first",
        response_model=PolicyEventList,
    )
    def list_events(request: Request, _principal: reader, limit: int = 100) -> JSONResponse:
        return JSONResponse(lifecycle_of(request).events(limit=limit))

    # -- exceptions -----------------------------------------------------------------------

    @router.post(
        "/v1/exceptions", status_code=201, tags=["exceptions"],
        response_model=ExceptionDocument, openapi_extra=request_body(ExceptionBody),
    )
    async def create_exception(request: Request, principal: writer) -> JSONResponse:
        body = await _json_object(request, required=True)
        exceptions = lifecycle_of(request).exceptions
        exception = await run_in_threadpool(
            lambda: exceptions.create(body, actor=principal.subject)
        )
        return JSONResponse(exception.as_dict(exceptions.now()), status_code=201)

    @router.get("/v1/exceptions", tags=["exceptions"], response_model=ExceptionList)
    def list_exceptions(
        request: Request, _principal: reader, status: str | None = None
    ) -> JSONResponse:
        if status is not None and status not in _EXCEPTION_STATUSES:
            raise InvalidInputError(
                f"status must be one of {', '.join(_EXCEPTION_STATUSES)}", field="status"
            )
        return JSONResponse({"items": lifecycle_of(request).exceptions.documents(status)})

    @router.get("/v1/exceptions/export", tags=["exceptions"],
                summary="Every exception with its audit records (create, approve, revoke)",
                response_model=ExceptionExport)
    def export_exceptions(request: Request, _principal: reader) -> JSONResponse:
        return JSONResponse(lifecycle_of(request).exceptions.export())

    @router.get(
        "/v1/exceptions/{exception_id}", tags=["exceptions"], response_model=ExceptionDocument
    )
    def get_exception(exception_id: str, request: Request, _principal: reader) -> JSONResponse:
        exceptions = lifecycle_of(request).exceptions
        return JSONResponse(exceptions.get(exception_id).as_dict(exceptions.now()))

    async def _revoke(exception_id: str, request: Request, principal: Principal) -> JSONResponse:
        body = await _json_object(request, required=False)
        reason = _optional_text(body, "reason")
        exceptions = lifecycle_of(request).exceptions
        try:
            exception = await run_in_threadpool(
                lambda: exceptions.revoke(exception_id, actor=principal.subject, reason=reason)
            )
        except PolicyConflictError as exc:
            return _conflict(exc)
        return JSONResponse(exception.as_dict(exceptions.now()))

    @router.post(
        "/v1/exceptions/{exception_id}/approve", tags=["exceptions"],
        summary="A second authenticated principal approves a pending exception",
        response_model=ExceptionDocument, responses=_CONFLICT,
    )
    async def approve_exception(
        exception_id: str, request: Request, principal: approver
    ) -> JSONResponse:
        if not principal.authenticated:
            raise AuthError(
                403,
                "authentication is disabled on this server: nobody can approve an exception "
                "(four eyes need two authenticated principals)",
            )
        body = await _json_object(request, required=False)
        if body:
            # the approver is the caller; nothing about the exception changes by approving it
            raise InvalidInputError(
                f"approve takes no fields (got {', '.join(sorted(body))})", field=sorted(body)[0]
            )
        exceptions = lifecycle_of(request).exceptions
        try:
            exception = await run_in_threadpool(
                lambda: exceptions.approve(exception_id, actor=principal.subject)
            )
        except PolicyConflictError as exc:
            return _conflict(exc)
        return JSONResponse(exception.as_dict(exceptions.now()))

    @router.post(
        "/v1/exceptions/{exception_id}/revoke", tags=["exceptions"],
        response_model=ExceptionDocument, responses=_CONFLICT,
        openapi_extra=request_body(ReasonBody, required=False),
    )
    async def revoke_exception(
        exception_id: str, request: Request, principal: writer
    ) -> JSONResponse:
        return await _revoke(exception_id, request, principal)

    @router.delete(
        "/v1/exceptions/{exception_id}", tags=["exceptions"],
        summary="Revoke (the record is kept: exceptions are never deleted)",
        response_model=ExceptionDocument, responses=_CONFLICT,
        openapi_extra=request_body(ReasonBody, required=False),
    )
    async def delete_exception(
        exception_id: str, request: Request, principal: writer
    ) -> JSONResponse:
        return await _revoke(exception_id, request, principal)

    return router
