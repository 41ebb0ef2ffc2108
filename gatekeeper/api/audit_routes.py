"""REST routes of the audit trail: a ticket's decisions, streamed exports, verification.

Every route asks for its roles with :func:`~gatekeeper.api.auth.require_roles`:
``/v1/tickets/{ticket_id}/decisions`` pipeline or auditor; ``/v1/audit/*`` auditor (admin
passes every check). Mounted with ``app.include_router(build_audit_router())``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from gatekeeper.api.auth import Role, require_roles
from gatekeeper.api.models import DecisionList, ErrorBody
from gatekeeper.api.models_records import AuditVerification
from gatekeeper.domain import DecisionQuery, Verdict, parse_digest
from gatekeeper.domain.ports import SpooledAuditLog
from gatekeeper.errors import IntegrityError
from gatekeeper.usecases.audit_trail import AuditTrail

__all__ = ["audit_readiness", "build_audit_router"]

_MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or invalid bearer token"},
    403: {"model": ErrorBody, "description": "The token lacks the role"},
}


def _audit_trail(request: Request) -> AuditTrail:
    trail: AuditTrail = request.app.state.container.audit_trail
    return trail


def audit_readiness(audit: SpooledAuditLog) -> dict[str, Any]:
    """Fields for ``/readyz``: the spool depth (decisions waiting for the database), the
    quarantine (spooled decisions the store refused, kept beside the spool) and where the
    checkpoint signing key came from (a key generated for the embedded default says so)."""
    fields: dict[str, Any] = {
        "audit_spool_depth": audit.spool_depth,
        "audit_spool_quarantined": audit.spool_quarantined,
        "audit_signing_key": dict(audit.signing_key_info),
    }
    where = audit.spool_quarantine_path
    if audit.spool_quarantined and where is not None:
        fields["audit_spool_quarantine"] = (
            f"{audit.spool_quarantined} spooled decisions refused by the audit store are kept "
            f"in {where} (see gatekeeper audit verify)"
        )
    return fields


def build_audit_router() -> APIRouter:
    router = APIRouter()
    readers = require_roles(Role.PIPELINE, Role.AUDITOR)
    auditors = require_roles(Role.AUDITOR)

    @router.get(
        "/v1/tickets/{ticket_id}/decisions",
        response_model=DecisionList,
        responses=_AUTH_ERRORS,
        tags=["decisions"],
        summary="Decisions recorded for one execution ticket, newest first",
        dependencies=[Depends(readers)],
    )
    def ticket_decisions(
        ticket_id: str,
        request: Request,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> JSONResponse:
        page = _audit_trail(request).query(
            DecisionQuery(ticket_id=ticket_id, limit=limit, cursor=cursor)
        )
        return JSONResponse(
            {"items": [d.as_dict() for d in page.items], "next_cursor": page.next_cursor}
        )

    @router.get(
        "/v1/audit/export",
        responses={
            **_AUTH_ERRORS,
            200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}},
                              "text/csv": {"schema": {"type": "string"}}},
                  "description": "The export, ending with its signed checkpoint"},
        },
        tags=["audit"],
        response_class=StreamingResponse,
        summary="Stream the trail (JSON lines or CSV), ending with the covering checkpoint",
        dependencies=[Depends(auditors)],
    )
    async def export(
        request: Request,
        format: Literal["jsonl", "csv"] = "jsonl",  # noqa: A002 (the query parameter's name)
        since: datetime | None = None,
        until: datetime | None = None,
        ticket_id: str | None = None,
        plan_id: str | None = None,
        intent_id: str | None = None,
        deploy_id: str | None = None,
        namespace: str | None = None,
        verdict: Verdict | None = None,
        image_digest: str | None = None,
    ) -> StreamingResponse:
        if image_digest is not None:
            image_digest = str(parse_digest(image_digest, field="image_digest"))
        query = DecisionQuery(
            since=since, until=until, ticket_id=ticket_id, plan_id=plan_id,
            intent_id=intent_id, deploy_id=deploy_id, namespace=namespace, verdict=verdict,
            image_digest=image_digest,
        )
        trail = _audit_trail(request)
        # Planning (and signing the covering checkpoint) happens before the status line, so
        # a storage error is still a clean 503; rows are then read batch by batch.
        plan = await run_in_threadpool(trail.plan_export, query)
        stamp = plan.created_at.replace(":", "").replace("-", "")
        return StreamingResponse(
            trail.export(plan, format),
            media_type=_MEDIA_TYPES[format],
            headers={
                "Content-Disposition": f'attachment; filename="gatekeeper-audit-{stamp}.{format}"',
                "X-Gatekeeper-Checkpoint-Seq": str(plan.checkpoint.seq),
            },
        )

    @router.get(
        "/v1/audit/verify",
        responses=_AUTH_ERRORS,
        tags=["audit"],
        response_model=AuditVerification,
        summary="Recompute the hash chain and check the signed checkpoints",
        dependencies=[Depends(auditors)],
    )
    def verify(request: Request, since: datetime | None = None) -> JSONResponse:
        try:
            report = _audit_trail(request).verify(since=since).report
        except IntegrityError as exc:
            return JSONResponse(
                {"verified": False, "record": exc.context.get("record"),
                 "message": f"audit verification FAILED: {exc.message}"}
            )
        return JSONResponse(
            {
                "verified": True, "records": report.records, "first_seq": report.first_seq,
                "last_seq": report.last_seq, "checkpoints": report.checkpoints,
                "last_checkpoint_seq": report.last_checkpoint_seq,
                "uncovered": report.uncovered, "pruned_through": report.pruned_through,
                "notes": report.notes, "message": report.summary(),
            }
        )

    return router
