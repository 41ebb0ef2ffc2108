"""The ASGI application: ``create_app(settings)`` builds it; nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool

from gatekeeper import __version__
from gatekeeper.api.audit_routes import build_audit_router
from gatekeeper.api.auth import Authenticator, Role, install_auth, require_roles
from gatekeeper.api.middleware import (
    BodySizeLimitMiddleware,
    RequestGuardMiddleware,
    RequestMetricsMiddleware,
)
from gatekeeper.api.policy_routes import build_policy_router
from gatekeeper.api.routes import build_router
from gatekeeper.api.sbom_routes import build_sbom_router
from gatekeeper.config import Settings
from gatekeeper.errors import (
    ConfigurationError,
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
from gatekeeper.wiring import Container, build_container

__all__ = ["create_app", "format_location"]

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
    if isinstance(error, ConfigurationError):
        return 500
    return 503


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
    )


ADMISSION_PATHS = tuple(
    f"/admission/{webhook}{suffix}"
    for webhook in ("validate", "mutate")
    for suffix in ("", "/enforce", "/warn", "/audit")
)


def create_app(settings: Settings, *, container: Container | None = None) -> FastAPI:
    """Build the API. ``container`` may be given (tests, CLI); it is started and stopped here."""
    owned = container or build_container(settings)
    admission = AdmissionHandler(
        owned.service, admission_settings(settings),
        metrics=AdmissionMetrics(owned.metrics.registry),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(owned.start)
        log.info("gatekeeper ready: policy engine %s", owned.policy_engine_description)
        try:
            yield
        finally:
            admission.close()
            await run_in_threadpool(owned.stop)

    app = FastAPI(
        title="Forge Gatekeeper",
        version=__version__,
        description="Verify container images, decide with OPA Rego, record every decision.",
        lifespan=lifespan,
    )
    app.state.container = owned
    app.state.policy_lifecycle = owned.policy_lifecycle
    secret = settings.auth_hs256_secret  # a str when it came as a load_settings() override
    install_auth(
        app,
        Authenticator.from_settings(
            hs256_secret=secret.get_secret_value() if isinstance(secret, SecretStr) else secret,
            public_key_files=settings.auth_public_key_files,
            jwks_file=settings.auth_jwks_file,
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            insecure_disable_auth=settings.insecure_disable_auth,
        ),
    )
    app.include_router(build_router())
    app.include_router(build_audit_router())
    app.include_router(build_policy_router())
    app.include_router(build_admission_router(admission))
    app.include_router(
        build_sbom_router(
            lambda request: request.app.state.container.sbom_uploader,
            max_bytes=settings.sbom_max_bytes,
            upload_dependencies=[Depends(require_roles(Role.PIPELINE))],
            read_dependencies=[Depends(require_roles(Role.PIPELINE, Role.AUDITOR))],
        )
    )

    @app.exception_handler(GatekeeperError)
    async def gatekeeper_error(_request: Request, exc: GatekeeperError) -> JSONResponse:
        body: dict[str, Any] = {"error": exc.kind, "message": exc.message}
        if isinstance(exc, InvalidInputError) and exc.field:
            body["field"] = exc.field
            body["message"] = f"{exc.field}: {exc.message}"
        status = _status_for(exc)
        if status >= 500:
            log.error("request failed: %s", exc.render())
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": format_location(error.get("loc", ())), "message": error.get("msg", "")}
            for error in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return JSONResponse(
            {
                "error": "invalid_input",
                "message": f"{first['field']}: {first['message']}",
                "field": first["field"],
                "errors": errors,
            },
            status_code=422,
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
    return app
