"""The admission use case end to end in-process: real EvaluationService, fake ports."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest

from gatekeeper.domain import (
    Decision,
    EnforcementMode,
    EvaluationRequest,
    PolicyResult,
    Ticket,
    Verdict,
    Violation,
)
from gatekeeper.service import EvaluationService
from gatekeeper.webhook.handler import AdmissionHandler, Evaluator
from gatekeeper.webhook.review import AdmissionResponse, AdmissionReview, parse_admission_review
from gatekeeper.webhook.scope import AdmissionSettings
from tests.unit.webhook.fakes import (
    MemoryAuditLog,
    RulePolicyEngine,
    TableDigestResolver,
    build_service,
    digest_of,
)

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "admission"
API = "ghcr.io/acme/api:1.4"
WEB = "ghcr.io/acme/web:2.0"
SIDECAR = "ghcr.io/acme/sidecar@sha256:" + "ab" * 32
UNSIGNED = 'no signature from authority "release"'


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ASSETS / f"{name}.json").read_text())
    return document


def parse(document: dict[str, Any]) -> AdmissionReview:
    return parse_admission_review(json.dumps(document).encode())


def review(name: str) -> AdmissionReview:
    return parse(load(name))


def handler_for(service: EvaluationService, **settings: Any) -> AdmissionHandler:
    return AdmissionHandler(service, AdmissionSettings(**settings))


def answer(handler: AdmissionHandler, review: AdmissionReview, **kwargs: Any) -> AdmissionResponse:
    """The production path: the async entry point the routes await."""
    return asyncio.run(handler.handle(review, **kwargs))


def apply_patch(document: dict[str, Any], ops: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    patched = copy.deepcopy(document)
    for op in ops:
        assert op["op"] == "replace"
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = patched
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = op["value"]
    return patched


def pinned(image: str, name: str) -> str:
    return f"{image}@{digest_of(name)}"


# -- cases as data: every kind, the exact answer ------------------------------------------

CASES = [
    ("deployment-create", False, 403,
     f"spec.template.spec.containers[1].image ({API}): {UNSIGNED}"),
    ("replicaset-create", False, 403,
     f"spec.template.spec.containers[1].image ({API}): {UNSIGNED}"),
    ("pod-create", False, 403, f"spec.containers[1].image ({API}): {UNSIGNED}"),
    ("statefulset-create", False, 403,
     f"spec.template.spec.containers[0].image ({API}): {UNSIGNED}"),
    ("daemonset-create", True, 200, "admitted: 1 image(s) evaluated"),
    ("job-create", False, 403, f"spec.template.spec.containers[0].image ({API}): {UNSIGNED}"),
    ("cronjob-create", False, 403,
     f"spec.jobTemplate.spec.template.spec.containers[1].image ({API}): {UNSIGNED}"),
    ("replicationcontroller-create", True, 200, "admitted: 1 image(s) evaluated"),
    ("podtemplate-create", True, 200, "admitted: 1 image(s) evaluated"),
    ("rollout-create", False, 403,
     f"spec.template.spec.containers[0].image ({API}): {UNSIGNED}"),
    ("deployment-update", True, 200, "admitted: 1 image(s) evaluated, 3 unchanged"),
    ("pod-ephemeralcontainers-update", True, 200, "admitted: 1 image(s) evaluated"),
    ("configmap-create", True, 200, "not evaluated: ConfigMap has no pod template"),
    ("pod-delete", True, 200, "not evaluated: operation DELETE is not governed"),
    ("pod-exec-connect", True, 200, "not evaluated: operation CONNECT is not governed"),
    ("pod-status-update", True, 200, "not evaluated: subresource pods/status is not governed"),
    ("deployment-scale-update", True, 200,
     "not evaluated: subresource deployments/scale is not governed"),
    ("pod-kube-system-create", True, 200, "not evaluated: namespace kube-system is excluded"),
]


@pytest.mark.parametrize(("name", "allowed", "code", "message"), CASES,
                         ids=[case[0] for case in CASES])
@pytest.mark.parametrize("webhook", ["validate", "mutate"])
def test_every_kind_is_answered_with_field_addressed_messages(
    name: str, allowed: bool, code: int, message: str, webhook: Literal["validate", "mutate"]
) -> None:
    service, audit = build_service(deny={API: UNSIGNED})
    document = load(name)
    response = answer(handler_for(service), parse(document), webhook=webhook)
    assert response.uid == document["request"]["uid"]
    assert (response.allowed, response.code) == (allowed, code)
    if message.startswith("not evaluated"):
        assert response.message == message
        assert audit.records == []
        assert response.audit_annotations == {}
    else:
        (decision,) = audit.records
        assert response.message == f"{message} (decision {decision.decision_id})"
        assert response.audit_annotations == {
            "decision-id": decision.decision_id,
            "verdict": decision.verdict.value,
            "mode": "enforce",
        }


def test_several_violations_in_one_message_sorted_by_path() -> None:
    service, audit = build_service(
        deny={API: UNSIGNED, WEB: ["critical CVE-2024-1234", "scan older than 7 days"],
              "busybox:1.36": "registry docker.io is not allowed"})
    response = answer(handler_for(service), review("deployment-create"), webhook="validate")
    decision_id = audit.records[0].decision_id
    assert response.message == (
        f"spec.template.spec.containers[0].image ({WEB}): critical CVE-2024-1234; "
        f"spec.template.spec.containers[0].image ({WEB}): scan older than 7 days; "
        f"spec.template.spec.containers[1].image ({API}): {UNSIGNED}; "
        "spec.template.spec.initContainers[0].image (busybox:1.36): registry docker.io is not "
        f"allowed (decision {decision_id})"
    )


def test_one_image_in_two_containers_is_evaluated_once_and_named_twice() -> None:
    document = load("pod-create")
    document["request"]["object"]["spec"]["containers"][0]["image"] = API
    service, audit = build_service(deny={API: UNSIGNED})
    response = answer(handler_for(service), parse(document), webhook="validate")
    assert [i.reference.original for i in audit.records[0].images].count(API) == 1
    assert response.message.startswith(
        f"spec.containers[0].image ({API}): {UNSIGNED}; spec.containers[1].image ({API}): "
        f"{UNSIGNED} (decision "
    )


class RequestWidePolicy(RulePolicyEngine):
    def evaluate(
        self, policy_input: Mapping[str, Any], evidence: Mapping[str, Any] | None = None
    ) -> PolicyResult:
        result = super().evaluate(policy_input, evidence)
        request_wide = Violation("ticket", "deploy ticket required")
        return PolicyResult((request_wide, *result.violations), result.warnings, "r")


def test_request_wide_findings_come_first() -> None:
    service = EvaluationService(policy_engine=RequestWidePolicy(deny={API: UNSIGNED}),
                                audit_log=MemoryAuditLog(), digest_resolver=TableDigestResolver())
    response = answer(handler_for(service), review("job-create"), webhook="validate")
    assert response.message.startswith(
        "deploy ticket required; spec.template.spec.containers[0].image "
        f"({API}): {UNSIGNED} (decision ")


# -- what is recorded ---------------------------------------------------------------------

def test_decision_records_ticket_namespace_caller_and_admission_context() -> None:
    service, audit = build_service()
    answer(handler_for(service, environment="prod-eu"),
        review("deployment-create"), webhook="validate")
    (decision,) = audit.records
    assert decision.ticket == Ticket("INT-7", "PLAN-12", "TCK-1234", "DEP-99")
    assert decision.namespace == "shop" and decision.environment == "prod-eu"
    assert decision.caller == "kubernetes-admin"
    assert decision.source.value == "admission"
    assert decision.context["admission"] == {
        "webhook": "validate", "uid": "00000000-0000-4000-8000-000000000001",
        "operation": "CREATE", "kind": "Deployment", "group": "apps", "sub_resource": None,
        "name": "shop", "user": "kubernetes-admin", "fail_open": False,
    }
    assert [image.reference.original for image in decision.images] == [
        "busybox:1.36", WEB, API, SIDECAR]


def test_pods_of_a_replicaset_carry_generate_name_and_template_ticket() -> None:
    service, audit = build_service()
    answer(handler_for(service), review("pod-create"), webhook="validate")
    (decision,) = audit.records
    assert decision.context["admission"]["name"] == "shop-7d9f8c6b5d-"
    assert decision.ticket.ticket_id == "TCK-1234"
    assert decision.caller == "system:serviceaccount:kube-system:replicaset-controller"


def test_dry_run_is_evaluated_and_recorded_as_dry_run() -> None:
    service, audit = build_service()
    response = answer(handler_for(service),
        review("deployment-dryrun-create"), webhook="validate")
    assert audit.records[0].dry_run is True
    assert response.audit_annotations["dry-run"] == "true"


def test_ephemeral_containers_subresource_evaluates_only_the_new_container() -> None:
    service, audit = build_service(deny={"ghcr.io/acme/debug:1.0": UNSIGNED})
    response = answer(handler_for(service),
        review("pod-ephemeralcontainers-update"), webhook="validate")
    assert [i.reference.original for i in audit.records[0].images] == ["ghcr.io/acme/debug:1.0"]
    assert response.message.startswith(
        f"spec.ephemeralContainers[0].image (ghcr.io/acme/debug:1.0): {UNSIGNED} (decision ")


# -- modes ------------------------------------------------------------------------------

def test_warn_mode_admits_with_field_addressed_warnings() -> None:
    service, audit = build_service(deny={API: UNSIGNED}, warn={WEB: "no SBOM attached"})
    response = answer(handler_for(service),
        review("deployment-create"), webhook="validate", path_mode=EnforcementMode.WARN)
    decision = audit.records[0]
    assert response.allowed and decision.verdict is Verdict.WARN
    assert response.message == (
        f"admitted in warn mode with 1 violation(s) (decision {decision.decision_id})")
    assert response.warnings == (
        f"not enforced (warn mode): spec.template.spec.containers[1].image ({API}): {UNSIGNED}",
        f"spec.template.spec.containers[0].image ({WEB}): no SBOM attached",
    )


def test_audit_mode_admits_silently_but_keeps_policy_warnings() -> None:
    service, audit = build_service(deny={API: UNSIGNED}, warn={WEB: "no SBOM attached"})
    response = answer(handler_for(service, namespace_modes={"shop": EnforcementMode.AUDIT}),
        review("deployment-create"), webhook="validate")
    assert response.allowed
    assert response.warnings == (
        f"spec.template.spec.containers[0].image ({WEB}): no SBOM attached",)
    assert audit.records[0].violations[0].message == UNSIGNED  # recorded all the same


def test_policy_warnings_ride_along_a_deny() -> None:
    service, _ = build_service(deny={API: UNSIGNED}, warn={"busybox:1.36": "Docker Hub image"})
    response = answer(handler_for(service), review("pod-create"), webhook="validate")
    assert not response.allowed
    assert response.warnings == ("spec.initContainers[0].image (busybox:1.36): Docker Hub image",)


# -- mutation ---------------------------------------------------------------------------

def test_mutation_pins_each_tag_to_the_verified_digest_and_is_idempotent() -> None:
    service, audit = build_service()
    handler = handler_for(service)
    document = load("deployment-create")
    response = answer(handler, parse(document), webhook="mutate")
    assert response.allowed
    assert response.patch == (
        {"op": "replace", "path": "/spec/template/spec/containers/0/image",
         "value": pinned(WEB, "ghcr.io/acme/web:2.0")},
        {"op": "replace", "path": "/spec/template/spec/containers/1/image",
         "value": pinned(API, "ghcr.io/acme/api:1.4")},
        {"op": "replace", "path": "/spec/template/spec/initContainers/0/image",
         "value": pinned("busybox:1.36", "docker.io/library/busybox:1.36")},
    )
    # The digests are the ones the recorded decision verified.
    verified = {i.reference.original: str(i.digest) for i in audit.records[0].images}
    assert verified[WEB] == digest_of("ghcr.io/acme/web:2.0")
    assert verified[SIDECAR] == "sha256:" + "ab" * 32
    # Reinvocation sees the pinned object: no further patch. The API server gives every call a
    # uid of its own, so a reinvoked call cannot be told from a new admission of the same
    # object (a controller's next replica): each mutating call is evaluated and recorded.
    document["request"]["object"] = apply_patch(document["request"]["object"], response.patch)
    document["request"]["uid"] = "00000000-0000-4000-8000-0000000000ff"
    again = answer(handler, parse(document), webhook="mutate")
    assert again.allowed and again.patch == ()
    assert len(audit.records) == 2
    assert again.audit_annotations["decision-id"] == audit.records[1].decision_id
    assert str(audit.records[1].images[1].digest) == digest_of("ghcr.io/acme/web:2.0")


def test_validating_webhook_never_patches() -> None:
    service, _ = build_service()
    response = answer(handler_for(service), review("deployment-create"), webhook="validate")
    assert response.allowed and response.patch == ()


def test_an_image_without_a_verified_digest_is_not_pinned_and_says_so() -> None:
    service = EvaluationService(policy_engine=RulePolicyEngine(), audit_log=MemoryAuditLog())
    response = answer(handler_for(service), review("daemonset-create"), webhook="mutate")
    assert response.allowed and response.patch == ()
    assert response.warnings == (
        f"spec.template.spec.containers[0].image ({WEB}): not pinned, no verified digest",)


# -- malformed objects -------------------------------------------------------------------

def test_unparseable_image_denies_naming_the_field() -> None:
    document = load("deployment-create")
    document["request"]["object"]["spec"]["template"]["spec"]["containers"][2]["image"] = (
        "ghcr.io/Acme/API:1.4")
    service, audit = build_service()
    response = answer(handler_for(service), parse(document), webhook="validate")
    assert (response.allowed, response.code) == (False, 400)
    field_message = (
        "spec.template.spec.containers[2].image (ghcr.io/Acme/API:1.4): invalid image "
        "reference 'ghcr.io/Acme/API:1.4': repository name must be lowercase")
    # The refusal is a recorded deny like every other answer, named in the message.
    [decision] = audit.records
    assert response.message == f"{field_message} (decision {decision.decision_id})"
    assert response.audit_annotations["decision-id"] == decision.decision_id
    assert decision.verdict.value == "deny" and decision.source.value == "admission"
    assert [v.as_dict() for v in decision.violations] == [
        {"policy": "gatekeeper.input", "image": "ghcr.io/Acme/API:1.4", "message": field_message}
    ]
    assert "ghcr.io/Acme/API:1.4" not in [i.reference.original for i in decision.images]


def test_container_without_image_denies() -> None:
    document = load("job-create")
    del document["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"]
    service, _ = build_service()
    response = answer(handler_for(service), parse(document), webhook="validate")
    assert (response.allowed, response.code) == (False, 400)
    assert response.message == (
        "invalid object: spec.template.spec.containers[0].image is missing or not a string")


# -- deadline and failures -----------------------------------------------------------------

def test_hanging_registry_is_denied_within_the_budget_naming_what_did_not_finish() -> None:
    service, audit = build_service(delay=5.0)
    handler = handler_for(service, budget_seconds=0.5, webhook_timeout_seconds=1.0)
    started = time.monotonic()
    response = answer(handler, review("daemonset-create"), webhook="validate")
    elapsed = time.monotonic() - started
    assert elapsed < 0.9
    assert (response.allowed, response.code) == (False, 504)
    reason = (
        f"evaluation of spec.template.spec.containers[0].image ({WEB}) did not finish "
        "(registry, verifier or policy engine) within the admission budget of 0.5s")
    # The answer given at the deadline is itself a recorded deny, named in the answer ...
    [answered] = audit.records
    assert response.message == f"{reason} (decision {answered.decision_id})"
    assert response.audit_annotations == {"decision-id": answered.decision_id}
    assert answered.verdict.value == "deny" and answered.error == reason
    assert [v.as_dict() for v in answered.violations] == [
        {"policy": "gatekeeper.deadline", "image": None, "message": reason}]
    handler.close()  # waits for the evaluation still running
    # ... and the evaluation that finished late names the answer it was too late for.
    late = audit.records[1]
    assert late.context["admission"]["answered_by"] == answered.decision_id


def test_evidence_deadline_leaves_time_to_decide_and_record() -> None:
    # 4 tags, 0.6 s per registry round trip, budget 2 s (evidence stops at 1.6 s): the third
    # lookup starts at 1.2 s, the fourth would start at 1.8 s and is refused by the deadline.
    # One image at a time (evidence_threads=1), as a registry serving one request at a time.
    document = load("pod-create")
    spec = document["request"]["object"]["spec"]
    spec["containers"][2]["image"] = "ghcr.io/acme/extra:3"
    service, audit = build_service(delay=0.6, evidence_threads=1)
    response = answer(handler_for(service, budget_seconds=2.0, webhook_timeout_seconds=3.0),
        parse(document), webhook="validate")
    assert (response.allowed, response.code) == (False, 403)
    assert response.message.startswith(
        "spec.containers[2].image (ghcr.io/acme/extra:3): digest not resolved: deadline reached "
        "before resolving ghcr.io/acme/extra:3 (decision ")
    assert len(audit.records) == 1


def test_fail_open_namespace_admits_on_timeout_with_a_warning() -> None:
    service, _ = build_service(delay=5.0)
    handler = handler_for(service, budget_seconds=0.3, webhook_timeout_seconds=1.0,
                          fail_open_namespaces=frozenset({"shop"}))
    response = answer(handler, review("daemonset-create"), webhook="validate")
    assert response.allowed
    expected = (
        "admitted without a decision (fail-open namespace): evaluation of "
        f"spec.template.spec.containers[0].image ({WEB}) did not finish (registry, verifier or "
        "policy engine) within the admission budget of 0.3s (decision ")
    assert response.message.startswith(expected) and response.warnings == (response.message,)
    decision_id = response.audit_annotations["decision-id"]
    assert response.audit_annotations == {"fail-open": "true", "decision-id": decision_id}
    assert response.message.endswith(f"(decision {decision_id})")
    handler.close()


def test_fail_open_namespace_admits_on_gate_failures_but_not_on_policy_violations() -> None:
    audit = MemoryAuditLog()
    service = EvaluationService(
        policy_engine=RulePolicyEngine(deny={API: UNSIGNED}), audit_log=audit,
        digest_resolver=TableDigestResolver(missing=frozenset({WEB})))
    handler = handler_for(service, fail_open_namespaces=frozenset({"shop"}))
    gate_failure = answer(handler, review("daemonset-create"), webhook="validate")
    decision = audit.records[-1]
    expected = (
        "admitted without a complete decision (fail-open namespace): "
        f"spec.template.spec.containers[0].image ({WEB}): digest not resolved: registry has no "
        f"tag for {WEB} (decision {decision.decision_id}, recorded as deny)")
    assert gate_failure.allowed and gate_failure.message == expected
    assert gate_failure.warnings == (expected,)
    assert gate_failure.audit_annotations == {
        "decision-id": decision.decision_id, "verdict": "deny", "mode": "enforce",
        "fail-open": "true"}
    assert decision.context["admission"]["fail_open"] is True
    # A policy violation is a fact about the image: fail-open does not apply.
    violation = answer(handler, review("job-create"), webhook="validate")
    assert not violation.allowed and violation.code == 403


def test_busy_workers_are_named_when_the_review_cannot_start() -> None:
    service, _ = build_service(delay=2.0)
    handler = handler_for(service, budget_seconds=0.3, webhook_timeout_seconds=1.0,
                          max_workers=1)
    first = threading.Thread(
        target=answer, args=(handler, review("daemonset-create")),
        kwargs={"webhook": "validate"})
    first.start()
    time.sleep(0.05)
    response = answer(handler, review("podtemplate-create"), webhook="validate")
    first.join()
    assert response.message == (
        "evaluation did not start: every admission worker was busy (1 workers) within the "
        f"admission budget of 0.3s (decision {response.audit_annotations['decision-id']})")
    handler.close()


def test_unrecorded_decision_is_not_answered() -> None:
    service, _ = build_service(audit=MemoryAuditLog(fail=True))
    response = answer(handler_for(service), review("daemonset-create"), webhook="validate")
    assert (response.allowed, response.code) == (False, 500)
    assert response.message == (
        "decision could not be recorded, so it is not answered: audit store down")


def test_unexpected_errors_deny_without_leaking_details() -> None:
    class Broken(Evaluator):
        """Every call fails with an error the product does not know."""

        def evaluate(
            self, request: EvaluationRequest, *, deadline: float | None = None, record: bool = True
        ) -> Decision:
            raise RuntimeError("secret internals")

        def record_rejection(
            self, request: EvaluationRequest, violations: Sequence[Violation]
        ) -> Decision:
            raise RuntimeError("secret internals")

        def record_without_evaluation(
            self,
            request: EvaluationRequest,
            *,
            verdict: Verdict,
            violations: Sequence[Violation],
            error: str | None = None,
            record: bool = True,
        ) -> Decision:
            raise RuntimeError("secret internals")

        async def evaluate_warm(
            self, request: EvaluationRequest, *, deadline: float | None = None, record: bool = True
        ) -> Decision | None:
            return None  # not warm: the blocking evaluate (which fails) runs in a worker thread

        async def record_without_evaluation_async(
            self,
            request: EvaluationRequest,
            *,
            verdict: Verdict,
            violations: Sequence[Violation],
            error: str | None = None,
            record: bool = True,
        ) -> Decision:
            raise RuntimeError("secret internals")

    response = answer(AdmissionHandler(Broken(), AdmissionSettings()),
        review("daemonset-create"), webhook="validate")
    assert (response.allowed, response.code) == (False, 500)
    assert response.message == (
        "internal error evaluating review 00000000-0000-4000-8000-000000000005 "
        "(see gatekeeper logs)")


def test_async_entry_point_answers_the_same() -> None:
    service, audit = build_service(deny={API: UNSIGNED})
    handler = handler_for(service)
    response = asyncio.run(handler.handle(review("job-create"), webhook="validate"))
    assert response.message == (
        f"spec.template.spec.containers[0].image ({API}): {UNSIGNED} "
        f"(decision {audit.records[0].decision_id})")


def test_async_hanging_registry_is_cut_at_the_budget() -> None:
    service, _ = build_service(delay=5.0)
    handler = handler_for(service, budget_seconds=0.4, webhook_timeout_seconds=1.0)
    started = time.monotonic()
    response = asyncio.run(handler.handle(review("job-create"), webhook="validate"))
    assert time.monotonic() - started < 0.8
    assert response.code == 504 and "within the admission budget of 0.4s" in response.message
    handler.close()


def test_a_bug_while_reading_the_review_still_answers_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    service, _ = build_service()
    handler = handler_for(service)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr("gatekeeper.webhook.prepare.read_ticket", broken)
    response = answer(handler, review("daemonset-create"), webhook="validate")
    assert (response.allowed, response.code, response.outcome) == (False, 500, "failed")
    assert response.message == (
        "internal error reading review 00000000-0000-4000-8000-000000000005 "
        "(see gatekeeper logs)")
