"""``/docs``: Swagger UI served from files shipped in the package, never from a CDN.

FastAPI's default page loads Swagger UI from a CDN, so it is blank offline and in air-gapped
clusters. The assets (``static/swagger-ui``, npm ``swagger-ui-dist``, Apache-2.0) are served
under ``/docs/assets``; the online spec validator badge is turned off (it calls out too).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["SWAGGER_UI_VERSION", "install_docs"]

SWAGGER_UI_VERSION = "5.35.0"
_ASSETS = Path(__file__).resolve().parent / "static" / "swagger-ui"
_PREFIX = "/docs/assets"


def install_docs(app: FastAPI, *, title: str) -> None:
    """Serve ``/docs`` (and its OAuth2 redirect page) with the bundled assets.

    The app must be created with ``docs_url=None`` and ``redoc_url=None`` (ReDoc has no
    bundled assets, so it is not offered).
    """
    app.mount(_PREFIX, StaticFiles(directory=_ASSETS), name="swagger-ui-assets")
    redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} - API",
            swagger_js_url=f"{_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{_PREFIX}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
