"""Pipelines' ``POST /v1/evaluations`` through the production app (``create_app``) takes the lean
ASGI path (gatekeeper/api/lean.py), not FastAPI's middlewares and router, and answers what the
framework path answers: each request below is sent twice to the same app, once on the lean path
and once with the lean path off (FastAPI's route), and the two answers are compared: status,
headers and body byte for byte (a decision's id and times aside), and the request metrics."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gatekeeper.app import GatekeeperAPI, create_app
from tests.helpers.app import container_of
from tests.helpers.tokens import hs256_token
from tests.helpers.types import MakeSettings

SECRET = "lean-path-test-secret-of-at-least-32-bytes"
DIGEST = "sha256:" + "cd" * 32
ALLOWED = f"registry.example.com/payments/api:1.4@{DIGEST}"
TICKET = {"intent_id": "INT-1", "plan_id": "PLAN-1", "ticket_id": "CHG-1", "deploy_id": "DEP-1"}
GOOD = json.dumps({"images": [ALLOWED], "environment": "development", "ticket": TICKET}).encode()
DENIED = json.dumps({"images": ["nginx"], "environment": "production"}).encode()
LIMIT = 4096
DURATION = "forge_gatekeeper_http_request_duration_seconds"


def bearer(*roles: str, secret: str = SECRET, ttl: int = 600) -> dict[str, str]:
    return {"Authorization": f"Bearer {hs256_token(secret, *roles, subject='ci-bot', ttl=ttl)}"}


PIPELINE = bearer("pipeline")
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def authed(make_settings: MakeSettings) -> Iterator[TestClient]:
    """The production app with HS256 tokens on and a 4 KiB body limit."""
    settings = make_settings(insecure_disable_auth=False, auth_hs256_secret=SECRET,
                             max_body_bytes=LIMIT, max_images_per_request=3)
    with TestClient(create_app(settings)) as client:
        yield client


@contextmanager
def framework_only(client: TestClient) -> Iterator[None]:
    """The app with its lean evaluation path off: FastAPI's route answers."""
    app = client.app
    assert isinstance(app, GatekeeperAPI)
    saved = (app._evaluation_path, app._evaluation_app)
    app.install_evaluation_path(None, None)
    try:
        yield
    finally:
        app.install_evaluation_path(*saved)


def _durations(client: TestClient) -> dict[tuple[str, str, str], float]:
    counts: dict[tuple[str, str, str], float] = {}
    for metric in container_of(client).metrics.registry.collect():
        if metric.name != DURATION:
            continue
        for sample in metric.samples:
            if sample.name == DURATION + "_count":
                labels = sample.labels
                counts[(labels["method"], labels["route"], labels["status"])] = sample.value
    return counts


@dataclass(frozen=True)
class Seen:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    observed: dict[tuple[str, str, str], float]  # request-metric counts that grew

    def json(self) -> Any:
        return json.loads(self.body)


def send(client: TestClient, request: Callable[[TestClient], httpx.Response]) -> Seen:
    before = _durations(client)
    answer = request(client)
    after = _durations(client)
    grown = {key: value - before.get(key, 0) for key, value in after.items()
             if value != before.get(key, 0)}
    return Seen(answer.status_code, answer.headers.multi_items(), answer.content, grown)


def both(client: TestClient, request: Callable[[TestClient], httpx.Response]) -> Seen:
    """The lean path's answer, after checking it is the framework's answer."""
    lean = send(client, request)
    with framework_only(client):
        framework = send(client, request)
    assert lean.status == framework.status
    assert lean.observed == framework.observed
    if lean.status == 200:  # two recorded decisions: the same but for their ids and times
        assert _comparable(lean.json()) == _comparable(framework.json())
        assert _sized(lean) == _sized(framework)
    else:
        assert lean.headers == framework.headers
        assert lean.body == framework.body
    return lean


def _comparable(document: Any) -> Any:
    """``document`` without the ids and times of the decisions in it."""
    if isinstance(document, dict):
        return {key: _comparable(value) for key, value in document.items()
                if key not in {"decision_id", "created_at", "latency_ms"}}
    if isinstance(document, list):
        return [_comparable(item) for item in document]
    return document


def _sized(seen: Seen) -> list[tuple[str, str]]:
    """The headers, the Content-Length checked against the body (a latency may have more
    digits in one of the two decisions)."""
    assert ("content-length", str(len(seen.body))) in seen.headers
    return [(name, value) for name, value in seen.headers if name != "content-length"]


def post(body: bytes | Iterator[bytes], headers: Mapping[str, str] | None = None,
         path: str = "/v1/evaluations") -> Callable[[TestClient], httpx.Response]:
    def request(client: TestClient) -> httpx.Response:
        answer: httpx.Response = client.post(path, content=body, headers=dict(headers or {}))
        return answer
    return request


def test_evaluations_do_not_go_through_the_framework_stack(authed: TestClient) -> None:
    """With FastAPI's stack (middlewares, router) replaced by one that refuses everything,
    pipelines' evaluations are still answered, refusals included; the rest of the app is not."""
    refused: list[str] = []

    async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
        refused.append(scope["path"])
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    authed.app.middleware_stack = refuse  # type: ignore[attr-defined]
    answer = authed.post("/v1/evaluations", content=GOOD, headers={**JSON, **PIPELINE})
    assert answer.status_code == 200, answer.text
    assert answer.json()["verdict"] == "allow"
    assert answer.json()["caller"] == "ci-bot"
    assert authed.post("/v1/evaluations", content=GOOD, headers=JSON).status_code == 401
    assert authed.post("/v1/evaluations", content=GOOD,
                       headers={**JSON, **bearer("auditor")}).status_code == 403
    # what the lean path does not serve goes to the application
    assert authed.get("/v1/evaluations", headers=PIPELINE).status_code == 599
    assert authed.post("/v1/evaluations/", content=GOOD,
                       headers={**JSON, **PIPELINE}).status_code == 599
    assert refused == ["/v1/evaluations", "/v1/evaluations/"]


def test_an_allowed_image_is_the_same_decision(authed: TestClient) -> None:
    seen = both(authed, post(GOOD, {**JSON, **PIPELINE}))
    assert seen.status == 200
    assert seen.json()["verdict"] == "allow" and seen.json()["caller"] == "ci-bot"
    assert ("content-type", "application/json") in seen.headers
    assert seen.observed == {("POST", "/v1/evaluations", "200"): 1}


def test_a_denied_image_is_the_same_decision(authed: TestClient) -> None:
    seen = both(authed, post(DENIED, {**JSON, **PIPELINE}))
    assert seen.status == 200
    assert seen.json()["verdict"] == "deny"
    assert {"policy": "registries", "image": "nginx",
            "message": 'registry "docker.io" is not allowed in environment "production"'
            } in seen.json()["violations"]


def test_manifests_are_the_same_decisions(authed: TestClient) -> None:
    manifest = (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: api, namespace: pay}}\n"
                f"spec: {{containers: [{{name: api, image: '{ALLOWED}'}}]}}\n")
    body = json.dumps({"manifests": manifest, "environment": "development"}).encode()
    seen = both(authed, post(body, {**JSON, **PIPELINE}))
    assert seen.status == 200
    assert [workload["kind"] for workload in seen.json()["workloads"]] == ["Pod"]


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "missing bearer token"),
        (bearer("pipeline", secret="another-secret-of-at-least-32-bytes!"), 401,
         "token signature is not valid"),
        (bearer("pipeline", ttl=-120), 401, "token expired"),
        ({"Authorization": "Basic Y2k6Ym90"}, 401, None),
        (bearer("auditor"), 403, "subject 'ci-bot' lacks the role for this operation: "
                                 "requires pipeline, token grants auditor"),
        (bearer("policy-admin", "vex-publisher"), 403, None),
        (bearer(), 403, "subject 'ci-bot' lacks the role for this operation: requires "
                        "pipeline, token grants no role"),
        (bearer("admin"), 200, None),
        (bearer("pipeline", "auditor"), 200, None),
    ],
    ids=["no-token", "wrong-secret", "expired", "not-bearer", "auditor", "other-roles",
         "no-role", "admin", "pipeline+auditor"],
)
def test_authentication_and_roles_are_the_routes(
    authed: TestClient, headers: dict[str, str], status: int, message: str | None
) -> None:
    seen = both(authed, post(GOOD, {**JSON, **headers}))
    assert seen.status == status
    if status == 200:
        assert seen.json()["verdict"] == "allow"
        return
    kind = "unauthorized" if status == 401 else "forbidden"
    assert seen.json()["error"] == kind
    if message is not None:
        assert seen.json()["message"].startswith(message)
    challenge = dict(seen.headers)["www-authenticate"]
    assert challenge.startswith('Bearer realm="gatekeeper"')
    # a refused token never reaches the route's metrics label (the guard answered 401)
    route = "unmatched" if status == 401 else "/v1/evaluations"
    assert seen.observed == {("POST", route, str(status)): 1}


def test_auth_disabled_evaluates_as_the_route_does(client: TestClient) -> None:
    seen = both(client, post(GOOD, JSON))
    assert seen.status == 200
    assert seen.json()["verdict"] == "allow"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b"{}", "images", "images: required (at least one image, or send manifests)"),
        (b'{"images": ["nginx"], "colour": "red"}', "colour",
         "colour: Extra inputs are not permitted"),
        (b'{"images": ["nginx"], "ticket": {"ticket_id": 7}}', "ticket.ticket_id",
         "ticket.ticket_id: Input should be a valid string"),
        (b'{"images": ["ok", 3, null]}', "images[1]", "images[1]: Input should be a valid string"),
        (b'{"images": []}', "images", "images: List should have at least 1 item after "
                                      "validation, not 0"),
        (b'{"images": ["Not A Reference!"]}', "images[0]", "images[0]: "),
        (b'[1, 2]', "body", "body: Input should be a valid dictionary or object"),
        (b"null", "body", "body: Input should be a valid dictionary or object"),
    ],
    ids=["no-images", "extra", "ticket", "images[1]", "empty", "bad-reference", "array",
         "null"],
)
def test_invalid_bodies_are_the_same_422(
    authed: TestClient, body: bytes, field: str, message: str
) -> None:
    seen = both(authed, post(body, {**JSON, **PIPELINE}))
    assert seen.status == 422
    assert seen.json()["error"] == "invalid_input"
    assert seen.json()["field"] == field
    assert seen.json()["message"].startswith(message)
    assert seen.observed == {("POST", "/v1/evaluations", "422"): 1}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        (b"{not json", "application/json", 422, "[1]"),
        (b'{"images": ["nginx"]', "application/json; charset=utf-8", 422, "[20]"),
        (b"\x80\x81 not text", "application/json", 400, None),
        (GOOD, "text/plain", 422, "body"),
        (GOOD, None, 422, "body"),
        (GOOD, "application/x-www-form-urlencoded", 422, "body"),
        (b"", "application/json", 422, "body"),
        (GOOD, "application/vnd.gatekeeper+json", 200, None),
        (GOOD, "Application/JSON; charset=utf-8", 200, None),
    ],
    ids=["not-json", "truncated", "not-utf8", "text-plain", "no-content-type", "form",
         "empty", "plus-json", "upper-case"],
)
def test_bodies_are_decoded_as_the_route_decodes_them(
    authed: TestClient, body: bytes, content_type: str | None, status: int, field: str | None
) -> None:
    headers = dict(PIPELINE)
    if content_type is not None:
        headers["Content-Type"] = content_type
    seen = both(authed, post(body, headers))
    assert seen.status == status
    if status == 422:
        assert seen.json()["field"] == field
    if status == 400:
        assert seen.json() == {"detail": "There was an error parsing the body"}


def test_bad_json_from_a_caller_without_the_role_is_422_as_before(authed: TestClient) -> None:
    """The route decodes the body before its role check runs: both paths keep that order."""
    seen = both(authed, post(b"{not json", {**JSON, **bearer("auditor")}))
    assert seen.status == 422
    assert seen.json()["message"] == "[1]: JSON decode error"
    invalid = both(authed, post(b"{}", {**JSON, **bearer("auditor")}))
    assert invalid.status == 403  # the role check runs before the body's validation


def test_a_body_over_the_limit_is_the_same_413(authed: TestClient) -> None:
    big = json.dumps({"images": ["nginx"], "namespace": "x" * LIMIT}).encode()
    declared = both(authed, post(big, {**JSON, **PIPELINE}))
    assert declared.status == 413
    assert declared.json() == {"error": "payload_too_large",
                               "message": f"request body is larger than {LIMIT} bytes"}
    assert declared.observed == {("POST", "unmatched", "413"): 1}

    def chunks() -> Iterator[bytes]:  # no Content-Length: only the bytes read tell
        for start in range(0, len(big), 1000):
            yield big[start:start + 1000]

    lean = send(authed, lambda client: client.post(
        "/v1/evaluations", content=chunks(), headers={**JSON, **PIPELINE}))
    with framework_only(authed):
        framework = send(authed, lambda client: client.post(
            "/v1/evaluations", content=chunks(), headers={**JSON, **PIPELINE}))
    assert lean == framework
    assert lean.status == 413


def test_a_token_is_refused_before_a_large_body_is_weighed(authed: TestClient) -> None:
    big = b"x" * (LIMIT * 4)
    seen = both(authed, post(big, JSON))
    assert seen.status == 401


def test_a_control_character_in_the_query_is_the_same_400(authed: TestClient) -> None:
    seen = both(authed, post(GOOD, {**JSON, **PIPELINE}, path="/v1/evaluations?x=%07"))
    assert seen.status == 400
    assert seen.json() == {"error": "invalid_input", "field": "query",
                           "message": "the request query contains the control character U+0007"}
    assert seen.observed == {("POST", "unmatched", "400"): 1}


def test_a_service_failure_is_the_same_answer(authed: TestClient) -> None:
    """A decision that cannot be judged (too many images) is the route's 422, and an
    unexpected exception in the service is Starlette's plain 500, on both paths."""
    many = json.dumps({"images": ["nginx"] * 4}).encode()
    seen = both(authed, post(many, {**JSON, **PIPELINE}))
    assert seen.status == 422
    assert seen.json() == {"error": "invalid_input", "field": "images",
                           "message": "images: too many images: 4 (at most 3)"}

    service = container_of(authed).service

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the service broke")

    original = service.evaluate
    service.evaluate = broken  # type: ignore[method-assign]
    # a client that answers as the server does instead of re-raising the exception
    quiet = TestClient(authed.app, raise_server_exceptions=False)
    try:
        lean = send(quiet, post(GOOD, {**JSON, **PIPELINE}))
        with framework_only(authed):
            framework = send(quiet, post(GOOD, {**JSON, **PIPELINE}))
    finally:
        service.evaluate = original  # type: ignore[method-assign]
    assert lean == framework
    assert lean.status == 500
    assert lean.body == b"Internal Server Error"
    assert ("content-type", "text/plain; charset=utf-8") in lean.headers
    assert lean.observed == {("POST", "/v1/evaluations", "500"): 1}


def test_without_an_authenticator_the_route_fails_closed(authed: TestClient) -> None:
    """An app whose authenticator is missing (a wiring bug) is not served by the lean path:
    FastAPI's route answers, and refuses."""
    app = authed.app
    assert isinstance(app, GatekeeperAPI)
    authenticator = app.state.authenticator
    app.state.authenticator = None
    try:
        answer = authed.post("/v1/evaluations", content=GOOD, headers={**JSON, **PIPELINE})
    finally:
        app.state.authenticator = authenticator
    assert answer.status_code == 401
    assert answer.json() == {"error": "unauthorized",
                             "message": "authentication is not configured on this server"}
