"""``GET /v1/compliance``: which running workloads the active policy would deny today, and why
(the last background scan; roles auditor and policy-admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from gatekeeper.api.auth import Role, require_roles
from gatekeeper.api.models_records import ComplianceDocument
from gatekeeper.compliance.scanner import ComplianceScanner

__all__ = ["build_compliance_router"]


def build_compliance_router() -> APIRouter:
    router = APIRouter()

    @router.get("/v1/compliance", response_model=ComplianceDocument, tags=["compliance"],
                dependencies=[Depends(require_roles(Role.AUDITOR, Role.POLICY_ADMIN))])
    def compliance(request: Request) -> JSONResponse:
        # a JSONResponse: the answer keeps exactly its keys (the model only documents them)
        return JSONResponse(_answer(request))

    return router


def _answer(request: Request) -> dict[str, Any]:
    scanner: ComplianceScanner | None = getattr(request.app.state, "compliance", None)
    if scanner is None:
        return {"status": "disabled",
                "message": "background compliance is off (setting background_enabled)"}
    snapshot, failure = scanner.snapshot, scanner.last_failure
    if snapshot is None:
        return {"status": "pending", "last_failure": failure,
                "message": "the first background scan has not finished"}
    return {"status": "ready", "last_failure": failure, **snapshot.as_dict()}
