"""Bearer-JWT authentication and role checks (gatekeeper.api.auth) on a real ASGI app."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from gatekeeper.api.auth import Authenticator, Principal, Role, install_auth, require_roles
from gatekeeper.errors import ConfigurationError
from tests.helpers.types import MakeSettings

SECRET = "s" * 40
ISSUER = "https://issuer.example"
AUDIENCE = "gatekeeper"


def token(
    key: str | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = SECRET,
    algorithm: str = "HS256",
    *,
    sub: str | None = "ci-bot",
    roles: Iterable[str] | str | None = ("pipeline",),
    ttl: int = 300,
    headers: dict[str, str] | None = None,
    **claims: object,
) -> str:
    now = int(time.time())
    payload: dict[str, object] = {"sub": sub, "roles": roles if isinstance(roles, str) or roles is None else list(roles), "iat": now, "exp": now + ttl, "iss": ISSUER, "aud": AUDIENCE}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def build(authenticator: Authenticator) -> TestClient:
    app = FastAPI()
    install_auth(app, authenticator)

    @app.get("/pipeline")
    def pipeline(
        principal: Annotated[Principal, Depends(require_roles(Role.PIPELINE))],
    ) -> dict[str, object]:
        return {"subject": principal.subject, "roles": sorted(principal.roles)}

    @app.get("/read", dependencies=[Depends(require_roles(Role.PIPELINE, Role.AUDITOR))])
    def read() -> dict[str, bool]:
        return {"ok": True}

    return TestClient(app)


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture
def hs_client() -> TestClient:
    return build(Authenticator.from_settings(hs256_secret=SECRET, issuer=ISSUER, audience=AUDIENCE))


def get(
    client: TestClient, path: str, bearer: str | None = None, raw: str | None = None
) -> httpx.Response:
    headers = {}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    if raw is not None:
        headers["Authorization"] = raw
    response: httpx.Response = client.get(path, headers=headers)
    return response


def test_valid_hs256_token_gives_principal(hs_client: TestClient) -> None:
    response = get(hs_client, "/pipeline", token(roles=["pipeline", "unknown-role"]))
    assert response.status_code == 200
    assert response.json() == {"subject": "ci-bot", "roles": ["pipeline"]}


def test_missing_token_is_401_with_challenge(hs_client: TestClient) -> None:
    response = get(hs_client, "/pipeline")
    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthorized",
        "message": "missing bearer token: send 'Authorization: Bearer <JWT>'",
    }
    assert response.headers["www-authenticate"] == 'Bearer realm="gatekeeper"'


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Basic abc", "malformed Authorization header: expected 'Bearer <JWT>'"),
        ("Bearer", "malformed Authorization header: expected 'Bearer <JWT>'"),
        ("Bearer not-a-jwt", "token is not a well-formed JWT"),
    ],
)
def test_malformed_headers_are_401(hs_client: TestClient, header: str, message: str) -> None:
    response = get(hs_client, "/pipeline", raw=header)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized", "message": message}
    assert response.headers["www-authenticate"] == 'Bearer realm="gatekeeper", error="invalid_token"'


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "x" * 40}, "token signature is not valid"),
        ({"ttl": -120}, "token expired"),
        ({"iss": "https://evil.example"}, "token issuer is not accepted"),
        ({"aud": "someone-else"}, "token audience is not accepted"),
        ({"sub": None}, "token has no sub claim"),
        ({"exp": None}, "token has no exp claim"),
        ({"nbf": int(time.time()) + 3600}, "token is not valid yet (nbf/iat in the future)"),
    ],
)
def test_bad_tokens_are_401_with_reason(
    hs_client: TestClient, kwargs: dict[str, Any], message: str
) -> None:
    response = get(hs_client, "/pipeline", token(**kwargs))
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized", "message": message}


def test_wrong_role_is_403_naming_roles(hs_client: TestClient) -> None:
    response = get(hs_client, "/pipeline", token(sub="alice", roles=["auditor"]))
    assert response.status_code == 403
    assert response.json() == {
        "error": "forbidden",
        "message": "subject 'alice' lacks the role for this operation: requires pipeline, token grants auditor",
    }
    no_roles = get(hs_client, "/read", token(sub="bob", roles=[]))
    assert no_roles.json()["message"] == (
        "subject 'bob' lacks the role for this operation: requires pipeline or auditor, token grants no role"
    )


def test_admin_passes_every_role_check_and_roles_may_be_a_string(hs_client: TestClient) -> None:
    assert get(hs_client, "/pipeline", token(roles="admin")).status_code == 200
    assert get(hs_client, "/read", token(roles=["admin"])).status_code == 200


def test_rs256_and_es256_public_keys(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> None:
    key_file = tmp_path / "rsa.pem"
    key_file.write_text(pem(rsa_key))
    client = build(Authenticator.from_settings(public_key_files=[key_file], public_keys_pem=[pem(ec_key)]))
    assert get(client, "/pipeline", token(rsa_key, "RS256")).status_code == 200
    assert get(client, "/pipeline", token(ec_key, "ES256")).status_code == 200
    other = ec.generate_private_key(ec.SECP256R1())
    assert get(client, "/pipeline", token(other, "ES256")).json()["message"] == "token signature is not valid"
    # HS256 is refused when no secret is configured; no key family confusion is possible
    refused = get(client, "/pipeline", token(SECRET, "HS256"))
    assert refused.json()["message"] == "token algorithm 'HS256' is not accepted (accepted: ES256, RS256)"


def test_public_key_cannot_be_used_as_hmac_secret(rsa_key: rsa.RSAPrivateKey) -> None:
    client = build(Authenticator.from_settings(hs256_secret=SECRET, public_keys_pem=[pem(rsa_key)]))
    forged = jwt.api_jws.PyJWS().encode(
        json.dumps({"sub": "x", "roles": ["admin"], "exp": int(time.time()) + 60}).encode(),
        SECRET, algorithm="HS256",
    )
    assert get(client, "/pipeline", forged).status_code == 200  # control: real secret works
    # the attacker signs HS256 with the public PEM as secret: only the real secret is tried
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "x", "roles": ["admin"], "exp": int(time.time()) + 60}).encode())
    signature = hmac.new(pem(rsa_key).encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    response = get(client, "/pipeline", f"{head}.{body}.{b64(signature)}")
    assert response.status_code == 401
    assert response.json()["message"] == "token signature is not valid"


def test_jwks_file_with_kid(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> None:
    jwks: dict[str, list[dict[str, str]]] = {"keys": []}
    for kid, key in (("r1", rsa_key), ("e1", ec_key)):
        entry = json.loads(jwt.algorithms.get_default_algorithms()["RS256" if kid == "r1" else "ES256"].to_jwk(key.public_key()))
        entry["kid"] = kid
        jwks["keys"].append(entry)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    client = build(Authenticator.from_settings(jwks_file=path))
    assert get(client, "/pipeline", token(rsa_key, "RS256", headers={"kid": "r1"})).status_code == 200
    assert get(client, "/pipeline", token(ec_key, "ES256", headers={"kid": "e1"})).status_code == 200


def test_disabled_auth_admits_everyone_as_admin_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        authenticator = Authenticator.from_settings(insecure_disable_auth=True)
    assert "AUTHENTICATION IS DISABLED" in caplog.text
    assert authenticator.describe() == "disabled (GATEKEEPER_INSECURE_DISABLE_AUTH=true): every caller is admin"
    response = get(build(authenticator), "/pipeline")
    assert response.json() == {"subject": "anonymous (auth disabled)", "roles": ["admin"]}


def test_tokens_are_never_logged(hs_client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    bad = token(key="y" * 40)
    with caplog.at_level(logging.DEBUG):
        response = get(hs_client, "/pipeline", bad)
    assert response.status_code == 401
    assert bad not in caplog.text and bad not in response.text
    assert bad.split(".")[2] not in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "authentication is on but no token verification key is configured: set "
             "GATEKEEPER_AUTH_HS256_SECRET, GATEKEEPER_AUTH_PUBLIC_KEY_FILES or "
             "GATEKEEPER_AUTH_JWKS_FILE (or GATEKEEPER_INSECURE_DISABLE_AUTH=true for local use)"),
        ({"hs256_secret": "short"}, "auth_hs256_secret: 5 bytes; HS256 needs at least 32 (RFC 7518 section 3.2)"),
        ({"public_keys_pem": ["nope"]}, "public key 0: not a PEM public key"),
        ({"public_key_files": ["/nonexistent/key.pem"]}, "cannot read public key file /nonexistent/key.pem: No such file or directory"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Authenticator.from_settings(**kwargs)
    assert caught.value.message == message


def test_app_without_authenticator_fails_closed() -> None:
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(require_roles(Role.ADMIN))])
    def x() -> dict[str, object]:
        return {}

    response = TestClient(app).get("/x")  # no install_auth: still 401, never 500 nor 200
    assert response.status_code == 401
    assert response.json() == {"detail": "authentication is not configured on this server"}
    assert response.headers["www-authenticate"] == 'Bearer realm="gatekeeper"'


# --- the route role matrix of the real application -------------------------------------------

ROLES = ("pipeline", "auditor", "policy-admin", "exception-approver", "admin")
#: (method, path) -> the roles that pass the role check (the rest get 403)
EXCEPTION_ROUTES = {
    ("GET", "/v1/exceptions"): {"auditor", "policy-admin", "admin"},
    ("GET", "/v1/exceptions/export"): {"auditor", "policy-admin", "admin"},
    ("GET", "/v1/exceptions/EXC-404"): {"auditor", "policy-admin", "admin"},
    ("POST", "/v1/exceptions"): {"policy-admin", "admin"},
    ("POST", "/v1/exceptions/EXC-404/approve"): {"policy-admin", "exception-approver", "admin"},
    ("POST", "/v1/exceptions/EXC-404/revoke"): {"policy-admin", "admin"},
    ("DELETE", "/v1/exceptions/EXC-404"): {"policy-admin", "admin"},
}


@pytest.fixture
def real_app(make_settings: MakeSettings) -> Iterator[TestClient]:
    from gatekeeper.app import create_app

    settings = make_settings(insecure_disable_auth=False, auth_hs256_secret=SECRET)
    with TestClient(create_app(settings)) as client:
        yield client


def test_every_api_route_refuses_a_caller_without_token(real_app: TestClient) -> None:
    paths = {p: ops for p, ops in real_app.get("/openapi.json").json()["paths"].items()
             if p.startswith("/v1/")}
    assert "/v1/exceptions/{exception_id}/approve" in paths
    for template, operations in sorted(paths.items()):
        path = template.replace("{", "").replace("}", "")
        for method in sorted(operations):
            response = real_app.request(method.upper(), path)
            assert response.status_code == 401, (method, template, response.text)


@pytest.mark.parametrize(("method", "path"), sorted(EXCEPTION_ROUTES))
def test_exception_routes_role_matrix(real_app: TestClient, method: str, path: str) -> None:
    allowed = EXCEPTION_ROUTES[(method, path)]
    for role in ROLES:
        bearer = jwt.encode(
            {"sub": f"someone-{role}", "roles": [role], "exp": int(time.time()) + 300},
            SECRET, algorithm="HS256",
        )
        response = real_app.request(method, path, headers={"Authorization": f"Bearer {bearer}"})
        if role in allowed:
            assert response.status_code not in (401, 403), (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            assert response.json()["error"] == "forbidden"


def test_jwks_kid_that_matches_no_key_is_refused_even_if_another_key_verifies(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    entry = json.loads(jwt.algorithms.get_default_algorithms()["RS256"].to_jwk(rsa_key.public_key()))
    entry["kid"] = "r1"
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [entry]}))
    client = build(Authenticator.from_settings(jwks_file=path))
    assert get(client, "/pipeline", token(rsa_key, "RS256", headers={"kid": "r1"})).status_code == 200
    stranger = get(client, "/pipeline", token(rsa_key, "RS256", headers={"kid": "rotated-out"}))
    assert stranger.status_code == 401
    assert stranger.json()["message"] == "token key id 'rotated-out' matches no configured key"
