"""The admission use case: review in, answer out, within the time budget.

(1) Decide whether the review is governed at all (operation, namespace, subresource, kind).
(2) Extract every image with its path and parse it; a malformed one denies, addressed to its field.
(3) Resolve the enforcement mode and the ticket ids.
(4) Evaluate in a worker thread with the evidence deadline set ``reserve`` before the budget
    ends, so collectors stop starting network steps while there is still time to run the policy
    and record the decision.
(5) Wait at most until the budget ends. A review that is not answered by then is denied (or
    admitted in a fail-open namespace) with a message naming what did not finish and the time
    it had, instead of the API server's generic "context deadline exceeded".
(6) Render the decision: field-addressed messages, warnings, audit annotations, and (mutating
    webhook) the JSONPatch pinning each tag to its verified digest.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from typing import Any, Protocol

from gatekeeper.domain import (
    Decision,
    EnforcementMode,
    EvaluationRequest,
    ImageReference,
    Source,
    Verdict,
    Violation,
    parse_image_reference,
)
from gatekeeper.errors import GatekeeperError, InvalidInputError, StorageError
from gatekeeper.service import DEADLINE_POLICY, ENGINE_POLICY, EVIDENCE_POLICY, INPUT_POLICY
from gatekeeper.webhook.extraction import (
    CONTAINER_LISTS,
    EPHEMERAL_CONTAINERS,
    extract_images,
    find_pod_specs,
)
from gatekeeper.webhook.metrics import AdmissionMetrics
from gatekeeper.webhook.response import (
    LocatedImage,
    address_findings,
    build_decision_response,
    build_plain_response,
    join_message,
)
from gatekeeper.webhook.review import (
    AdmissionRequest,
    AdmissionResponse,
    AdmissionReview,
    WebhookKind,
)
from gatekeeper.webhook.scope import (
    AdmissionSettings,
    is_ephemeral_containers_update,
    read_ticket,
    resolve_mode,
    why_not_governed,
)

__all__ = ["AdmissionHandler", "Evaluator"]

log = logging.getLogger(__name__)

#: Violations the gatekeeper raises itself when it could not gather evidence or run the policy:
#: failures of the gate, not facts about the image, so a fail-open namespace admits on them.
_GATE_FAILURES = frozenset({EVIDENCE_POLICY, ENGINE_POLICY})

#: Share of the budget kept for the policy engine and the audit write after evidence stops
#: (capped at 1 s): the evidence deadline handed to the service is ``budget - reserve``.
_RESERVE_SHARE = 0.2
_RESERVE_MAX_SECONDS = 1.0


class Evaluator(Protocol):
    """What the webhook needs from :class:`gatekeeper.service.EvaluationService`."""

    def evaluate(self, request: EvaluationRequest, *, deadline: float | None = None) -> Decision:
        ...

    def record_rejection(
        self, request: EvaluationRequest, violations: Sequence[Violation]
    ) -> Decision:
        ...

    def record_without_evaluation(
        self,
        request: EvaluationRequest,
        *,
        verdict: Verdict,
        violations: Sequence[Violation],
        error: str | None = None,
    ) -> Decision:
        ...


@dataclass(frozen=True, slots=True)
class _Prepared:
    uid: str
    namespace: str
    request: EvaluationRequest
    images: tuple[LocatedImage, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Rejected:
    """A review refused before evaluation (malformed image references); recorded as a deny."""

    uid: str
    request: EvaluationRequest
    violations: tuple[Violation, ...]
    message: str


class AdmissionHandler:
    """Answers AdmissionReviews with the shared :class:`Evaluator`; thread-safe."""

    def __init__(
        self,
        evaluator: Evaluator,
        settings: AdmissionSettings,
        *,
        metrics: AdmissionMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._evaluator = evaluator
        self.settings = settings
        self.metrics = metrics
        self._monotonic = monotonic
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_workers, thread_name_prefix="gatekeeper-admission"
        )

    def close(self) -> None:
        """Stop accepting work; wait for evaluations already running, so that their decisions
        (late ones included) are recorded before shutdown. Queued ones are cancelled."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- entry points ---------------------------------------------------------------------

    async def handle(
        self,
        review: AdmissionReview,
        *,
        webhook: WebhookKind,
        path_mode: EnforcementMode | None = None,
        received_at: float | None = None,
    ) -> AdmissionResponse:
        """Answer ``review`` (async: the event loop is never blocked by an evaluation)."""
        started = self._monotonic() if received_at is None else received_at
        response = await self._answer_async(review, webhook, path_mode, started)
        self._observe(webhook, response, started)
        return response

    async def _answer_async(
        self,
        review: AdmissionReview,
        webhook: WebhookKind,
        path_mode: EnforcementMode | None,
        started: float,
    ) -> AdmissionResponse:
        prepared = self._prepare_safely(review, webhook, path_mode)
        if isinstance(prepared, AdmissionResponse):
            return prepared
        if isinstance(prepared, _Rejected):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, self._reject, prepared)
        future = self._submit(prepared, started)
        remaining = max(0.0, started + self.settings.budget_seconds - self._monotonic())
        try:
            decision = await asyncio.wait_for(asyncio.wrap_future(future), timeout=remaining)
        except TimeoutError:
            return self._out_of_time(prepared, future)
        except Exception as exc:  # every failure must become an answer
            return self._failed(prepared, exc)
        return self._render(prepared, decision, webhook)

    def handle_sync(
        self,
        review: AdmissionReview,
        *,
        webhook: WebhookKind,
        path_mode: EnforcementMode | None = None,
        received_at: float | None = None,
    ) -> AdmissionResponse:
        """Blocking twin of :meth:`handle` (CLI, tests, non-async servers)."""
        started = self._monotonic() if received_at is None else received_at
        response = self._answer_sync(review, webhook, path_mode, started)
        self._observe(webhook, response, started)
        return response

    def _answer_sync(
        self,
        review: AdmissionReview,
        webhook: WebhookKind,
        path_mode: EnforcementMode | None,
        started: float,
    ) -> AdmissionResponse:
        prepared = self._prepare_safely(review, webhook, path_mode)
        if isinstance(prepared, AdmissionResponse):
            return prepared
        if isinstance(prepared, _Rejected):
            return self._reject(prepared)
        future = self._submit(prepared, started)
        remaining = max(0.0, started + self.settings.budget_seconds - self._monotonic())
        try:
            decision = future.result(timeout=remaining)
        except FutureTimeoutError:
            return self._out_of_time(prepared, future)
        except Exception as exc:  # every failure must become an answer
            return self._failed(prepared, exc)
        return self._render(prepared, decision, webhook)

    def _observe(self, webhook: WebhookKind, response: AdmissionResponse, started: float) -> None:
        if self.metrics is not None:
            self.metrics.observe(webhook, response.outcome, self._monotonic() - started)

    # -- steps ----------------------------------------------------------------------------

    def _prepare_safely(
        self, review: AdmissionReview, webhook: WebhookKind, path_mode: EnforcementMode | None
    ) -> _Prepared | _Rejected | AdmissionResponse:
        try:
            return self._prepare(review, webhook, path_mode)
        except Exception:  # a bug here must still answer the API server, closed
            uid = review.request.uid if review.request else ""
            log.exception("admission uid=%s: unexpected error preparing the review", uid)
            return build_plain_response(
                uid, allowed=False, code=500, outcome="failed",
                message=f"internal error reading review {uid} (see gatekeeper logs)",
            )

    def _prepare(
        self, review: AdmissionReview, webhook: WebhookKind, path_mode: EnforcementMode | None
    ) -> _Prepared | _Rejected | AdmissionResponse:
        request = review.request
        if request is None:  # parse_admission_review refuses these; kept for direct callers
            raise InvalidInputError("AdmissionReview has no request", field="request")
        # (1) governed?
        reason = why_not_governed(request, self.settings)
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
        # (2) images with their paths
        try:
            located, invalid = self._locate_images(request)
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
        # (3) mode and ticket
        mode = resolve_mode(self.settings, request.namespace, path_mode, obj)
        ticket, ticket_warnings = read_ticket(obj)
        references: dict[str, ImageReference] = {}
        for item in located:
            references.setdefault(item.reference.original, item.reference)
        try:
            evaluation = EvaluationRequest(
                images=tuple(references.values()),
                source=Source.ADMISSION,
                environment=self.settings.environment,
                namespace=request.namespace or None,
                ticket=ticket,
                mode=mode,
                dry_run=request.dry_run,
                caller=request.user_info.username or None,
                context={"admission": {
                    **_admission_context(request, webhook),
                    "fail_open": request.namespace in self.settings.fail_open_namespaces,
                }},
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
            return _Rejected(request.uid, evaluation, tuple(invalid), message)
        return _Prepared(request.uid, request.namespace, evaluation, located, ticket_warnings)

    def _reject(self, rejected: _Rejected) -> AdmissionResponse:
        """Record the refusal (every answer is in the trail), then answer 400 naming the fields."""
        try:
            decision = self._evaluator.record_rejection(rejected.request, rejected.violations)
        except GatekeeperError as exc:
            log.error("admission uid=%s: rejection not recorded: %s", rejected.uid, exc.render())
            return build_plain_response(
                rejected.uid, allowed=False, code=503, outcome="failed",
                message=f"{rejected.message} (and the decision could not be recorded: "
                f"{exc.message})",
            )
        return build_plain_response(
            rejected.uid, allowed=False, code=400,
            message=f"{rejected.message} (decision {decision.decision_id})",
            outcome="invalid_object",
            annotations={"decision-id": decision.decision_id, "verdict": "deny"},
        )

    def _locate_images(
        self, request: AdmissionRequest
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

    def _submit(self, prepared: _Prepared, started: float) -> Future[Decision]:
        budget = self.settings.budget_seconds
        reserve = min(_RESERVE_MAX_SECONDS, budget * _RESERVE_SHARE)
        evidence_deadline = started + budget - reserve
        return self._executor.submit(
            self._evaluator.evaluate, prepared.request, deadline=evidence_deadline
        )

    def _render(
        self, prepared: _Prepared, decision: Decision, webhook: WebhookKind
    ) -> AdmissionResponse:
        # (6)
        if (
            not decision.allowed
            and prepared.namespace in self.settings.fail_open_namespaces
            and decision.violations
            and all(v.policy in _GATE_FAILURES for v in decision.violations)
        ):
            return self._fail_open_decision(prepared, decision)
        response = build_decision_response(
            prepared.uid,
            decision,
            prepared.images,
            mutate=webhook == "mutate",
            extra_warnings=prepared.warnings,
        )
        if not response.allowed:
            log.info(
                "admission denied uid=%s namespace=%s decision=%s: %s",
                prepared.uid, prepared.namespace, decision.decision_id, response.message,
            )
        return response

    def _fail_open_decision(self, prepared: _Prepared, decision: Decision) -> AdmissionResponse:
        """The gate failed (deadline, registry, policy engine) in a fail-open namespace."""
        lines = address_findings(decision.violations, prepared.images)
        message = join_message(
            lines, f" (decision {decision.decision_id}, recorded as {decision.verdict.value})"
        )
        warning = f"admitted without a complete decision (fail-open namespace): {message}"
        log.warning("FAIL-OPEN admission uid=%s namespace=%s decision=%s: %s",
                    prepared.uid, prepared.namespace, decision.decision_id, message)
        return build_plain_response(
            prepared.uid, allowed=True, code=200, message=warning,
            warnings=[warning, *prepared.warnings],
            annotations={"decision-id": decision.decision_id, "verdict": decision.verdict.value,
                         "mode": decision.mode.value, "fail-open": "true"},
            outcome="fail_open",
        )

    def _out_of_time(self, prepared: _Prepared, future: Future[Decision]) -> AdmissionResponse:
        # (5) name what did not finish, and the time it had
        budget = self.settings.budget_seconds
        if future.cancel():
            what = (
                "evaluation did not start: every admission worker was busy "
                f"({self.settings.max_workers} workers)"
            )
        else:
            pending = ", ".join(
                f"{item.location.field_path} ({item.location.image})"
                for item in prepared.images
            )
            what = f"evaluation of {pending} did not finish (registry, verifier or policy engine)"
            # The evaluation goes on and is recorded by the service; log the link to this uid.
            future.add_done_callback(lambda done: _log_late(prepared.uid, done))
        message = f"{what} within the admission budget of {budget:g}s"
        log.warning("admission out of time uid=%s namespace=%s: %s",
                    prepared.uid, prepared.namespace, message)
        recorded = self._record_out_of_time(prepared, message)
        if recorded is None:
            return self._fail(prepared, code=504, message=message, outcome="out_of_time")
        return self._fail(
            prepared, code=504, message=f"{message} (decision {recorded})",
            outcome="out_of_time", annotations={"decision-id": recorded},
        )

    def _record_out_of_time(self, prepared: _Prepared, message: str) -> str | None:
        """Record the answer given at the deadline (every answer is in the trail) and link the
        evaluation still running to it: when it finishes, its own record names this one."""
        fail_open = prepared.namespace in self.settings.fail_open_namespaces
        context = copy.deepcopy(dict(prepared.request.context))
        try:
            decision = self._evaluator.record_without_evaluation(
                dataclasses.replace(prepared.request, context=context),
                verdict=Verdict.WARN if fail_open else Verdict.DENY,
                violations=(Violation(DEADLINE_POLICY, message),),
                error=message,
            )
        except GatekeeperError as exc:
            log.error("admission uid=%s: out-of-time answer not recorded: %s",
                      prepared.uid, exc.render())
            return None
        admission = prepared.request.context.get("admission")
        if isinstance(admission, dict):
            admission["answered_by"] = decision.decision_id
        return decision.decision_id

    def _failed(self, prepared: _Prepared, exc: Exception) -> AdmissionResponse:
        if isinstance(exc, StorageError):
            message = f"decision could not be recorded, so it is not answered: {exc.message}"
            log.error("admission uid=%s: %s", prepared.uid, exc.render())
        elif isinstance(exc, GatekeeperError):
            message = f"evaluation failed: {exc.message}"
            log.error("admission uid=%s: %s", prepared.uid, exc.render())
        else:
            message = f"internal error evaluating review {prepared.uid} (see gatekeeper logs)"
            log.exception("admission uid=%s: unexpected error", prepared.uid, exc_info=exc)
        return self._fail(prepared, code=500, message=message, outcome="failed")

    def _fail(
        self,
        prepared: _Prepared,
        *,
        code: int,
        message: str,
        outcome: str,
        annotations: Mapping[str, str] | None = None,
    ) -> AdmissionResponse:
        """Deny, or admit with a warning when the namespace is configured fail-open."""
        if prepared.namespace in self.settings.fail_open_namespaces:
            warning = f"admitted without a decision (fail-open namespace): {message}"
            log.warning("FAIL-OPEN admission uid=%s namespace=%s: %s",
                        prepared.uid, prepared.namespace, message)
            return build_plain_response(
                prepared.uid, allowed=True, code=200, message=warning,
                warnings=[warning, *prepared.warnings],
                annotations={"fail-open": "true", **(annotations or {})}, outcome="fail_open",
            )
        return build_plain_response(
            prepared.uid, allowed=False, code=code, message=message, warnings=prepared.warnings,
            outcome=outcome, annotations=annotations,
        )


def _log_late(uid: str, future: Future[Decision]) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    decision = future.result()
    log.warning(
        "late decision %s (verdict %s) recorded for admission uid=%s, answered as out of time",
        decision.decision_id, decision.verdict.value, uid,
    )


def _admission_context(request: AdmissionRequest, webhook: WebhookKind) -> Mapping[str, Any]:
    """The request facts given to the policy (``input.context.admission``) and the audit."""
    metadata = request.object.get("metadata") if request.object else None
    name = request.name
    if not name and isinstance(metadata, Mapping):
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
