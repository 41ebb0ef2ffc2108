"""The pipeline door for Kubernetes manifests: every workload decided as admission would.

Each pod-bearing object becomes one :class:`~gatekeeper.domain.EvaluationRequest` with the
images of all its container lists (init, regular, ephemeral; each distinct reference once) and
``input.review`` in the admission shape (``operation: CREATE``, the caller as
``userInfo.username``), so the policy sees what the validating webhook will show it when the
same object is created. One decision per workload is recorded; an image reference that cannot
be parsed is a recorded deny naming its field, as in admission.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gatekeeper.domain import (
    Decision,
    EnforcementMode,
    EvaluationRequest,
    ImageReference,
    Source,
    Ticket,
    Verdict,
    Violation,
    parse_image_reference,
)
from gatekeeper.domain.manifests import ManifestObject
from gatekeeper.domain.workload import build_review
from gatekeeper.domain.workload_images import ImageLocation, extract_images
from gatekeeper.errors import InvalidInputError
from gatekeeper.service import INPUT_POLICY, EvaluationService

__all__ = ["ManifestTarget", "WorkloadDecision", "evaluate_manifests", "manifests_document"]


@dataclass(frozen=True, slots=True)
class ManifestTarget:
    """Where the manifests will be deployed, and by whom."""

    environment: str
    namespace: str | None
    ticket: Ticket
    mode: EnforcementMode
    dry_run: bool = False
    caller: str | None = None


@dataclass(frozen=True, slots=True)
class WorkloadDecision:
    workload: ManifestObject
    decision: Decision
    locations: tuple[ImageLocation, ...]

    def messages(self) -> list[str]:
        """The violations addressed to the fields that name their image (as admission does)."""
        lines: list[str] = []
        for violation in self.decision.violations:
            fields = [loc for loc in self.locations if _names(loc, violation.image)]
            if not fields:
                prefix = f"{violation.image}: " if violation.image else ""
                lines.append(f"{prefix}{violation.message}")
            lines.extend(f"{loc.field_path} ({loc.image}): {violation.message}"
                         for loc in fields)
        return list(dict.fromkeys(lines))


def _names(location: ImageLocation, image: str | None) -> bool:
    if image is None:
        return False
    if location.image == image:
        return True
    try:
        return parse_image_reference(location.image).canonical == image
    except InvalidInputError:
        return False


def _request(
    item: ManifestObject, target: ManifestTarget
) -> tuple[EvaluationRequest, tuple[ImageLocation, ...], list[Violation]]:
    where = f"manifests[{item.document}]"
    try:
        locations = extract_images(item.obj, item.kind)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where} ({item.describe()}): {exc.message}",
                                field=f"{where}.{exc.field}") from exc
    references: dict[str, ImageReference] = {}
    invalid: list[Violation] = []
    for location in locations:
        try:
            reference = parse_image_reference(location.image, field=location.field_path)
        except InvalidInputError as exc:
            invalid.append(Violation(
                INPUT_POLICY, f"{location.field_path} ({location.image:.300}): {exc.message}",
                location.image[:300]))
            continue
        references.setdefault(reference.original, reference)
    namespace = item.namespace or target.namespace or ""
    group, version = item.group_version
    review = build_review(
        obj=item.obj, old_object=None, group=group, version=version, kind=item.kind,
        operation="CREATE", namespace=namespace, name=item.name,
        username=target.caller or "", dry_run=target.dry_run, field_prefix=f"{where}.",
    )
    request = EvaluationRequest(
        images=tuple(references.values()),
        source=Source.PIPELINE,
        environment=target.environment,
        namespace=namespace or None,
        ticket=target.ticket,
        mode=target.mode,
        dry_run=target.dry_run,
        caller=target.caller,
        context={"manifest": {"document": item.document, "kind": item.kind,
                              "name": item.name or None, "namespace": namespace or None}},
        review=review,
    )
    return request, locations, invalid


def evaluate_manifests(
    service: EvaluationService,
    objects: Sequence[ManifestObject],
    target: ManifestTarget,
    *,
    deadline: float | None = None,
) -> tuple[list[WorkloadDecision], list[ManifestObject]]:
    """One recorded decision per workload, and the objects that carry no pod spec.

    Every workload is read (and its input built) before the first is evaluated, so malformed
    manifests are refused whole (:class:`InvalidInputError`) and nothing is recorded for them.
    """
    workloads = [item for item in objects if item.is_workload]
    others = [item for item in objects if not item.is_workload]
    if not workloads:
        kinds = ", ".join(sorted({item.kind or "(no kind)" for item in objects})) or "none"
        raise InvalidInputError(
            f"the manifests hold no workload with a pod spec (kinds: {kinds})",
            field="manifests",
        )
    prepared = [(item, *_request(item, target)) for item in workloads]
    decisions: list[WorkloadDecision] = []
    for item, request, locations, invalid in prepared:
        if invalid:
            decision = service.record_rejection(request, invalid)
        else:
            decision = service.evaluate(request, deadline=deadline)
        decisions.append(WorkloadDecision(item, decision, locations))
    return decisions, others


def manifests_document(
    decisions: Sequence[WorkloadDecision], others: Sequence[ManifestObject]
) -> dict[str, Any]:
    """The answer of the pipeline door for manifests: the overall verdict (deny if any
    workload is denied, else warn if any is warned), then one entry per workload."""
    verdicts = {d.decision.verdict for d in decisions}
    verdict = next(v for v in (Verdict.DENY, Verdict.WARN, Verdict.ALLOW)
                   if v in verdicts or v is Verdict.ALLOW)
    return {
        "verdict": verdict.value,
        "allowed": verdict is not Verdict.DENY,
        "workloads": [
            {
                "document": d.workload.document,
                "api_version": d.workload.api_version,
                "kind": d.workload.kind,
                "namespace": d.decision.namespace,
                "name": d.workload.name or None,
                "verdict": d.decision.verdict.value,
                "messages": d.messages(),
                "decision": d.decision.as_dict(),
            }
            for d in decisions
        ],
        "not_evaluated": [
            {"document": o.document, "kind": o.kind or None, "name": o.name or None,
             "reason": f"{o.kind or 'object'} has no pod template"}
            for o in others
        ],
    }
