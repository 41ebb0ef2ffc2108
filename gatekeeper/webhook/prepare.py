"""Reading an AdmissionReview: what is governed, which images to evaluate, in which mode.

Steps (1) to (3) of :mod:`gatekeeper.webhook.handler`; pure (no I/O), so the handler's event
loop runs it directly.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gatekeeper.domain import (
    EnforcementMode,
    EvaluationRequest,
    ImageReference,
    Source,
    Violation,
    parse_image_reference,
)
from gatekeeper.domain.workload import build_review, pod_specs_changed, workload_fingerprint
from gatekeeper.errors import InvalidInputError
from gatekeeper.service import INPUT_POLICY
from gatekeeper.webhook.extraction import (
    CONTAINER_LISTS,
    EPHEMERAL_CONTAINERS,
    extract_images,
    find_pod_specs,
    images_before,
)
from gatekeeper.webhook.response import LocatedImage, build_plain_response, join_message
from gatekeeper.webhook.reuse import AdmissionKey
from gatekeeper.webhook.review import (
    AdmissionRequest,
    AdmissionResponse,
    AdmissionReview,
    Operation,
    WebhookKind,
)
from gatekeeper.webhook.scope import (
    AdmissionSettings,
    is_ephemeral_containers_update,
    read_ticket,
    resolve_mode,
    why_not_governed,
)

__all__ = ["Prepared", "Rejected", "prepare_review"]

#: ``dict`` first: parsed JSON is made of dicts, and ``isinstance`` returns on the exact
#: type before it asks the ``Mapping`` ABC (several times slower, and on every review).
_MAPPINGS = (dict, Mapping)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A governed review, ready to evaluate."""

    uid: str
    namespace: str
    webhook: WebhookKind
    #: Only the images to evaluate (on UPDATE: those ``oldObject`` did not carry).
    request: EvaluationRequest
    images: tuple[LocatedImage, ...]
    warnings: tuple[str, ...]
    #: Image strings of ``oldObject`` (UPDATE), and how many of the object's were among them.
    old_images: frozenset[str]
    unchanged: int
    #: Why a gate failure admits here (fail-open namespace, or the mode's setting), or None.
    fail_open: str | None
    #: False for a dry run when dry runs are not recorded.
    record: bool
    #: The evaluation input besides namespace, mode, dry run and images, as canonical JSON,
    #: without what the API server changes between its mutating and validating calls (the uid
    #: of the call; the name it generates from ``generateName``). See :mod:`..reuse`.
    reuse_facts: str
    #: The pod specs differ from ``oldObject``'s (always True but on UPDATE): the workload
    #: rules are evaluated even when no image changed.
    workload_changed: bool = True
    #: sha256 of the object with its images blanked (decision reuse needs the same workload).
    fingerprint: str = ""

    @property
    def mode(self) -> EnforcementMode:
        return self.request.mode

    def reuse_key(self, images: frozenset[str]) -> AdmissionKey:
        return AdmissionKey(self.namespace, self.mode, self.request.dry_run, images,
                            self.reuse_facts, self.fingerprint)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A review refused before evaluation (malformed image references); recorded as a deny."""

    uid: str
    request: EvaluationRequest
    violations: tuple[Violation, ...]
    message: str


def prepare_review(
    review: AdmissionReview,
    webhook: WebhookKind,
    path_mode: EnforcementMode | None,
    settings: AdmissionSettings,
) -> Prepared | Rejected | AdmissionResponse:
    """Steps (1) to (3) of :mod:`gatekeeper.webhook.handler`: an answer when the review is not
    governed or unreadable, a :class:`Rejected` for malformed images, else a :class:`Prepared`."""
    request = review.request
    if request is None:  # parse_admission_review refuses these; kept for direct callers
        raise InvalidInputError("AdmissionReview has no request", field="request")
    # (1) governed?
    reason = why_not_governed(request, settings)
    if reason is not None:
        return build_plain_response(
            request.uid, allowed=True, code=200, message=f"not evaluated: {reason}",
            outcome="not_evaluated",
        )
    obj = request.object
    if obj is None:
        return build_plain_response(
            request.uid, allowed=False, code=400,
            message=f"{request.operation.value} request carries no object to evaluate",
            outcome="invalid_object",
        )
    kind = request.kind.kind
    if not find_pod_specs(obj, "Pod" if is_ephemeral_containers_update(request) else kind):
        return build_plain_response(
            request.uid, allowed=True, code=200,
            message=f"not evaluated: {kind or 'object'} has no pod template",
            outcome="not_evaluated",
        )
    # (2) images with their paths; on UPDATE, those that are new or changed
    try:
        located, invalid = _locate_images(request)
    except InvalidInputError as exc:
        return build_plain_response(
            request.uid, allowed=False, code=400, message=f"invalid object: {exc.message}",
            outcome="invalid_object",
        )
    if not located and not invalid:
        return build_plain_response(
            request.uid, allowed=True, code=200, message="not evaluated: no images",
            outcome="not_evaluated",
        )
    old_images = _images_before(request)
    changed = tuple(i for i in located if i.location.image not in old_images)
    invalid = [v for v in invalid if v.image not in old_images]
    # (3) mode and ticket
    mode = resolve_mode(settings, request.namespace, path_mode, obj)
    fail_open = settings.fail_open_reason(request.namespace, mode)
    ticket, ticket_warnings = read_ticket(obj)
    try:
        review_input = _review(request, kind)
    except InvalidInputError as exc:
        return build_plain_response(
            request.uid, allowed=False, code=400, message=f"invalid object: {exc.message}",
            outcome="invalid_object",
        )
    references: dict[str, ImageReference] = {}
    for item in changed:
        references.setdefault(item.reference.original, item.reference)
    try:
        evaluation = EvaluationRequest(
            images=tuple(references.values()),
            source=Source.ADMISSION,
            environment=settings.environment,
            namespace=request.namespace or None,
            ticket=ticket,
            mode=mode,
            dry_run=request.dry_run,
            caller=request.user_info.username or None,
            context={"admission": {
                **_admission_context(request, webhook),
                "fail_open": request.namespace in settings.fail_open_namespaces,
                **({"unchanged_images": sorted({i.location.image for i in located
                                                if i.location.image in old_images})}
                   if old_images else {}),
            }},
            gate_failure_admits=fail_open is not None and mode is not EnforcementMode.ENFORCE,
            review=review_input,
        )
    except InvalidInputError as exc:
        # the same limits as the REST API (gatekeeper.domain.fields); such a value cannot
        # be stored, so the answer names the field instead of recording it
        return build_plain_response(
            request.uid, allowed=False, code=400, outcome="invalid_object",
            message=f"invalid request: {exc.message}",
        )
    if invalid:
        message = join_message([v.message for v in invalid], "")
        return Rejected(request.uid, evaluation, tuple(invalid), message)
    return Prepared(
        uid=request.uid, namespace=request.namespace, webhook=webhook, request=evaluation,
        images=changed, warnings=ticket_warnings, old_images=old_images,
        unchanged=len({i.location.image for i in located} & old_images),
        fail_open=fail_open,
        record=settings.record_dry_run or not request.dry_run,
        reuse_facts=_reuse_facts(request, evaluation, old_images),
        workload_changed=(request.operation is not Operation.UPDATE
                          or is_ephemeral_containers_update(request)
                          or pod_specs_changed(obj, request.old_object, kind)),
        fingerprint=workload_fingerprint(obj, kind),
    )


def _review(request: AdmissionRequest, kind: str) -> dict[str, Any]:
    """``input.review``: the AdmissionReview's facts in OPA Gatekeeper's shape."""
    return build_review(
        obj=request.object, old_object=request.old_object, group=request.kind.group,
        version=request.kind.version, kind=kind, operation=request.operation.value,
        namespace=request.namespace, name=request.name, username=request.user_info.username,
        uid=request.user_info.uid, groups=request.user_info.groups, dry_run=request.dry_run,
    )


def _reuse_facts(
    request: AdmissionRequest, evaluation: EvaluationRequest, old_images: frozenset[str]
) -> str:
    """What else an evaluation of this review depends on, the same in both webhooks' calls.

    Everything of ``evaluation`` but the images (keyed apart, as pinned) and the admission
    context's ``uid``, ``webhook`` and ``name``: the API server sends each call its own uid, and
    names a ``generateName`` object between the calls, so such an object is identified by its
    ``generateName`` (the name its mutating review was evaluated with)."""
    admission = dict(evaluation.context.get("admission", {}))
    for volatile in ("uid", "webhook", "name"):
        admission.pop(volatile, None)
    metadata = request.object.get("metadata") if request.object else None
    generate_name = metadata.get("generateName") if isinstance(metadata, _MAPPINGS) else None
    if (isinstance(generate_name, str) and generate_name
            and (not request.name or request.name.startswith(generate_name))):
        identity = {"generate_name": generate_name}
    else:
        identity = {"name": request.name}
    facts = {
        "identity": identity,
        "admission": admission,
        "environment": evaluation.environment,
        "ticket": evaluation.ticket.as_dict(),
        "caller": evaluation.caller,
        "gate_failure_admits": evaluation.gate_failure_admits,
        "old_images": sorted(old_images),
        "other_context": {k: v for k, v in evaluation.context.items() if k != "admission"},
    }
    # a key compared in memory (and between the workers of one node), never stored or hashed
    try:
        return orjson.dumps(facts, default=str,
                            option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # what orjson refuses (an integer over 64 bits): the slower encoder
        return json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)


@functools.lru_cache(maxsize=4096)
def _parse_reference(image: str) -> ImageReference:
    """The parsed reference of ``image`` (immutable, so shared): a workload's images come back
    on every review of its Pods, ReplicaSets and updates. Errors are not cached."""
    return parse_image_reference(image)

def _images_before(request: AdmissionRequest) -> frozenset[str]:
    if request.operation is not Operation.UPDATE:
        return frozenset()
    if is_ephemeral_containers_update(request):
        return images_before(request.old_object, "Pod", (EPHEMERAL_CONTAINERS,))
    return images_before(request.old_object, request.kind.kind, CONTAINER_LISTS)


def _locate_images(
    request: AdmissionRequest,
) -> tuple[tuple[LocatedImage, ...], list[Violation]]:
    assert request.object is not None
    if is_ephemeral_containers_update(request):
        locations = extract_images(
            request.object, "Pod", container_lists=(EPHEMERAL_CONTAINERS,)
        )
    else:
        locations = extract_images(
            request.object, request.kind.kind, container_lists=CONTAINER_LISTS
        )
    located: list[LocatedImage] = []
    invalid: list[Violation] = []
    for location in locations:  # object order: init, regular, ephemeral containers
        try:
            try:
                reference = _parse_reference(location.image)
            except InvalidInputError:  # again, for the message naming the field
                reference = parse_image_reference(location.image, field=location.field_path)
        except InvalidInputError as exc:
            invalid.append(
                Violation(
                    INPUT_POLICY,
                    f"{location.field_path} ({location.image:.300}): {exc.message}",
                    location.image[:300],
                )
            )
            continue
        located.append(LocatedImage(location, reference))
    return tuple(located), invalid


def _admission_context(request: AdmissionRequest, webhook: WebhookKind) -> Mapping[str, Any]:
    """The request facts given to the policy (``input.context.admission``) and the audit."""
    metadata = request.object.get("metadata") if request.object else None
    name = request.name
    if not name and isinstance(metadata, _MAPPINGS):
        generate_name = metadata.get("generateName")
        name = generate_name if isinstance(generate_name, str) else ""
    return {
        "webhook": webhook,
        "uid": request.uid,
        "operation": request.operation.value,
        "kind": request.kind.kind,
        "group": request.kind.group,
        "sub_resource": request.sub_resource or None,
        "name": name or None,
        "user": request.user_info.username or None,
    }
