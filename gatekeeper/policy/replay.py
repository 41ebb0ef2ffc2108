"""Replay (impact analysis): what would a candidate revision have decided on past traffic?

Every recorded decision stores the exact input document it was evaluated with (column
``policy_input`` of ``gatekeeper_decisions``). The replay starts a second, short-lived OPA
(:class:`~gatekeeper.policy.embedded.EmbeddedOpa` on its own temporary unix socket) loading the
candidate and the exceptions, evaluates each stored input again, recomputes the verdict under
the decision's own enforcement mode, and reports every decision whose verdict or violations would
change, with totals: "would have denied X of Y deploys, Z tickets affected".

Deterministic by construction: "now" inside Rego is the stored ``input.evaluated_at``, and the
exceptions carry their creation and revocation instants, so a past decision sees the exceptions
as they were then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.domain import (
    EnforcementMode,
    Verdict,
    Violation,
    apply_enforcement_mode,
)
from gatekeeper.domain.evidence_documents import referenced_hashes
from gatekeeper.domain.policy_lifecycle import PolicyCandidate, StoredDecision
from gatekeeper.errors import InvalidInputError, PolicyEngineError, StorageError
from gatekeeper.policy.bundle import PolicyFiles, as_policy_files
from gatekeeper.policy.embedded import EmbeddedOpa
from gatekeeper.policy.exceptions import ExceptionFilePublisher, as_utc, format_instant

__all__ = [
    "MAX_REPLAY_DECISIONS",
    "DecisionChange",
    "ReplayReport",
    "RunningNow",
    "OpaDecisionReplayer",
    "SqlDecisionHistory",
    "StoredDecision",
    "replay_decisions",
]

log = logging.getLogger(__name__)

#: Most decisions one replay evaluates; narrow ``since``/``until`` beyond that.
MAX_REPLAY_DECISIONS = 100_000
# The service's own policy ids (gatekeeper.service.EVIDENCE_POLICY / ENGINE_POLICY; the policy
# layer may not import the service). Evidence failures are facts of the past and stay; an engine
# failure of the past is replaced by what the candidate answers now.
_EVIDENCE_POLICY = "gatekeeper.evidence"
_ENGINE_POLICY = "gatekeeper.engine"

# The audit store's decisions table, as far as the replay reads it. Declared here (a read-only
# view) because the policy layer may not import gatekeeper.audit; the columns are the audit
# store's schema version 1.
_metadata = sa.MetaData()
_decisions = sa.Table(
    "gatekeeper_decisions",
    _metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("decision_id", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("verdict", sa.String(8)),
    sa.Column("mode", sa.String(8)),
    sa.Column("ticket_id", sa.String(256)),
    sa.Column("document", sa.Text),
    sa.Column("policy_input", sa.Text),
)
#: The audit store's evidence documents (schema version 2): canonical JSON by sha256.
_evidence = sa.Table(
    "gatekeeper_evidence_documents",
    _metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("document", sa.Text),
)


def _read_evidence(connection: Any, hashes: Iterable[str]) -> dict[str, Any]:
    """The referenced documents, each re-hashed: the replay decides on exactly what the
    recorded decision saw, or refuses (:class:`StorageError` naming the document)."""
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    rows = connection.execute(
        sa.select(_evidence.c.sha256, _evidence.c.document).where(_evidence.c.sha256.in_(wanted))
    ).all()
    found = {str(row.sha256): str(row.document) for row in rows}
    documents: dict[str, Any] = {}
    for digest in wanted:
        text = found.get(digest)
        if text is None or hashlib.sha256(text.encode()).hexdigest() != digest:
            state = "missing" if text is None else "altered"
            raise StorageError(f"evidence document {digest} of a recorded decision is {state}")
        documents[digest] = json.loads(text)
    return documents


def _violations(items: Any) -> tuple[Violation, ...]:
    return tuple(Violation(i["policy"], i["message"], i.get("image")) for i in items or [])


class SqlDecisionHistory:
    """Reads recorded decisions with their stored policy input, oldest first."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def count(self, since: datetime | None, until: datetime | None) -> int:
        statement = sa.select(sa.func.count()).select_from(_decisions)
        statement = self._window(statement, since, until)
        try:
            with self._engine.connect() as connection:
                return int(connection.execute(statement).scalar_one())
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot count recorded decisions: {type(exc).__name__}") from exc

    @staticmethod
    def _window(statement: Any, since: datetime | None, until: datetime | None) -> Any:
        if since is not None:
            statement = statement.where(_decisions.c.created_at >= since)
        if until is not None:
            statement = statement.where(_decisions.c.created_at < until)
        return statement

    def decisions(
        self, since: datetime | None, until: datetime | None, *, batch: int = 500
    ) -> Iterator[StoredDecision]:
        """Decisions in ``[since, until)``, read in pages by ``seq`` (bounded memory)."""
        after = 0
        while True:
            statement = self._window(
                sa.select(
                    _decisions.c.seq, _decisions.c.decision_id, _decisions.c.created_at,
                    _decisions.c.verdict, _decisions.c.mode, _decisions.c.ticket_id,
                    _decisions.c.document, _decisions.c.policy_input,
                ).where(_decisions.c.seq > after),
                since,
                until,
            ).order_by(_decisions.c.seq).limit(batch)
            try:
                with self._engine.connect() as connection:
                    rows = connection.execute(statement).all()
                    inputs = {row.seq: json.loads(row.policy_input) if row.policy_input else None
                              for row in rows}
                    evidence = _read_evidence(connection, (
                        digest for value in inputs.values() if value is not None
                        for digest in referenced_hashes(value)))
            except SQLAlchemyError as exc:
                raise StorageError(
                    f"cannot read recorded decisions: {type(exc).__name__}"
                ) from exc
            if not rows:
                return
            for row in rows:
                document = json.loads(row.document)
                yield StoredDecision(
                    decision_id=row.decision_id,
                    created_at=as_utc(row.created_at),
                    verdict=Verdict(row.verdict),
                    mode=EnforcementMode(row.mode),
                    environment=document.get("environment"),
                    namespace=document.get("namespace"),
                    ticket_id=row.ticket_id,
                    policy_revision=document.get("policy_revision"),
                    violations=_violations(document.get("violations")),
                    warnings=_violations(document.get("warnings")),
                    policy_input=inputs[row.seq],
                    evidence={digest: evidence[digest] for digest in
                              referenced_hashes(inputs[row.seq] or {})},
                )
            after = rows[-1].seq


@dataclass(frozen=True, slots=True)
class DecisionChange:
    """One recorded decision the candidate would decide differently."""

    decision: StoredDecision
    new_verdict: Verdict
    violations_added: tuple[Violation, ...]
    violations_removed: tuple[Violation, ...]
    warnings_added: tuple[Violation, ...]
    warnings_removed: tuple[Violation, ...]

    @property
    def verdict_changed(self) -> bool:
        return self.new_verdict is not self.decision.verdict

    def as_dict(self) -> dict[str, Any]:
        d = self.decision
        return {
            "decision_id": d.decision_id,
            "created_at": format_instant(d.created_at),
            "environment": d.environment,
            "namespace": d.namespace,
            "ticket_id": d.ticket_id,
            "old_revision": d.policy_revision,
            "old_verdict": d.verdict.value,
            "new_verdict": self.new_verdict.value,
            "violations_added": [v.as_dict() for v in self.violations_added],
            "violations_removed": [v.as_dict() for v in self.violations_removed],
            "warnings_added": [v.as_dict() for v in self.warnings_added],
            "warnings_removed": [v.as_dict() for v in self.warnings_removed],
        }


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


@dataclass(frozen=True, slots=True)
class ReplayReport:
    revision_id: str
    since: datetime | None
    until: datetime | None
    replayed: int
    skipped_without_input: int
    would_deny: int
    previously_denied: int
    newly_denied: int
    newly_allowed: int
    tickets_affected: tuple[str, ...]
    changes: tuple[DecisionChange, ...]
    #: The running workloads (the background loop's latest input for each), or None when the
    #: background loop is off: which of them the candidate would deny.
    running_now: RunningNow | None = None

    @property
    def summary(self) -> str:
        """``would have denied 12 of 3,481 deploys, 3 tickets affected``."""
        deploys = "deploy" if self.replayed == 1 else "deploys"
        return (
            f"would have denied {self.would_deny:,} of {self.replayed:,} {deploys}, "
            f"{_plural(len(self.tickets_affected), 'ticket')} affected"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "revision_id": self.revision_id,
            "since": format_instant(self.since) if self.since else None,
            "until": format_instant(self.until) if self.until else None,
            "summary": self.summary,
            "totals": {
                "replayed": self.replayed,
                "skipped_without_input": self.skipped_without_input,
                "would_deny": self.would_deny,
                "previously_denied": self.previously_denied,
                "newly_denied": self.newly_denied,
                "newly_allowed": self.newly_allowed,
                "changed": len(self.changes),
                "tickets_affected": len(self.tickets_affected),
            },
            "tickets_affected": list(self.tickets_affected),
            "changes": [c.as_dict() for c in self.changes],
            "running_now": (self.running_now.as_dict() if self.running_now is not None else
                            {"available": False,
                             "message": "background compliance is off (background_enabled)"}),
        }


@dataclass(frozen=True, slots=True)
class RunningNow:
    """The candidate over what runs now: every running workload it would deny, and why."""

    workloads: int
    denied: tuple[tuple[StoredDecision, Verdict, tuple[Violation, ...]], ...]

    def as_dict(self) -> dict[str, Any]:
        items = []
        for decision, verdict, violations in self.denied:
            context = (decision.policy_input or {}).get("context") or {}
            workload = context.get("background") or {}
            items.append({
                "kind": workload.get("kind"), "namespace": decision.namespace,
                "name": workload.get("name"), "current_verdict": decision.verdict.value,
                "current_revision": decision.policy_revision, "new_verdict": verdict.value,
                "violations": [v.as_dict() for v in violations],
            })
        return {"available": True, "workloads": self.workloads, "would_deny": len(items),
                "newly_denied": sum(d.verdict is not Verdict.DENY for d, _, _ in self.denied),
                "denied": items}


def _running_now(evaluate: Any, running: Sequence[StoredDecision]) -> RunningNow:
    denied = []
    for decision in running:
        if decision.policy_input is None:
            continue
        change = _evaluate_one(evaluate, decision)
        verdict = change.new_verdict if change else decision.verdict
        if verdict is Verdict.DENY:
            evidence = tuple(v for v in decision.violations if v.policy == _EVIDENCE_POLICY)
            kept = tuple(v for v in decision.violations if v.policy != _EVIDENCE_POLICY
                         and (change is None or v not in change.violations_removed))
            added = change.violations_added if change else ()
            denied.append((decision, verdict, evidence + kept + added))
    return RunningNow(len(running), tuple(denied))


def _key(v: Violation) -> tuple[str, str, str]:
    return (v.image or "", v.policy, v.message)


def _difference(new: Iterable[Violation], old: Iterable[Violation]) -> tuple[Violation, ...]:
    return tuple(sorted(set(new) - set(old), key=_key))


def _evaluate_one(engine_evaluate: Any, decision: StoredDecision) -> DecisionChange | None:
    assert decision.policy_input is not None
    evidence = tuple(v for v in decision.violations if v.policy == _EVIDENCE_POLICY)
    old_violations = tuple(v for v in decision.violations if v.policy != _EVIDENCE_POLICY)
    try:
        result = engine_evaluate(decision.policy_input, decision.evidence)
        violations: tuple[Violation, ...] = result.violations
        warnings: tuple[Violation, ...] = result.warnings
        verdict = apply_enforcement_mode(decision.mode, evidence + violations, warnings)
        if evidence:
            verdict = Verdict.DENY
    except PolicyEngineError as exc:
        violations = (Violation(_ENGINE_POLICY, f"policy engine unavailable: {exc.message}"),)
        warnings = ()
        verdict = Verdict.DENY
    change = DecisionChange(
        decision=decision,
        new_verdict=verdict,
        violations_added=_difference(violations, old_violations),
        violations_removed=_difference(old_violations, violations),
        warnings_added=_difference(warnings, decision.warnings),
        warnings_removed=_difference(decision.warnings, warnings),
    )
    unchanged = not (
        change.verdict_changed or change.violations_added or change.violations_removed
        or change.warnings_added or change.warnings_removed
    )
    return None if unchanged else change


def replay_decisions(
    files: PolicyFiles,
    decisions: Iterable[StoredDecision],
    *,
    opa_binary: str,
    exceptions: Sequence[dict[str, Any]] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    timeout: float = 5.0,
    running: Sequence[StoredDecision] | None = None,
) -> ReplayReport:
    """Evaluate each stored input against ``files`` on a private OPA; report what changes.
    ``running``: the latest input of each running workload (the "running now" section)."""
    with tempfile.TemporaryDirectory(prefix="gatekeeper-replay-") as scratch:
        root = Path(scratch)
        files.write_policies(root / "policies")
        ExceptionFilePublisher(root / "exceptions").publish(list(exceptions))
        opa = EmbeddedOpa(
            opa_binary=opa_binary,
            policy_dir=root / "policies",
            timeout=timeout,
            data_paths=[root / "exceptions"],
        )
        opa.start()
        try:
            report = _replay(files.revision_id, decisions, opa.engine.evaluate, since, until)
            if running is None:
                return report
            return replace(report, running_now=_running_now(opa.engine.evaluate, running))
        finally:
            opa.stop()


def _replay(
    revision_id: str,
    decisions: Iterable[StoredDecision],
    evaluate: Any,
    since: datetime | None,
    until: datetime | None,
) -> ReplayReport:
    replayed = skipped = would_deny = previously_denied = newly_denied = newly_allowed = 0
    tickets: set[str] = set()
    changes: list[DecisionChange] = []
    for decision in decisions:
        if decision.policy_input is None:
            skipped += 1
            continue
        replayed += 1
        if replayed > MAX_REPLAY_DECISIONS:
            raise InvalidInputError(
                f"more than {MAX_REPLAY_DECISIONS:,} decisions in the window: narrow since/until",
                field="since",
            )
        change = _evaluate_one(evaluate, decision)
        new_verdict = change.new_verdict if change else decision.verdict
        was_denied = decision.verdict is Verdict.DENY
        now_denied = new_verdict is Verdict.DENY
        would_deny += now_denied
        previously_denied += was_denied
        newly_denied += now_denied and not was_denied
        newly_allowed += was_denied and not now_denied
        if change is not None:
            changes.append(change)
            if change.verdict_changed and decision.ticket_id:
                tickets.add(decision.ticket_id)
    log.info("replayed %d decisions against %s: %d changed", replayed, revision_id, len(changes))
    return ReplayReport(
        revision_id=revision_id,
        since=since,
        until=until,
        replayed=replayed,
        skipped_without_input=skipped,
        would_deny=would_deny,
        previously_denied=previously_denied,
        newly_denied=newly_denied,
        newly_allowed=newly_allowed,
        tickets_affected=tuple(sorted(tickets)),
        changes=tuple(changes),
    )


class OpaDecisionReplayer:
    """The :class:`~gatekeeper.domain.ports.policy.DecisionReplayer` port: the decisions the
    audit store recorded, replayed on a private OPA (:func:`replay_decisions`)."""

    def __init__(self, opa_binary: str, history: SqlDecisionHistory) -> None:
        self._opa_binary = opa_binary
        self._history = history

    def replay(
        self, files: PolicyCandidate, *, since: datetime, until: datetime,
        exceptions: list[dict[str, Any]], running: Sequence[StoredDecision] | None = None,
    ) -> ReplayReport:
        return replay_decisions(
            as_policy_files(files),
            self._history.decisions(since, until),
            opa_binary=self._opa_binary,
            exceptions=exceptions,
            since=since,
            until=until,
            running=running,
        )
