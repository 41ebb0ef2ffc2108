"""One trace per decision: the spans and attributes the service emits (OTel SDK, in memory),
and the observers (metrics, decision-log sinks) hear every decision and evidence step."""

from collections.abc import Mapping
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gatekeeper.domain import (
    Decision,
    Digest,
    EnforcementMode,
    EvaluationRequest,
    EvidenceContext,
    ImageReference,
    Source,
    Ticket,
    Verdict,
    parse_image_reference,
)
from gatekeeper.domain.ports import EvaluationObserver, EvidenceCollector
from gatekeeper.errors import UpstreamUnavailableError
from gatekeeper.metrics import Metrics
from gatekeeper.service import EvaluationService
from gatekeeper.tracing import build_tracing
from tests.fakes import FakeAuditLog, FakePolicyEngine, violation


class SignatureCollector(EvidenceCollector):
    name = "signatures"

    def collect(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Mapping[str, Any]:
        return {"status": "verified"}


class BrokenScanCollector(EvidenceCollector):
    name = "scan"

    def collect(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Mapping[str, Any]:
        raise UpstreamUnavailableError("ECR unreachable")


def _request(source: Source = Source.PIPELINE) -> EvaluationRequest:
    return EvaluationRequest(
        images=(parse_image_reference("ghcr.io/acme/api:1.4"),),
        source=source, environment="production", namespace="payments",
        ticket=Ticket("INT-7", "PLAN-3", "CHG-1042", "DEP-9"), mode=EnforcementMode.ENFORCE,
    )


def _traced(**kwargs: Any) -> tuple[EvaluationService, InMemorySpanExporter, Metrics]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics = Metrics()
    service = EvaluationService(
        policy_engine=kwargs.pop("engine", FakePolicyEngine([violation("no", policy="registries")])),
        audit_log=FakeAuditLog(), tracer=provider.get_tracer("test"), observers=[metrics],
        **kwargs,
    )
    return service, exporter, metrics


def test_one_trace_per_decision_with_the_ticket_ids_and_verdict() -> None:
    service, exporter, _ = _traced(collectors=[SignatureCollector(), BrokenScanCollector()])
    decision = service.evaluate(_request())
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"gatekeeper.decision", "gatekeeper.evidence.signatures",
                          "gatekeeper.evidence.scan", "gatekeeper.policy.opa",
                          "gatekeeper.audit.write"}
    root = spans["gatekeeper.decision"]
    assert {span.context.trace_id for span in spans.values()} == {root.context.trace_id}
    assert all(span.parent.span_id == root.context.span_id  # type: ignore[union-attr]  # a None parent fails the test
               for name, span in spans.items() if name != "gatekeeper.decision")
    assert root.attributes is not None
    assert {key: root.attributes[key] for key in (
        "intent_id", "plan_id", "ticket_id", "deploy_id", "gatekeeper.decision_id",
        "gatekeeper.verdict", "gatekeeper.source")} == {
        "intent_id": "INT-7", "plan_id": "PLAN-3", "ticket_id": "CHG-1042", "deploy_id": "DEP-9",
        "gatekeeper.decision_id": decision.decision_id, "gatekeeper.verdict": "deny",
        "gatekeeper.source": "pipeline"}
    scan = spans["gatekeeper.evidence.scan"]
    assert scan.status.status_code is trace.StatusCode.ERROR
    assert scan.status.description == "ECR unreachable"
    assert spans["gatekeeper.evidence.signatures"].attributes["gatekeeper.outcome"] == "verified"  # type: ignore[index]  # finished spans carry attributes
    assert spans["gatekeeper.audit.write"].attributes["gatekeeper.decision_id"] == decision.decision_id  # type: ignore[index]  # finished spans carry attributes


def test_a_callers_span_is_the_parent() -> None:
    service, exporter, _ = _traced()
    caller = TracerProvider().get_tracer("pipeline")
    with caller.start_as_current_span("deploy stage") as stage:
        service.evaluate(_request())
    (root,) = [s for s in exporter.get_finished_spans() if s.name == "gatekeeper.decision"]
    assert root.context.trace_id == stage.get_span_context().trace_id
    assert root.parent.span_id == stage.get_span_context().span_id  # type: ignore[union-attr]  # a None parent fails the test


def test_an_engine_failure_marks_the_opa_span() -> None:
    service, exporter, _ = _traced(engine=FakePolicyEngine(error="opa down"))
    assert service.evaluate(_request()).verdict is Verdict.DENY
    (opa,) = [s for s in exporter.get_finished_spans() if s.name == "gatekeeper.policy.opa"]
    assert opa.status.status_code is trace.StatusCode.ERROR


def test_observers_count_every_decision_by_source_and_policy() -> None:
    service, _, metrics = _traced(collectors=[SignatureCollector(), BrokenScanCollector()])
    service.evaluate(_request())
    service.record_rejection(_request(Source.ADMISSION), [violation("bad ref", policy="gatekeeper.input")])
    sample = metrics.registry.get_sample_value
    assert sample("forge_gatekeeper_decisions_total", {"verdict": "deny", "source": "pipeline"}) == 1
    assert sample("forge_gatekeeper_decisions_total", {"verdict": "deny", "source": "admission"}) == 1
    assert sample("gatekeeper_decisions_total", {"verdict": "deny", "source": "admission"}) == 1
    assert sample("forge_gatekeeper_policy_results_total",
                  {"policy": "registries", "kind": "violation"}) == 1
    assert sample("forge_gatekeeper_policy_results_total",
                  {"policy": "gatekeeper.evidence", "kind": "violation"}) == 1
    assert sample("forge_gatekeeper_policy_results_total",
                  {"policy": "gatekeeper.input", "kind": "violation"}) == 1
    assert sample("forge_gatekeeper_evidence_steps_total",
                  {"step": "signatures", "outcome": "verified"}) == 1
    assert sample("forge_gatekeeper_evidence_steps_total", {"step": "scan", "outcome": "error"}) == 1
    assert sample("forge_gatekeeper_evidence_step_duration_seconds_count", {"step": "scan"}) == 1


def test_tracing_is_off_by_default() -> None:
    tracing = build_tracing(None, service_name="x", sample_ratio=1.0, version="0")
    assert not tracing.enabled
    assert isinstance(tracing.tracer, trace.NoOpTracer)


def test_a_failing_observer_never_changes_the_answer(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(EvaluationObserver):
        def evidence_step(self, step: str, outcome: str, seconds: float) -> None:
            raise RuntimeError("disk full")

        def decision_recorded(self, decision: Decision) -> None:
            raise RuntimeError("disk full")

    audit = FakeAuditLog()
    service = EvaluationService(policy_engine=FakePolicyEngine(), audit_log=audit,
                                collectors=[SignatureCollector()], observers=[Broken()])
    decision = service.evaluate(_request())
    assert decision.verdict is Verdict.ALLOW and audit.records == [decision]
    assert f"observer Broken failed on decision {decision.decision_id}" in caplog.text
