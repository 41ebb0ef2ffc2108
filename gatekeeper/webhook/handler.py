"""The admission use case: review in, answer out, within the time budget.

(1) Decide whether the review is governed at all (operation, namespace, subresource, kind).
(2) Extract every image with its path and parse it; a malformed one denies, addressed to its
    field. On UPDATE only the images ``oldObject`` did not carry are evaluated: relabelling or
    scaling a workload admitted under an older policy is never blocked by the new one.
(3) Resolve the enforcement mode and the ticket ids.
(4) Validating webhook: the same admission already decided by the mutating webhook (the same
    evaluation input, with the images it pinned; the API server's uid differs per call)?
    Answer from that decision: one evaluation and one record per admission
    (:mod:`gatekeeper.webhook.reuse`). An UPDATE that changes neither an image nor the pod
    spec is recorded as an allow ("no image changed") without evaluation; one that changes the
    pod spec only is evaluated with no images (the workload rules read ``input.review``).
(5) Warm (every image pinned, its evidence cached): evaluate on the event loop, one policy
    query and the awaited audit write, no worker thread
    (:meth:`~gatekeeper.service.EvaluationService.evaluate_warm`). Otherwise evaluate in a
    worker thread with the evidence deadline set ``reserve`` before the budget ends, so
    collectors stop starting network steps while there is still time to run the policy and
    record the decision.
(6) Wait at most until the budget ends. A review that is not answered by then is denied (or
    admitted where gate failures fail open) with a message naming what did not finish and the
    time it had, instead of the API server's generic "context deadline exceeded".
(7) Render the decision: field-addressed messages, warnings, audit annotations, and (mutating
    webhook) the JSONPatch pinning each tag to its verified digest.

There is one entry point, :meth:`AdmissionHandler.handle` (async): the routes call it, and so do
the unit tests.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from gatekeeper.domain import (
    Decision,
    EnforcementMode,
    EvaluationRequest,
    Verdict,
    Violation,
)
from gatekeeper.errors import GatekeeperError, StorageError
from gatekeeper.service import DEADLINE_POLICY, ENGINE_POLICY, EVIDENCE_POLICY
from gatekeeper.webhook.metrics import AdmissionMetrics
from gatekeeper.webhook.prepare import Prepared, Rejected, prepare_review
from gatekeeper.webhook.response import (
    address_findings,
    build_decision_response,
    build_plain_response,
    join_message,
)
from gatekeeper.webhook.reuse import DecisionReuse, RememberedDecisions
from gatekeeper.webhook.review import (
    AdmissionResponse,
    AdmissionReview,
    WebhookKind,
)
from gatekeeper.webhook.scope import (
    AdmissionSettings,
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

    def evaluate(
        self, request: EvaluationRequest, *, deadline: float | None = None, record: bool = True
    ) -> Decision:
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
        record: bool = True,
    ) -> Decision:
        ...

    async def evaluate_warm(
        self, request: EvaluationRequest, *, deadline: float | None = None, record: bool = True
    ) -> Decision | None:
        ...

    async def record_without_evaluation_async(
        self,
        request: EvaluationRequest,
        *,
        verdict: Verdict,
        violations: Sequence[Violation],
        error: str | None = None,
        record: bool = True,
    ) -> Decision:
        ...


class AdmissionHandler:
    """Answers AdmissionReviews with the shared :class:`Evaluator`; thread-safe."""

    def __init__(
        self,
        evaluator: Evaluator,
        settings: AdmissionSettings,
        *,
        metrics: AdmissionMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        reuse: RememberedDecisions | None = None,
    ) -> None:
        self._evaluator = evaluator
        self.settings = settings
        self.metrics = metrics
        self._monotonic = monotonic
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_workers, thread_name_prefix="gatekeeper-admission"
        )
        #: ``reuse``: shared by the workers of ``serve --workers N``; else this process's own.
        self._reuse: RememberedDecisions = reuse if reuse is not None else DecisionReuse(
            ttl_seconds=settings.reuse_ttl_seconds, max_entries=settings.reuse_max_entries,
            monotonic=monotonic,
        )

    def close(self) -> None:
        """Stop accepting work; wait for evaluations already running, so that their decisions
        (late ones included) are recorded before shutdown. Queued ones are cancelled."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- the entry point ------------------------------------------------------------------

    async def handle(
        self,
        review: AdmissionReview,
        *,
        webhook: WebhookKind,
        path_mode: EnforcementMode | None = None,
        received_at: float | None = None,
    ) -> AdmissionResponse:
        """Answer ``review``; the event loop is never blocked by an evaluation or a record."""
        started = self._monotonic() if received_at is None else received_at
        response = await self._answer(review, webhook, path_mode, started)
        self._observe(webhook, response, started)
        return response

    async def _answer(
        self,
        review: AdmissionReview,
        webhook: WebhookKind,
        path_mode: EnforcementMode | None,
        started: float,
    ) -> AdmissionResponse:
        prepared = self._prepare_safely(review, webhook, path_mode)
        if isinstance(prepared, AdmissionResponse):
            return prepared
        loop = asyncio.get_running_loop()
        if isinstance(prepared, Rejected):
            return await loop.run_in_executor(self._executor, self._reject, prepared)
        # (4) the same admission, already decided by the mutating webhook? (Only the validating
        # webhook asks: each mutating call is an admission of its own, recorded once.)
        if prepared.webhook == "validate":
            reused = self._reuse.take(
                prepared.reuse_key(frozenset(i.location.image for i in prepared.images)))
            if reused is not None:
                return self._render(prepared, reused, reused=True)
        remaining = max(0.0, started + self.settings.budget_seconds - self._monotonic())
        # (5) warm: on the event loop, within the budget (6)
        task: asyncio.Future[Decision | None] | None = None
        try:
            task = asyncio.ensure_future(self._warm(prepared, started))
            # shielded: at the deadline the evaluation goes on and is recorded (as in a thread)
            warm_decision = await asyncio.wait_for(asyncio.shield(task), timeout=remaining)
        except TimeoutError:
            assert task is not None
            return await loop.run_in_executor(None, self._out_of_time, prepared, task)
        except Exception as exc:  # every failure must become an answer
            return self._failed(prepared, exc)
        if warm_decision is not None:
            return self._render(prepared, warm_decision)
        # (5) and (6) in a worker thread
        future = self._submit(prepared, started)
        remaining = max(0.0, started + self.settings.budget_seconds - self._monotonic())
        try:
            decision = await asyncio.wait_for(asyncio.wrap_future(future), timeout=remaining)
        except TimeoutError:
            return await loop.run_in_executor(None, self._out_of_time, prepared, future)
        except Exception as exc:  # every failure must become an answer
            return self._failed(prepared, exc)
        return self._render(prepared, decision)

    def _observe(self, webhook: WebhookKind, response: AdmissionResponse, started: float) -> None:
        if self.metrics is not None:
            self.metrics.observe(webhook, response.outcome, self._monotonic() - started)

    # -- steps ----------------------------------------------------------------------------

    def _prepare_safely(
        self, review: AdmissionReview, webhook: WebhookKind, path_mode: EnforcementMode | None
    ) -> Prepared | Rejected | AdmissionResponse:
        try:
            return prepare_review(review, webhook, path_mode, self.settings)
        except Exception:  # a bug here must still answer the API server, closed
            uid = review.request.uid if review.request else ""
            log.exception("admission uid=%s: unexpected error preparing the review", uid)
            return build_plain_response(
                uid, allowed=False, code=500, outcome="failed",
                message=f"internal error reading review {uid} (see gatekeeper logs)",
            )

    def _reject(self, rejected: Rejected) -> AdmissionResponse:
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

    def _warm(self, prepared: Prepared, started: float) -> Awaitable[Decision | None]:
        """(4) an UPDATE that changes no image: admitted and recorded as such; else (5) the
        warm evaluation (None when an image needs the network)."""
        if not prepared.images and not prepared.workload_changed:
            return self._evaluator.record_without_evaluation_async(
                prepared.request, verdict=Verdict.ALLOW, violations=(), record=prepared.record)
        return self._evaluator.evaluate_warm(
            prepared.request, deadline=self._evidence_deadline(started), record=prepared.record)

    def _evidence_deadline(self, started: float) -> float:
        budget = self.settings.budget_seconds
        return started + budget - min(_RESERVE_MAX_SECONDS, budget * _RESERVE_SHARE)

    def _submit(self, prepared: Prepared, started: float) -> Future[Decision]:
        return self._executor.submit(
            self._evaluator.evaluate, prepared.request, deadline=self._evidence_deadline(started),
            record=prepared.record,
        )

    def _render(
        self, prepared: Prepared, decision: Decision, *, reused: bool = False
    ) -> AdmissionResponse:
        # (7)
        gate_failed = bool(decision.violations) and any(
            v.policy in _GATE_FAILURES for v in decision.violations)
        if (
            not decision.allowed
            and prepared.mode is EnforcementMode.ENFORCE
            and prepared.fail_open is not None
            and gate_failed
            and all(v.policy in _GATE_FAILURES for v in decision.violations)
        ):
            return self._fail_open_decision(prepared, decision)
        gate_note: str | None = None
        if gate_failed and prepared.mode is not EnforcementMode.ENFORCE:
            how = "open" if decision.allowed else "closed"
            gate_note = (f"evidence could not be gathered, and gate failures fail {how} in "
                         f"{prepared.mode.value} mode")
            if not decision.allowed:
                gate_note = f"denied in {prepared.mode.value} mode: {gate_note}"
        response = build_decision_response(
            prepared.uid,
            decision,
            prepared.images,
            mutate=prepared.webhook == "mutate",
            extra_warnings=prepared.warnings,
            unchanged=prepared.unchanged,
            reused=reused,
            gate_note=gate_note,
            recorded=prepared.record,
        )
        if prepared.webhook == "mutate" and not reused and response.allowed:
            self._reuse.remember(prepared.reuse_key(_after_patch(prepared, response)), decision)
        if not response.allowed:
            log.info(
                "admission denied uid=%s namespace=%s decision=%s: %s",
                prepared.uid, prepared.namespace, decision.decision_id, response.message,
            )
        return response

    def _fail_open_decision(self, prepared: Prepared, decision: Decision) -> AdmissionResponse:
        """The gate failed (deadline, registry, policy engine) where gate failures admit."""
        lines = address_findings(decision.violations, prepared.images)
        message = join_message(
            lines, f" (decision {decision.decision_id}, recorded as {decision.verdict.value})"
        )
        warning = f"admitted without a complete decision ({prepared.fail_open}): {message}"
        log.warning("FAIL-OPEN admission uid=%s namespace=%s decision=%s: %s",
                    prepared.uid, prepared.namespace, decision.decision_id, message)
        return build_plain_response(
            prepared.uid, allowed=True, code=200, message=warning,
            warnings=[warning, *prepared.warnings],
            annotations={"decision-id": decision.decision_id, "verdict": decision.verdict.value,
                         "mode": decision.mode.value, "fail-open": "true"},
            outcome="fail_open",
        )

    def _out_of_time(
        self, prepared: Prepared, future: Future[Decision] | asyncio.Future[Decision | None]
    ) -> AdmissionResponse:
        # (5) name what did not finish, and the time it had
        budget = self.settings.budget_seconds
        if isinstance(future, Future) and future.cancel():
            what = (
                "evaluation did not start: every admission worker was busy "
                f"({self.settings.max_workers} workers)"
            )
        else:
            pending = ", ".join(
                f"{item.location.field_path} ({item.location.image})"
                for item in prepared.images
            )
            what = (f"evaluation of {pending} did not finish (registry, verifier or policy engine)"
                    if pending else "the record of an update that changed no image did not "
                    "finish (audit store)")
            # The evaluation goes on and is recorded by the service; log the link to this uid.
            if isinstance(future, Future):
                future.add_done_callback(lambda done: _log_late(prepared.uid, done))
            else:  # a warm evaluation on the loop (shielded: it goes on)
                future.get_loop().call_soon_threadsafe(
                    future.add_done_callback, lambda done: _log_late(prepared.uid, done))
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

    def _record_out_of_time(self, prepared: Prepared, message: str) -> str | None:
        """Record the answer given at the deadline (every answer is in the trail) and link the
        evaluation still running to it: when it finishes, its own record names this one."""
        context = copy.deepcopy(dict(prepared.request.context))
        try:
            decision = self._evaluator.record_without_evaluation(
                dataclasses.replace(prepared.request, context=context),
                verdict=Verdict.WARN if prepared.fail_open else Verdict.DENY,
                violations=(Violation(DEADLINE_POLICY, message),),
                error=message,
                record=prepared.record,
            )
        except GatekeeperError as exc:
            log.error("admission uid=%s: out-of-time answer not recorded: %s",
                      prepared.uid, exc.render())
            return None
        admission = prepared.request.context.get("admission")
        if isinstance(admission, dict):
            admission["answered_by"] = decision.decision_id
        return decision.decision_id

    def _failed(self, prepared: Prepared, exc: Exception) -> AdmissionResponse:
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
        prepared: Prepared,
        *,
        code: int,
        message: str,
        outcome: str,
        annotations: Mapping[str, str] | None = None,
    ) -> AdmissionResponse:
        """Deny, or admit with a warning where gate failures fail open (namespace or mode)."""
        if prepared.fail_open is not None:
            warning = f"admitted without a decision ({prepared.fail_open}): {message}"
            log.warning("FAIL-OPEN admission uid=%s namespace=%s: %s",
                        prepared.uid, prepared.namespace, message)
            return build_plain_response(
                prepared.uid, allowed=True, code=200, message=warning,
                warnings=[warning, *prepared.warnings],
                annotations={"fail-open": "true", **(annotations or {})}, outcome="fail_open",
            )
        if prepared.mode is not EnforcementMode.ENFORCE:
            message = (f"denied in {prepared.mode.value} mode: gate failures fail closed in "
                       f"{prepared.mode.value} mode: {message}")
        return build_plain_response(
            prepared.uid, allowed=False, code=code, message=message, warnings=prepared.warnings,
            outcome=outcome, annotations=annotations,
        )


def _log_late(uid: str, future: Future[Decision] | asyncio.Future[Decision | None]) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    decision = future.result()
    if decision is None:
        return
    log.warning(
        "late decision %s (verdict %s) recorded for admission uid=%s, answered as out of time",
        decision.decision_id, decision.verdict.value, uid,
    )


def _after_patch(prepared: Prepared, response: AdmissionResponse) -> frozenset[str]:
    """The evaluated images as the validating webhook will see them: each pinned by the patch
    (mutating webhook), less those ``oldObject`` carried already (not evaluated there)."""
    pinned = {op["path"]: op["value"] for op in response.patch}
    after = {pinned.get(i.location.json_pointer, i.location.image) for i in prepared.images}
    return frozenset(after - prepared.old_images)
