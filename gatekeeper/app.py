"""The ASGI application: ``create_app(settings)`` builds it; nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from gatekeeper import __version__
from gatekeeper.api.audit_routes import build_audit_router
from gatekeeper.api.auth import Authenticator, Role, install_auth, require_roles
from gatekeeper.api.docs import install_docs
from gatekeeper.api.lean import EvaluationPath
from gatekeeper.api.middleware import (
    BodySizeLimitMiddleware,
    RequestGuardMiddleware,
    RequestMetricsMiddleware,
)
from gatekeeper.api.models import error_document, error_response, hoist_request_definitions
from gatekeeper.api.policy_routes import build_policy_router
from gatekeeper.api.routes import Services, build_router
from gatekeeper.api.sbom_routes import build_sbom_router
from gatekeeper.api.vex_routes import build_vex_router
from gatekeeper.compliance.routes import build_compliance_router
from gatekeeper.compliance.setup import build_background
from gatekeeper.config import Settings
from gatekeeper.domain import EnforcementMode
from gatekeeper.errors import (
    ConfigurationError,
    ConflictError,
    GatekeeperError,
    InvalidInputError,
    NotFoundError,
)
from gatekeeper.webhook import (
    AdmissionHandler,
    AdmissionMetrics,
    AdmissionSettings,
    build_admission_router,
)
from gatekeeper.webhook.asgi import AdmissionPath
from gatekeeper.webhook.reuse import RememberedDecisions
from gatekeeper.webhook.routes import AdmissionEndpoint
from gatekeeper.webhook.tls import AdmissionClientCertificateGate
from gatekeeper.wiring import Container, build_container

__all__ = ["GatekeeperAPI", "create_app", "format_location"]

log = logging.getLogger(__name__)


def format_location(location: Sequence[int | str]) -> str:
    """``("body", "images", 1)`` -> ``images[1]``: the field path a user recognises."""
    parts = list(location)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def _status_for(error: GatekeeperError) -> int:
    if isinstance(error, InvalidInputError):
        return 422
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, ConflictError):
        return 409
    if isinstance(error, ConfigurationError):
        return 500
    return 503


def _error_document(error: GatekeeperError) -> tuple[int, dict[str, Any]]:
    """The status and JSON document a GatekeeperError is answered with (logged when 5xx)."""
    status = _status_for(error)
    if status >= 500:
        log.error("request failed: %s", error.render())
    if isinstance(error, InvalidInputError) and error.field:
        return status, error_document(error.kind, f"{error.field}: {error.message}", error.field)
    return status, error_document(error.kind, error.message)


class GatekeeperAPI(FastAPI):
    """The FastAPI application with two lean paths in front: the API server's
    ``POST /admission/...`` requests are answered by :class:`AdmissionPath` and pipelines'
    ``POST /v1/evaluations`` by :class:`EvaluationPath` (raw ASGI, same answers, a fraction of
    the CPU), everything else by FastAPI as usual."""

    _admission_path: AdmissionPath | None = None
    _admission_app: Any = None  # the path, wrapped for server spans when tracing is on
    _evaluation_path: EvaluationPath | None = None
    _evaluation_app: Any = None

    def install_admission_path(self, path: AdmissionPath, served_by: Any) -> None:
        self._admission_path, self._admission_app = path, served_by

    def install_evaluation_path(self, path: EvaluationPath | None, served_by: Any) -> None:
        """``path`` None: ``POST /v1/evaluations`` through FastAPI again."""
        self._evaluation_path, self._evaluation_app = path, served_by

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = self._admission_path
        if path is not None and path.serves(scope):
            await self._admission_app(scope, receive, send)
            return
        evaluations = self._evaluation_path
        if evaluations is not None and evaluations.serves(scope):
            await self._evaluation_app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


#: What a gate failure does per mode unless GATEKEEPER_ADMISSION_GATE_FAILURE says otherwise.
_GATE_FAILURE_DEFAULTS = {
    EnforcementMode.ENFORCE: "closed",
    EnforcementMode.WARN: "open",
    EnforcementMode.AUDIT: "open",
}


def admission_settings(settings: Settings) -> AdmissionSettings:
    """The webhook's settings (raises ConfigurationError for a budget >= the timeout)."""
    return AdmissionSettings(
        environment=settings.admission_environment or settings.default_environment,
        own_namespace=settings.namespace,
        excluded_namespaces=frozenset(settings.admission_excluded_namespaces),
        default_mode=settings.admission_default_mode,
        namespace_modes=dict(settings.admission_namespace_modes),
        fail_open_namespaces=frozenset(settings.admission_fail_open_namespaces),
        webhook_timeout_seconds=settings.admission_webhook_timeout_seconds,
        budget_seconds=settings.admission_budget_seconds,
        max_review_bytes=settings.admission_max_review_bytes,
        max_workers=settings.admission_max_workers,
        gate_failure_open_modes=frozenset(
            mode for mode, what in {**_GATE_FAILURE_DEFAULTS,
                                    **settings.admission_gate_failure}.items()
            if what == "open"
        ),
        record_dry_run=settings.admission_record_dry_run,
        reuse_ttl_seconds=settings.admission_reuse_ttl_seconds,
        reuse_max_entries=settings.admission_reuse_max_entries,
    )


ADMISSION_PATHS = tuple(
    f"/admission/{webhook}{suffix}"
    for webhook in ("validate", "mutate")
    for suffix in ("", "/enforce", "/warn", "/audit")
)


def create_app(
    settings: Settings,
    *,
    container: Container | None = None,
    decision_reuse: RememberedDecisions | None = None,
) -> FastAPI:
    """Build the API. ``container`` may be given (tests, CLI); it is started and stopped here.
    ``decision_reuse``: where the webhooks hand decisions over (shared by the workers of
    ``serve --workers N``); default: this process's own bounded cache."""
    owned = container or build_container(settings)
    admission = AdmissionHandler(
        owned.service, admission_settings(settings),
        metrics=AdmissionMetrics(
            owned.metrics.registry, budget_seconds=settings.admission_budget_seconds
        ),
        reuse=decision_reuse,
    )
    background = build_background(settings, owned, admission_settings(settings))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(owned.start)
        log.info("gatekeeper ready: policy engine %s", owned.policy_engine_description)
        if background is not None:
            background.start()
        try:
            yield
        finally:
            if background is not None:
                await run_in_threadpool(background.stop)
            admission.close()
            await run_in_threadpool(owned.stop)

    app = GatekeeperAPI(
        title="Forge Gatekeeper",
        version=__version__,
        description="Verify container images, decide with OPA Rego, record every decision.",
        lifespan=lifespan,
        docs_url=None,  # served from bundled assets by install_docs, not from a CDN
        redoc_url=None,
    )
    install_docs(app, title="Forge Gatekeeper")
    owned.tracing.instrument_app(app)
    services: Services = owned  # mypy checks that the container fits what the routes need
    app.state.container = services
    app.state.policy_lifecycle = owned.policy_lifecycle
    app.state.compliance = background.scanner if background is not None else None
    secret = settings.auth_hs256_secret
    install_auth(
        app,
        Authenticator.from_settings(
            hs256_secret=secret.get_secret_value() if secret is not None else None,
            public_key_files=settings.auth_public_key_files,
            jwks_file=settings.auth_jwks_file,
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            insecure_disable_auth=settings.insecure_disable_auth,
        ),
    )
    # The API server's calls take the lean path (below); the routes document them and answer
    # what the lean path leaves (another method, an unknown mode in the path).
    app.include_router(build_admission_router(admission))
    evaluation_router = build_router()
    app.include_router(evaluation_router)
    app.include_router(build_audit_router())
    app.include_router(build_policy_router())
    app.include_router(build_compliance_router())
    app.include_router(
        build_sbom_router(
            lambda request: request.app.state.container.sbom_uploader,
            max_bytes=settings.sbom_max_bytes,
            upload_dependencies=[Depends(require_roles(Role.PIPELINE))],
            read_dependencies=[Depends(require_roles(Role.PIPELINE, Role.AUDITOR))],
        )
    )

    app.include_router(
        build_vex_router(
            lambda request: request.app.state.container.vex_uploader,
            max_bytes=settings.max_body_bytes,
            upload_dependencies=[Depends(require_roles(Role.VEX_PUBLISHER, Role.POLICY_ADMIN))],
        )
    )

    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = hoist_request_definitions(generate_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(GatekeeperError)
    async def gatekeeper_error(_request: Request, exc: GatekeeperError) -> JSONResponse:
        status, document = _error_document(exc)
        return JSONResponse(document, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": format_location(error.get("loc", ())), "message": error.get("msg", "")}
            for error in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return error_response(
            422, "invalid_input", f"{first['field']}: {first['message']}", first["field"],
            errors=errors,
        )

    app.add_middleware(
        BodySizeLimitMiddleware,
        limit=settings.max_body_bytes,
        path_limits={
            "/v1/sboms": settings.sbom_max_bytes,
            **dict.fromkeys(ADMISSION_PATHS, settings.admission_max_review_bytes),
        },
        read_timeout=settings.http_body_timeout_seconds,
    )
    # outside the body limit: the token is checked before a byte of the body is read
    app.add_middleware(RequestGuardMiddleware)
    app.add_middleware(RequestMetricsMiddleware, metrics=owned.metrics)
    if settings.tls_client_ca_file is not None:
        # Only the admission endpoints need the API server's certificate (see webhook/tls.py).
        app.add_middleware(AdmissionClientCertificateGate)
    latency = owned.metrics.request_latency
    lean = AdmissionPath(
        AdmissionEndpoint(admission),
        observe=lambda method, route, status, seconds: latency.labels(
            method, route, str(status)).observe(seconds),
        error_answer=_error_document,
        client_certificate_required=settings.tls_client_ca_file is not None,
        body_limit=settings.admission_max_review_bytes,
        read_timeout=settings.http_body_timeout_seconds,
    )
    app.install_admission_path(lean, owned.tracing.instrument_asgi(lean, lean.span_details))
    evaluations = EvaluationPath(
        app, evaluation_router,
        observe=lambda method, route, status, seconds: latency.labels(
            method, route, str(status)).observe(seconds),
        body_limit=settings.max_body_bytes,
        read_timeout=settings.http_body_timeout_seconds,
    )
    app.install_evaluation_path(
        evaluations, owned.tracing.instrument_asgi(evaluations, evaluations.span_details))
    return app
