from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from gatekeeper.domain import (
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
from gatekeeper.domain.ports import EvidenceCollector
from gatekeeper.errors import StorageError, UpstreamUnavailableError
from gatekeeper.service import EvaluationService
from tests.fakes import FakeAuditLog, FakePolicyEngine, violation


def request(
    mode: EnforcementMode = EnforcementMode.ENFORCE, images: Sequence[str] = ("ghcr.io/acme/api:1.4",)
) -> EvaluationRequest:
    return EvaluationRequest(
        images=tuple(parse_image_reference(i) for i in images),
        source=Source.PIPELINE,
        environment="production",
        namespace="payments",
        ticket=Ticket(ticket_id="CHG-1"),
        mode=mode,
    )


@pytest.mark.parametrize(
    ("mode", "violations", "warnings", "verdict"),
    [
        (EnforcementMode.ENFORCE, [], [], Verdict.ALLOW),
        (EnforcementMode.ENFORCE, [], ["w"], Verdict.WARN),
        (EnforcementMode.ENFORCE, ["v"], [], Verdict.DENY),
        (EnforcementMode.WARN, ["v"], [], Verdict.WARN),
        (EnforcementMode.AUDIT, ["v"], [], Verdict.WARN),
        (EnforcementMode.AUDIT, [], [], Verdict.ALLOW),
    ],
)
def test_enforcement_modes(
    mode: EnforcementMode, violations: list[str], warnings: list[str], verdict: Verdict
) -> None:
    engine = FakePolicyEngine([violation(v) for v in violations], [violation(w) for w in warnings])
    audit = FakeAuditLog()
    decision = EvaluationService(policy_engine=engine, audit_log=audit).evaluate(request(mode))
    assert decision.verdict is verdict
    assert decision.allowed is (verdict is not Verdict.DENY)
    assert audit.records == [decision]
    assert [v.message for v in decision.violations] == violations


def test_engine_failure_is_a_recorded_deny_naming_the_reason() -> None:
    audit = FakeAuditLog()
    service = EvaluationService(policy_engine=FakePolicyEngine(error="OPA at x unreachable"), audit_log=audit)
    decision = service.evaluate(request(EnforcementMode.AUDIT))
    assert decision.verdict is Verdict.DENY
    assert decision.error == "policy engine unavailable: OPA at x unreachable"
    assert [v.as_dict() for v in decision.violations] == [
        {"policy": "gatekeeper.engine", "image": None, "message": "policy engine unavailable: OPA at x unreachable"}
    ]
    assert decision.policy_revision is None
    assert audit.records == [decision]


def test_unrecordable_decision_is_not_answered() -> None:
    service = EvaluationService(policy_engine=FakePolicyEngine(), audit_log=FakeAuditLog(fail=True))
    with pytest.raises(StorageError, match="audit store down"):
        service.evaluate(request())


class BrokenCollector(EvidenceCollector):
    name = "signatures"

    def collect(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Mapping[str, Any]:
        raise UpstreamUnavailableError(f"registry {reference.registry} timed out")


class StaticCollector(EvidenceCollector):
    name = "scan"

    def collect(
        self, reference: ImageReference, digest: Digest | None, context: EvidenceContext
    ) -> Mapping[str, Any]:
        return {"status": "complete", "critical": 0}


def test_evidence_failure_denies_even_in_warn_mode() -> None:
    service = EvaluationService(
        policy_engine=FakePolicyEngine(),
        audit_log=FakeAuditLog(),
        collectors=[BrokenCollector(), StaticCollector()],
    )
    decision = service.evaluate(request(EnforcementMode.WARN))
    assert decision.verdict is Verdict.DENY
    assert [v.as_dict() for v in decision.violations] == [
        {
            "policy": "gatekeeper.evidence",
            "image": "ghcr.io/acme/api:1.4",
            "message": "signatures evidence not gathered: registry ghcr.io timed out",
        }
    ]
    evidence = decision.images[0].evidence
    assert evidence == {
        "scan": {"status": "complete", "critical": 0},
        "signatures": {"status": "error", "reason": "registry ghcr.io timed out"},
    }


def test_policy_input_is_built_once_and_stored_with_the_decision() -> None:
    engine = FakePolicyEngine()
    decision = EvaluationService(policy_engine=engine, audit_log=FakeAuditLog()).evaluate(request())
    assert engine.inputs == [decision.policy_input]
    assert decision.policy_input is not None
    assert decision.policy_input["ticket"] == {
        "intent_id": None, "plan_id": None, "ticket_id": "CHG-1", "deploy_id": None,
    }
    assert decision.policy_input["images"][0]["registry"] == "ghcr.io"
