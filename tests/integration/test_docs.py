"""``/docs`` works offline: Swagger UI comes from the package, no external host is named."""

import re

import pytest
from fastapi.testclient import TestClient

from gatekeeper.api.docs import SWAGGER_UI_VERSION
from tests.helpers.types import MakeSettings


def test_docs_page_names_no_external_host_and_its_assets_are_served(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert not re.search(r"(?i)\b(?:https?:)?//[a-z0-9]", html), "the page names an external host"
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert sorted(assets) == [
        "/docs/assets/favicon-32x32.png",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
    ]
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 500
    assert "validatorUrl" in html and '"validatorUrl": null' in html
    assert "url: '/openapi.json'" in html
    bundle = client.get("/docs/assets/swagger-ui-bundle.js").text
    assert f'"{SWAGGER_UI_VERSION}"' in bundle or SWAGGER_UI_VERSION in bundle


def test_docs_and_spec_need_no_token(make_settings: MakeSettings) -> None:
    from fastapi.testclient import TestClient

    from gatekeeper.app import create_app

    settings = make_settings(insecure_disable_auth=False, auth_hs256_secret="x" * 32)
    with TestClient(create_app(settings)) as client:
        assert client.get("/docs").status_code == 200
        assert client.get("/docs/assets/swagger-ui.css").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/v1/decisions").status_code == 401


@pytest.mark.parametrize("path", ["/redoc", "/docs/assets/../../config.py", "/docs/assets/nope.js"])
def test_no_cdn_page_and_no_escape_from_the_assets(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404
