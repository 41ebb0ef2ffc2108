"""Replay arithmetic with a fake engine (the real OPA is exercised in the integration tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from gatekeeper.domain import EnforcementMode, PolicyResult, Verdict, Violation
from gatekeeper.errors import PolicyEngineError
from gatekeeper.policy.replay import ReplayReport, StoredDecision, _replay

AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
HUB = Violation("registries", 'registry "docker.io" is not allowed', "nginx")
EVIDENCE = Violation("gatekeeper.evidence", "digest not resolved: timeout", "nginx")


def stored(
    decision_id: str,
    verdict: Verdict,
    violations: Iterable[Violation] = (),
    *,
    ticket: str | None = "CHG-1",
    mode: EnforcementMode = EnforcementMode.ENFORCE,
    has_input: bool = True,
) -> StoredDecision:
    return StoredDecision(
        decision_id=decision_id, created_at=AT, verdict=verdict, mode=mode,
        environment="production", namespace=None, ticket_id=ticket, policy_revision="sha256:old",
        violations=tuple(violations), warnings=(),
        policy_input={"id": decision_id} if has_input else None,
    )


def engine(
    answers: Mapping[str, Iterable[Violation] | Exception],
) -> Callable[..., PolicyResult]:
    def evaluate(
        policy_input: Mapping[str, Any], evidence: Mapping[str, Any] | None = None
    ) -> PolicyResult:
        answer = answers[policy_input["id"]]
        if isinstance(answer, Exception):
            raise answer
        return PolicyResult(tuple(answer), (), "sha256:new")

    return evaluate


def test_changes_and_totals() -> None:
    decisions = [
        stored("a", Verdict.ALLOW, ticket="CHG-1"),                   # newly denied
        stored("b", Verdict.DENY, [HUB], ticket="CHG-2"),             # newly allowed
        stored("c", Verdict.DENY, [EVIDENCE], ticket="CHG-3"),        # evidence keeps it denied
        stored("d", Verdict.WARN, mode=EnforcementMode.AUDIT, ticket="CHG-1"),  # audit: still warn
        stored("e", Verdict.ALLOW, has_input=False),                  # no stored input
        stored("f", Verdict.ALLOW, ticket=None),                      # engine error -> deny
    ]
    report = _replay(
        "sha256:new", decisions,
        engine({"a": [HUB], "b": [], "c": [], "d": [HUB], "f": PolicyEngineError("boom")}),
        None, None,
    )
    assert report.summary == "would have denied 3 of 5 deploys, 2 tickets affected"
    assert (report.newly_denied, report.newly_allowed, report.skipped_without_input) == (2, 1, 1)
    assert report.tickets_affected == ("CHG-1", "CHG-2")
    changes = {c.decision.decision_id: c for c in report.changes}
    assert sorted(changes) == ["a", "b", "d", "f"]
    assert (changes["a"].new_verdict, changes["a"].violations_added) == (Verdict.DENY, (HUB,))
    assert (changes["b"].new_verdict, changes["b"].violations_removed) == (Verdict.ALLOW, (HUB,))
    assert changes["d"].new_verdict is Verdict.WARN and not changes["d"].verdict_changed
    assert changes["f"].violations_added == (
        Violation("gatekeeper.engine", "policy engine unavailable: boom"),
    )


def test_summary_wording_matches_the_issue() -> None:
    report = ReplayReport(
        revision_id="sha256:x", since=None, until=None, replayed=3481,
        skipped_without_input=0, would_deny=12, previously_denied=0, newly_denied=12,
        newly_allowed=0, tickets_affected=("A", "B", "C"), changes=(),
    )
    assert report.summary == "would have denied 12 of 3,481 deploys, 3 tickets affected"
