"""REST routes for pipelines and auditors: thin (parse -> service -> serialise)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from gatekeeper.api.audit_routes import audit_readiness
from gatekeeper.api.auth import Principal, Role, require_roles
from gatekeeper.api.models import (
    DecisionDocument,
    DecisionList,
    ErrorBody,
    EvaluationBody,
    ManifestEvaluationDocument,
)
from gatekeeper.api.models_records import HealthDocument, ReadinessDocument
from gatekeeper.config import Settings
from gatekeeper.domain import (
    DecisionQuery,
    EvaluationRequest,
    Source,
    Ticket,
    Verdict,
    parse_digest,
    parse_image_reference,
)
from gatekeeper.domain.manifests import parse_manifests
from gatekeeper.domain.ports import HealthCheck, PolicyEngine, SpooledAuditLog
from gatekeeper.errors import GatekeeperError, InvalidInputError
from gatekeeper.manifests import ManifestTarget, evaluate_manifests, manifests_document
from gatekeeper.metrics import Metrics
from gatekeeper.service import EvaluationService
from gatekeeper.usecases import SbomUploads

__all__ = [
    "EVALUATION_ACCESS",
    "Services",
    "build_router",
    "evaluate_manifest_body",
    "evaluation_document",
    "parse_evaluation_body",
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "Body larger than the configured limit"},
    422: {"model": ErrorBody, "description": "Malformed body or image reference"},
    503: {"model": ErrorBody, "description": "Decision could not be recorded"},
}


def parse_evaluation_body(
    body: EvaluationBody, *, default_environment: str, max_images: int, mode: Any,
    caller: str | None = None,
) -> EvaluationRequest:
    """Turn the wire body into a domain request; image errors name ``images[i]``."""
    if not body.images:
        raise InvalidInputError("required (at least one image, or send manifests)", field="images")
    if len(body.images) > max_images:
        raise InvalidInputError(
            f"too many images: {len(body.images)} (at most {max_images})", field="images"
        )
    images = tuple(
        parse_image_reference(text, field=f"images[{index}]")
        for index, text in enumerate(body.images)
    )
    return EvaluationRequest(
        images=images,
        source=Source.PIPELINE,
        environment=body.environment or default_environment,
        namespace=body.namespace,
        ticket=Ticket(**body.ticket.model_dump()),
        mode=mode,
        dry_run=body.dry_run,
        caller=caller,
    )


class Services(Protocol):
    """What these routes need from the composition root (``wiring.Container`` fits): the
    evaluation and SBOM upload use cases, and the components ``/readyz`` asks."""

    @property
    def settings(self) -> Settings: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def service(self) -> EvaluationService: ...

    @property
    def sbom_uploader(self) -> SbomUploads: ...

    @property
    def policy_engine(self) -> PolicyEngine: ...

    @property
    def audit_log(self) -> SpooledAuditLog: ...


def evaluate_manifest_body(
    container: Services, body: EvaluationBody, caller: str | None
) -> dict[str, Any]:
    """``manifests`` instead of ``images``: one recorded decision per workload."""
    if body.images or body.sboms:
        raise InvalidInputError("send either images (with sboms) or manifests, not both",
                                field="manifests")
    assert body.manifests is not None
    settings = container.settings
    target = ManifestTarget(
        environment=body.environment or settings.default_environment,
        namespace=body.namespace, ticket=Ticket(**body.ticket.model_dump()),
        mode=settings.pipeline_mode, dry_run=body.dry_run, caller=caller,
    )
    objects = parse_manifests(body.manifests)
    deadline = time.monotonic() + settings.evidence_budget_seconds
    decisions, others = evaluate_manifests(container.service, objects, target,
                                           deadline=deadline)
    for item in decisions:
        container.metrics.decisions.labels(item.decision.verdict.value,
                                           item.decision.source.value).inc()
    return manifests_document(decisions, others)


def evaluation_document(
    container: Services, body: EvaluationBody, principal: Principal
) -> dict[str, Any]:
    """``POST /v1/evaluations`` once the body is valid and the caller may evaluate: the
    decision (or the manifests' decisions), recorded. Blocking: run it off the event loop.
    Shared by the route and the lean path (:mod:`gatekeeper.api.lean`)."""
    settings = container.settings
    if body.manifests is not None:
        return evaluate_manifest_body(container, body, principal.subject)
    evaluation = parse_evaluation_body(
        body,
        default_environment=settings.default_environment,
        max_images=settings.max_images_per_request,
        mode=settings.pipeline_mode,
        caller=principal.subject,
    )
    container.sbom_uploader.upload_inline(
        [(inline.image, inline.document) for inline in body.sboms], evaluation
    )
    deadline = time.monotonic() + settings.evidence_budget_seconds
    decision = container.service.evaluate(evaluation, deadline=deadline)
    # counted by the metrics observer of the service, like every decision of either door
    return decision.as_dict()


def _container(request: Request) -> Services:
    services: Services = request.app.state.container
    return services


#: Role checks (module level: the annotations below are resolved in this module's globals).
#: ``EVALUATION_ACCESS`` is also the lean path's role check (one dependency, two doors).
EVALUATION_ACCESS = require_roles(Role.PIPELINE)
_READERS = require_roles(Role.PIPELINE, Role.AUDITOR)


def build_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/evaluations",
        response_model=DecisionDocument | ManifestEvaluationDocument,
        responses=_ERRORS,
        tags=["evaluations"],
        summary="Decide whether images, or the workloads of manifests, may be deployed "
        "(records the decisions)",
    )
    def create_evaluation(
        body: EvaluationBody,
        request: Request,
        principal: Annotated[Principal, Depends(EVALUATION_ACCESS)],
    ) -> JSONResponse:
        return JSONResponse(evaluation_document(_container(request), body, principal))

    @router.get(
        "/v1/decisions/{decision_id}",
        response_model=DecisionDocument,
        responses={404: {"model": ErrorBody}},
        tags=["decisions"],
        dependencies=[Depends(_READERS)],
    )
    def get_decision(decision_id: str, request: Request) -> JSONResponse:
        return JSONResponse(_container(request).service.get_decision(decision_id).as_dict())

    @router.get(
        "/v1/decisions", response_model=DecisionList, tags=["decisions"],
        dependencies=[Depends(_READERS)],
    )
    def list_decisions(
        request: Request,
        ticket_id: str | None = None,
        plan_id: str | None = None,
        intent_id: str | None = None,
        deploy_id: str | None = None,
        image_digest: str | None = None,
        verdict: Verdict | None = None,
        namespace: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> JSONResponse:
        if image_digest is not None:
            image_digest = str(parse_digest(image_digest, field="image_digest"))
        page = _container(request).audit_log.query(
            DecisionQuery(
                intent_id=intent_id, plan_id=plan_id, ticket_id=ticket_id, deploy_id=deploy_id,
                image_digest=image_digest, verdict=verdict, namespace=namespace,
                since=since, until=until, limit=limit, cursor=cursor,
            )
        )
        return JSONResponse(
            {"items": [d.as_dict() for d in page.items], "next_cursor": page.next_cursor}
        )

    @router.get("/healthz", tags=["health"], response_model=HealthDocument)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz", tags=["health"], response_model=ReadinessDocument,
        responses={503: {"model": ReadinessDocument, "description": "Not ready, and why"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        container = _container(request)
        failures: dict[str, str] = {}
        checks: dict[str, HealthCheck] = {
            "policy_engine": container.policy_engine,
            "audit_store": container.audit_log,
        }
        for name, component in checks.items():
            try:
                await run_in_threadpool(component.check_health)
            except GatekeeperError as exc:
                failures[name] = exc.message
        blocked = container.audit_log.spool_blocked()
        if blocked is not None:
            failures["audit_spool"] = blocked
        if failures:
            return JSONResponse(
                {
                    "status": "not ready",
                    "message": "not ready: " + ", ".join(sorted(failures)),
                    "failures": failures,
                    **audit_readiness(container.audit_log),
                    "authentication": request.app.state.authenticator.describe(),
                },
                status_code=503,
            )
        revision = container.policy_engine.revision()
        return JSONResponse({
            "status": "ready", "policy_revision": revision,
            **audit_readiness(container.audit_log),
            "authentication": request.app.state.authenticator.describe(),
        })

    return router
