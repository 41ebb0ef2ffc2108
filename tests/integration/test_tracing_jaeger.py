"""End to end: a pipeline's ``traceparent`` is continued, and the decision's trace lands in a
real Jaeger (all-in-one, OTLP/HTTP receiver, started by scripts/test-servers) with the ticket
ids, the decision id and the verdict, found through Jaeger's own query API."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from tests.helpers.types import MakeSettings
from tests.integration.test_admission_signatures import deployment_review

OTLP = os.environ.get("GATEKEEPER_TEST_JAEGER_OTLP_URL")
QUERY = os.environ.get("GATEKEEPER_TEST_JAEGER_QUERY_URL")
pytestmark = pytest.mark.skipif(
    not (OTLP and QUERY), reason="GATEKEEPER_TEST_JAEGER_* not set (scripts/test-servers starts Jaeger)"
)
DIGEST = "sha256:" + "78" * 32


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span["tags"]}


def _trace(trace_id: str, service: str, *, need: set[str]) -> dict[str, Any]:
    """The trace as Jaeger stored it, once every span in ``need`` arrived."""
    deadline = time.monotonic() + 30
    last: object = None
    while time.monotonic() < deadline:
        answer = httpx.get(f"{QUERY}/api/traces/{trace_id}", timeout=5)
        if answer.status_code == 200 and answer.json().get("data"):
            found = answer.json()["data"][0]
            names = {span["operationName"] for span in found["spans"]}
            if need <= names:
                decoded: dict[str, Any] = found
                return decoded
            last = names
        time.sleep(0.5)
    pytest.fail(f"trace {trace_id} of {service} not complete in Jaeger (last: {last!r})")


def test_pipeline_trace_is_continued_and_stored_with_the_ticket_ids(make_settings: MakeSettings) -> None:
    service = f"forge-gatekeeper-test-{secrets.token_hex(4)}"
    settings = make_settings(tracing_otlp_endpoint=OTLP, tracing_service_name=service)
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    ticket = {"intent_id": "INT-77", "plan_id": "PLAN-33", "ticket_id": f"CHG-{caller_span[:6]}",
              "deploy_id": "DEP-99"}
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/v1/evaluations",
            json={"images": [f"registry.example.com/pay/api@{DIGEST}"],
                  "environment": "development", "ticket": ticket},
            headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
        )
        assert answer.status_code == 200, answer.text
        decision = answer.json()
    # leaving the client stops the app, which flushes the batch of spans

    stored = _trace(caller_trace, service, need={
        "gatekeeper.decision", "gatekeeper.policy.opa", "gatekeeper.audit.write",
        "gatekeeper.evidence.sbom"})
    spans = {span["operationName"]: span for span in stored["spans"]}
    # (1) the caller's trace continues: the server span's parent is the caller's span
    (server,) = [s for s in stored["spans"] if _tags(s).get("span.kind") == "server"]
    assert server["operationName"] == "POST /v1/evaluations"
    assert [(r["refType"], r["traceID"], r["spanID"]) for r in server["references"]] == [
        ("CHILD_OF", caller_trace, caller_span)]
    # (2) the decision span carries the four ids, the decision id and the verdict
    tags = _tags(spans["gatekeeper.decision"])
    assert {k: tags[k] for k in ("intent_id", "plan_id", "ticket_id", "deploy_id")} == ticket
    assert tags["gatekeeper.decision_id"] == decision["decision_id"]
    assert tags["gatekeeper.verdict"] == decision["verdict"]
    # (3) evidence, OPA and the audit write are its children
    decision_span = spans["gatekeeper.decision"]["spanID"]
    for name in ("gatekeeper.evidence.sbom", "gatekeeper.policy.opa", "gatekeeper.audit.write"):
        assert spans[name]["references"][0]["spanID"] == decision_span, name
    process = stored["processes"][spans["gatekeeper.decision"]["processID"]]
    assert process["serviceName"] == service
    # (4) an operator finds it by ticket id through Jaeger's search
    found = httpx.get(f"{QUERY}/api/traces", params={
        "service": service, "tags": json.dumps({"ticket_id": ticket["ticket_id"]}), "limit": 5,
    }, timeout=5).json()["data"]
    assert [t["traceID"] for t in found] == [caller_trace]


def test_admission_decision_is_a_trace_of_its_own(make_settings: MakeSettings) -> None:
    service = f"forge-gatekeeper-test-{secrets.token_hex(4)}"
    settings = make_settings(tracing_otlp_endpoint=OTLP, tracing_service_name=service)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/admission/validate", json=deployment_review(
            "uid-trace-1", [f"registry.example.com/pay/api@{DIGEST}"]))
        assert answer.status_code == 200
        decision_id = answer.json()["response"]["auditAnnotations"]["decision-id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = httpx.get(f"{QUERY}/api/traces", params={
            "service": service, "operation": "gatekeeper.decision",
            "tags": json.dumps({"gatekeeper.decision_id": decision_id}), "limit": 5,
        }, timeout=5).json()["data"]
        if found:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the admission decision's trace is not in Jaeger")
    (stored,) = found
    decision_span = next(s for s in stored["spans"] if s["operationName"] == "gatekeeper.decision")
    assert _tags(decision_span)["gatekeeper.source"] == "admission"
    # The request itself still has its HTTP server span (the lean admission path is traced).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        served = httpx.get(f"{QUERY}/api/traces", params={
            "service": service, "operation": "POST /admission/validate", "limit": 5,
        }, timeout=5).json()["data"]
        if served:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the admission request's server span is not in Jaeger")
    server_span = next(s for t in served for s in t["spans"]
                       if s["operationName"] == "POST /admission/validate")
    assert _tags(server_span)["span.kind"] == "server"


def test_registry_round_trips_are_spans_of_the_digest_step(make_settings: MakeSettings, tmp_path: Path) -> None:
    from tests.integration.cosign_fixtures import push_image, registry_host, unique_repository

    host = registry_host()
    repository = unique_repository("traced")
    digest = push_image(host, f"{repository}:1.0", "traced", tmp_path)
    service = f"forge-gatekeeper-test-{secrets.token_hex(4)}"
    settings = make_settings(
        tracing_otlp_endpoint=OTLP, tracing_service_name=service, resolve_digests=True,
        registry={"hosts": [{"host": host, "plain_http": True}]})
    caller_trace = secrets.token_hex(16)
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/v1/evaluations",
            json={"images": [f"{host}/{repository}:1.0"], "environment": "development"},
            headers={"traceparent": f"00-{caller_trace}-{secrets.token_hex(8)}-01"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["images"][0]["digest"] == str(digest)
    stored = _trace(caller_trace, service, need={"gatekeeper.evidence.digest", "gatekeeper.decision"})
    step = next(s for s in stored["spans"] if s["operationName"] == "gatekeeper.evidence.digest")
    assert _tags(step)["gatekeeper.outcome"] == "resolved"
    round_trips = [s for s in stored["spans"]
                   if s["references"] and s["references"][0]["spanID"] == step["spanID"]]
    assert round_trips, "no registry round trip under the digest step"
    assert {_tags(s).get("span.kind") for s in round_trips} == {"client"}
    assert any(str(_tags(s).get("http.response.status_code", _tags(s).get("http.status_code")))
               == "200" for s in round_trips)


def test_the_lean_evaluation_path_traces_as_the_framework_route(
    make_settings: MakeSettings,
) -> None:
    """``POST /v1/evaluations`` is answered by the lean path (gatekeeper/api/lean.py); with it
    off, by FastAPI's route. Both continue the caller's trace with the same server span (name,
    kind, route, status), and the decision span is the server span's child on both (the
    request's context reaches the thread pool)."""
    from tests.integration.test_evaluation_lean_path import framework_only

    service = f"forge-gatekeeper-test-{secrets.token_hex(4)}"
    settings = make_settings(tracing_otlp_endpoint=OTLP, tracing_service_name=service)
    callers = {"lean": (secrets.token_hex(16), secrets.token_hex(8)),
               "framework": (secrets.token_hex(16), secrets.token_hex(8))}
    with TestClient(create_app(settings)) as client:
        for path, (trace_id, span_id) in callers.items():
            def evaluate(trace_id: str = trace_id, span_id: str = span_id) -> None:
                answer = client.post(
                    "/v1/evaluations",
                    json={"images": [f"registry.example.com/pay/api@{DIGEST}"],
                          "environment": "development"},
                    headers={"traceparent": f"00-{trace_id}-{span_id}-01"})
                assert answer.status_code == 200, answer.text
            if path == "lean":
                evaluate()
            else:
                with framework_only(client):
                    evaluate()
    seen: dict[str, dict[str, Any]] = {}
    for path, (trace_id, span_id) in callers.items():
        stored = _trace(trace_id, service, need={"gatekeeper.decision"})
        (server,) = [s for s in stored["spans"] if _tags(s).get("span.kind") == "server"]
        assert [(r["refType"], r["traceID"], r["spanID"]) for r in server["references"]] == [
            ("CHILD_OF", trace_id, span_id)], path
        by_id = {span["spanID"]: span for span in stored["spans"]}
        (decision,) = [s for s in stored["spans"] if s["operationName"] == "gatekeeper.decision"]
        ancestors = []
        parent = decision["references"][0]["spanID"] if decision["references"] else None
        while parent in by_id:
            ancestors.append(parent)
            references = by_id[parent]["references"]
            parent = references[0]["spanID"] if references else None
        assert server["spanID"] in ancestors, path
        # every attribute alike but the instrumentation's name (asgi, not fastapi)
        tags = {key: value for key, value in _tags(server).items() if key != "otel.scope.name"}
        seen[path] = {"name": server["operationName"], **tags}
    assert seen["lean"] == seen["framework"]
    assert seen["lean"]["name"] == "POST /v1/evaluations"
    assert seen["lean"]["http.route"] == "/v1/evaluations"
    assert seen["lean"]["http.status_code"] == 200
