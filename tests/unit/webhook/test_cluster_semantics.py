"""Admission semantics a cluster can live with (issue 11): what the API server and the user see.

Updates that change no image, controller-made children, the validating webhook after the
mutating one, warnings within the API server's limits, dry runs, gate failures per mode, and
network-free rules decided before any registry is asked. Every test runs the async entry point
the routes run.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatekeeper.domain import EnforcementMode, Verdict
from gatekeeper.evidence_cache import EvidenceCache
from gatekeeper.service import EvaluationService
from gatekeeper.webhook.handler import AdmissionHandler
from gatekeeper.webhook.response import MAX_WARNING_CHARS, MAX_WARNINGS_TOTAL_CHARS
from gatekeeper.webhook.review import AdmissionResponse, parse_admission_review
from gatekeeper.webhook.scope import AdmissionSettings
from tests.unit.webhook.fakes import (
    CountingCollector,
    MemoryAuditLog,
    PrefilterPolicyEngine,
    RulePolicyEngine,
    TableDigestResolver,
    build_service,
    digest_of,
)

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "admission"
API = "ghcr.io/acme/api:1.4"
WEB = "ghcr.io/acme/web:2.0"
UNSIGNED = 'no signature from authority "release"'


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ASSETS / f"{name}.json").read_text())
    return document


def answer(handler: AdmissionHandler, document: dict[str, Any], **kwargs: Any
           ) -> AdmissionResponse:
    review = parse_admission_review(json.dumps(document).encode())
    return asyncio.run(handler.handle(review, **kwargs))


def as_update(document: dict[str, Any], change: Any) -> dict[str, Any]:
    """The UPDATE of the object of ``document``: ``change(object)`` applied to a copy."""
    update = copy.deepcopy(document)
    request = update["request"]
    request["operation"] = "UPDATE"
    request["uid"] = request["uid"][:-4] + "beef"
    request["oldObject"] = copy.deepcopy(request["object"])
    change(request["object"])
    return update


def apply_patch(obj: dict[str, Any], response: AdmissionResponse) -> dict[str, Any]:
    patched = copy.deepcopy(obj)
    for op in response.patch:
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = patched
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = op["value"]
    return patched


def as_validating(document: dict[str, Any], mutated: AdmissionResponse,
                  sequence: int = 0) -> dict[str, Any]:
    """The validating review the real API server sends after ``mutated``: a uid of its own (one
    per call, not per admission), the patched object, completed as the registry's
    ``BeforeCreate`` completes it (a generated name, uid, timestamp, status)."""
    review = copy.deepcopy(document)
    request = review["request"]
    request["uid"] = f"00000000-0000-4000-9000-{sequence:012d}"
    obj = apply_patch(request["object"], mutated)
    metadata = obj["metadata"]
    if metadata.get("generateName") and not metadata.get("name"):
        metadata["name"] = f"{metadata['generateName']}x{sequence:04d}"
        request["name"] = metadata["name"]
    metadata.update(uid=f"5e0c0000-0000-4000-8000-{sequence:012d}",
                    creationTimestamp="2026-11-30T08:00:00Z")
    obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    request["object"] = obj
    return review


# -- updates: only new or changed images are evaluated --------------------------------------

def test_label_on_a_pod_admitted_under_an_older_policy_is_admitted_and_recorded() -> None:
    # The policy now denies API, which the running pod carries: relabelling must still work.
    service, audit = build_service(deny={API: UNSIGNED})
    handler = AdmissionHandler(service, AdmissionSettings())
    update = as_update(load("pod-create"),
                       lambda obj: obj["metadata"]["labels"].update({"tier": "gold"}))
    response = answer(handler, update, webhook="validate")
    [decision] = audit.records
    assert (response.allowed, response.code) == (True, 200)
    assert response.message == f"admitted: no image changed (decision {decision.decision_id})"
    assert decision.verdict is Verdict.ALLOW and decision.images == ()
    assert decision.context["admission"]["operation"] == "UPDATE"
    assert decision.context["admission"]["unchanged_images"] == sorted(
        ["busybox:1.36", WEB, API, "ghcr.io/acme/sidecar@sha256:" + "ab" * 32])


def test_scaling_a_replicaset_of_an_older_admission_is_admitted() -> None:
    service, audit = build_service(deny={API: UNSIGNED})
    handler = AdmissionHandler(service, AdmissionSettings())
    update = as_update(load("replicaset-create"),
                       lambda obj: obj["spec"].update({"replicas": 2}))
    mutated = answer(handler, update, webhook="mutate")
    validated = answer(handler, update, webhook="validate")
    assert mutated.allowed and validated.allowed and mutated.patch == ()
    assert len(audit.records) == 1  # one admission, one record
    assert validated.audit_annotations["decision-id"] == audit.records[0].decision_id


def test_set_image_evaluates_only_the_changed_container() -> None:
    service, audit = build_service(deny={"ghcr.io/acme/api:1.5": "critical CVE-2024-1"})
    handler = AdmissionHandler(service, AdmissionSettings())

    def set_image(obj: dict[str, Any]) -> None:
        obj["spec"]["template"]["spec"]["containers"][1]["image"] = "ghcr.io/acme/api:1.5"

    response = answer(handler, as_update(load("deployment-create"), set_image),
                      webhook="validate")
    [decision] = audit.records
    assert [i.reference.original for i in decision.images] == ["ghcr.io/acme/api:1.5"]
    assert (response.allowed, response.code) == (False, 403)
    assert response.message == (
        "spec.template.spec.containers[1].image (ghcr.io/acme/api:1.5): critical CVE-2024-1 "
        f"(decision {decision.decision_id})")


# -- one evaluation and one record per admission --------------------------------------------

def test_validating_webhook_reuses_the_mutating_decision_for_the_pinned_object() -> None:
    service, audit = build_service(warn={WEB: "no SBOM attached"})
    handler = AdmissionHandler(service, AdmissionSettings())
    document = load("deployment-create")
    mutated = answer(handler, document, webhook="mutate")
    validated = answer(handler, as_validating(document, mutated), webhook="validate")
    [decision] = audit.records
    assert mutated.allowed and validated.allowed
    assert mutated.warnings == (
        f"spec.template.spec.containers[0].image ({WEB}): no SBOM attached",)
    # The API server already holds the mutating webhook's warnings for this request.
    assert validated.warnings == ()
    assert validated.message == (
        f"admitted: 4 image(s) evaluated (decision {decision.decision_id}, made by the "
        "mutating webhook)")
    assert validated.audit_annotations["decision-id"] == decision.decision_id


def test_replicas_made_from_one_template_leave_one_record_each() -> None:
    """A ReplicaSet's Pods: ``generateName``, one uid per call, a name given between the calls."""
    service, audit = build_service()
    handler = AdmissionHandler(service, AdmissionSettings())
    document = load("pod-create")
    mutated = [answer(handler, document, webhook="mutate") for _ in range(3)]
    validated = [answer(handler, as_validating(document, response, index), webhook="validate")
                 for index, response in enumerate(mutated)]
    assert len(audit.records) == 3
    assert all(v.allowed and "made by the mutating webhook" in v.message for v in validated)
    assert sorted(v.audit_annotations["decision-id"] for v in validated) == sorted(
        d.decision_id for d in audit.records)


def test_a_validating_review_with_other_facts_is_evaluated_again() -> None:
    """Reuse is keyed on the whole evaluation input: another user, ticket or operation than the
    mutating webhook evaluated means another admission, evaluated and recorded afresh."""
    service, audit = build_service()
    handler = AdmissionHandler(service, AdmissionSettings())
    document = load("deployment-create")
    change: Callable[[dict[str, Any]], object]
    for change in (
        lambda r: r["userInfo"].update(username="mallory"),
        lambda r: r["object"]["metadata"]["annotations"].update(
            {"gatekeeper.forge.dev/ticket-id": "TCK-9"}),
        lambda r: r.update(name="other"),
    ):
        mutated = answer(handler, document, webhook="mutate")
        review = as_validating(document, mutated)
        change(review["request"])
        before = len(audit.records)
        validated = answer(handler, review, webhook="validate")
        assert len(audit.records) == before + 1
        assert "made by the mutating webhook" not in validated.message


def test_an_image_changed_after_the_mutating_webhook_is_evaluated_again() -> None:
    service, audit = build_service(deny={"ghcr.io/acme/evil:1": "not signed"})
    handler = AdmissionHandler(service, AdmissionSettings())
    document = load("deployment-create")
    mutated = answer(handler, document, webhook="mutate")
    patched = apply_patch(document["request"]["object"], mutated)
    patched["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/acme/evil:1"
    document["request"]["object"] = patched  # a later mutating webhook swapped an image
    validated = answer(handler, document, webhook="validate")
    assert len(audit.records) == 2
    assert not validated.allowed and validated.message.startswith(
        "spec.template.spec.containers[0].image (ghcr.io/acme/evil:1): not signed (decision ")


def test_controller_children_reuse_the_evidence_of_the_admitted_parent() -> None:
    collector = CountingCollector()
    resolver = TableDigestResolver()
    audit = MemoryAuditLog()
    service = EvaluationService(
        policy_engine=RulePolicyEngine(), audit_log=audit, collectors=[collector],
        digest_resolver=resolver,
        evidence_cache=EvidenceCache(ttl_seconds=60, max_entries=64))
    handler = AdmissionHandler(service, AdmissionSettings())
    deployment = load("deployment-create")
    mutated = answer(handler, deployment, webhook="mutate")
    assert mutated.allowed and len(collector.calls) == 4 and resolver.calls == 3
    # The ReplicaSet controller creates the pod from the pinned template.
    pod = load("pod-create")
    template = apply_patch(deployment["request"]["object"], mutated)["spec"]["template"]
    pod["request"]["object"]["spec"] = template["spec"]
    child = answer(handler, pod, webhook="mutate")
    assert child.allowed and child.patch == ()
    assert len(collector.calls) == 4 and resolver.calls == 3  # no registry round trip
    assert len(audit.records) == 2  # but decided by the policy and recorded
    assert audit.records[1].images[1].evidence == {
        "signatures": {"status": "verified", "digest": digest_of(WEB)}}


def test_evidence_of_a_denied_parent_is_not_reused() -> None:
    collector = CountingCollector()
    service = EvaluationService(
        policy_engine=RulePolicyEngine(deny={API: UNSIGNED}), audit_log=MemoryAuditLog(),
        collectors=[collector], digest_resolver=TableDigestResolver(),
        evidence_cache=EvidenceCache(ttl_seconds=60, max_entries=64))
    handler = AdmissionHandler(service, AdmissionSettings())
    answer(handler, load("job-create"), webhook="validate")
    answer(handler, load("job-create") | {"request": {
        **load("job-create")["request"], "uid": "00000000-0000-4000-8000-00000000abcd"}},
        webhook="validate")
    assert len(collector.calls) == 2


# -- warnings -------------------------------------------------------------------------------

def test_a_warning_is_given_once_per_image_naming_every_field() -> None:
    document = load("pod-create")
    document["request"]["object"]["spec"]["containers"][0]["image"] = WEB
    document["request"]["object"]["spec"]["containers"][2]["image"] = WEB
    service, _ = build_service(warn={WEB: "no SBOM attached"})
    response = answer(AdmissionHandler(service, AdmissionSettings()), document,
                      webhook="validate")
    assert response.warnings == (
        f"spec.containers[0].image, spec.containers[2].image ({WEB}): no SBOM attached",)


def test_warnings_are_ordered_by_severity() -> None:
    document = load("deployment-create")
    annotations = document["request"]["object"]["metadata"]["annotations"]
    annotations["gatekeeper.forge.dev/ticket-id"] = "has spaces"
    service = EvaluationService(
        policy_engine=RulePolicyEngine(deny={API: UNSIGNED}, warn={"busybox:1.36": "Hub"}),
        audit_log=MemoryAuditLog(),
        digest_resolver=TableDigestResolver(missing=frozenset()))
    response = answer(AdmissionHandler(service, AdmissionSettings()), document,
                      webhook="mutate", path_mode=EnforcementMode.WARN)
    assert response.allowed
    assert response.warnings == (
        f"not enforced (warn mode): spec.template.spec.containers[1].image ({API}): {UNSIGNED}",
        "spec.template.spec.initContainers[0].image (busybox:1.36): Hub",
        "annotation gatekeeper.forge.dev/ticket-id ignored: expected 1 to 256 printable "
        "characters without spaces",
    )


def test_many_warnings_fit_the_api_servers_limits_and_end_with_the_count() -> None:
    document = load("pod-create")
    images = [f"ghcr.io/acme/app{i}:1" for i in range(40)]
    document["request"]["object"]["spec"]["containers"] = [
        {"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    long_warning = "vulnerability CVE-2024-0001 has no fix yet; " * 4
    service, audit = build_service(warn={image: long_warning for image in images})
    response = answer(AdmissionHandler(service, AdmissionSettings()), document,
                      webhook="validate")
    decision_id = audit.records[0].decision_id
    *kept, last = response.warnings
    assert sum(len(w) for w in response.warnings) <= MAX_WARNINGS_TOTAL_CHARS
    assert all(len(w) <= MAX_WARNING_CHARS for w in response.warnings)
    assert last == f"... and {40 - len(kept)} more (decision {decision_id})"
    assert kept[0].startswith("spec.containers[0].image (ghcr.io/acme/app0:1): vulnerability")


# -- dry runs -------------------------------------------------------------------------------

def test_dry_run_is_decided_without_a_record_when_so_configured() -> None:
    service, audit = build_service(deny={API: UNSIGNED})
    handler = AdmissionHandler(service, AdmissionSettings(record_dry_run=False))
    response = answer(handler, load("deployment-dryrun-create"), webhook="validate")
    assert audit.records == []
    assert not response.allowed
    decision_id = response.audit_annotations["decision-id"]
    assert response.message == (
        f"spec.template.spec.containers[1].image ({API}): {UNSIGNED} "
        f"(decision {decision_id}, dry run, not recorded)")
    assert response.audit_annotations["dry-run"] == "true"
    assert response.audit_annotations["recorded"] == "false"


# -- gate failures per mode ----------------------------------------------------------------

def _unreachable_registry() -> tuple[EvaluationService, MemoryAuditLog]:
    audit = MemoryAuditLog()
    service = EvaluationService(
        policy_engine=RulePolicyEngine(), audit_log=audit,
        digest_resolver=TableDigestResolver(missing=frozenset({WEB})))
    return service, audit


def test_warn_namespace_admits_when_the_registry_is_unreachable_and_says_why() -> None:
    service, audit = _unreachable_registry()
    response = answer(AdmissionHandler(service, AdmissionSettings()), load("daemonset-create"),
                      webhook="validate", path_mode=EnforcementMode.WARN)
    [decision] = audit.records
    assert response.allowed and decision.verdict is Verdict.WARN
    assert response.message == (
        "admitted in warn mode with 1 violation(s); evidence could not be gathered, and gate "
        f"failures fail open in warn mode (decision {decision.decision_id})")
    assert response.warnings == (
        f"not enforced (warn mode): spec.template.spec.containers[0].image ({WEB}): digest not "
        f"resolved: registry has no tag for {WEB}",)


def test_warn_namespace_configured_closed_denies_naming_the_mode() -> None:
    service, audit = _unreachable_registry()
    settings = AdmissionSettings(gate_failure_open_modes=frozenset({EnforcementMode.AUDIT}))
    response = answer(AdmissionHandler(service, settings), load("daemonset-create"),
                      webhook="validate", path_mode=EnforcementMode.WARN)
    [decision] = audit.records
    assert not response.allowed and decision.verdict is Verdict.DENY
    assert response.message == (
        "denied in warn mode: evidence could not be gathered, and gate failures fail closed in "
        f"warn mode: spec.template.spec.containers[0].image ({WEB}): digest not resolved: "
        f"registry has no tag for {WEB} (decision {decision.decision_id})")


def test_audit_namespace_out_of_time_admits_naming_the_mode() -> None:
    service, _ = build_service(delay=5.0)
    handler = AdmissionHandler(service, AdmissionSettings(
        budget_seconds=0.3, webhook_timeout_seconds=1.0))
    response = answer(handler, load("daemonset-create"), webhook="validate",
                      path_mode=EnforcementMode.AUDIT)
    handler.close()
    assert response.allowed
    assert response.message.startswith(
        "admitted without a decision (gate failures fail open in audit mode): evaluation of "
        f"spec.template.spec.containers[0].image ({WEB}) did not finish")


# -- network-free rules first -----------------------------------------------------------------

def test_an_image_the_allow_list_denies_is_not_fetched_and_its_reason_comes_first() -> None:
    hub = "busybox:1.36"
    engine = PrefilterPolicyEngine(
        offline={hub: 'registry "docker.io" is not allowed in environment "kubernetes"'},
        deny={hub: "an SBOM is required"})
    collector = CountingCollector()
    resolver = TableDigestResolver()
    audit = MemoryAuditLog()
    service = EvaluationService(policy_engine=engine, audit_log=audit, collectors=[collector],
                                digest_resolver=resolver, prefilter=engine)
    response = answer(AdmissionHandler(service, AdmissionSettings()), load("deployment-create"),
                      webhook="validate")
    [decision] = audit.records
    assert hub not in collector.calls and resolver.calls == 2  # web and api only
    assert response.message == (
        "spec.template.spec.initContainers[0].image (busybox:1.36): registry \"docker.io\" is "
        "not allowed in environment \"kubernetes\"; spec.template.spec.initContainers[0].image "
        f"(busybox:1.36): an SBOM is required (decision {decision.decision_id})")
    skipped = decision.images[0].evidence["signatures"]
    assert skipped["status"] == "skipped" and skipped["reason"].startswith("not gathered: ")


def test_a_prefilter_the_policy_does_not_confirm_still_gathers_the_evidence() -> None:
    class Inconsistent(PrefilterPolicyEngine):
        def evaluate(self, policy_input: Any, evidence: Any = None) -> Any:
            return RulePolicyEngine.evaluate(RulePolicyEngine(), policy_input, evidence)

    engine = Inconsistent(offline={"busybox:1.36": "offline says no"})
    collector = CountingCollector()
    service = EvaluationService(policy_engine=engine, audit_log=MemoryAuditLog(),
                                collectors=[collector], prefilter=engine)
    response = answer(AdmissionHandler(service, AdmissionSettings()),
                      load("deployment-create"), webhook="validate")
    assert response.allowed
    assert "busybox:1.36" in collector.calls  # a skipped image is never admitted unverified
