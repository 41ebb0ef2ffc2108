"""Decisions for audit tests, built from the real domain types."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from gatekeeper.domain import (
    Decision,
    EnforcementMode,
    ImageResult,
    Source,
    Ticket,
    Verdict,
    Violation,
    parse_digest,
    parse_image_reference,
)

DIGEST = "sha256:" + "ab" * 32
_counter = itertools.count(1)
BASE_TIME = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def make_decision(
    *,
    ticket_id: str | None = "CHG-1",
    verdict: Verdict = Verdict.ALLOW,
    namespace: str | None = "payments",
    created_at: datetime | None = None,
    caller: str | None = "ci-bot",
    index: int | None = None,
) -> Decision:
    number = index if index is not None else next(_counter)
    reference = parse_image_reference(f"registry.example.com/payments/api:1.{number}@{DIGEST}")
    return Decision(
        decision_id=f"0193a000-0000-7000-8000-{number:012d}",
        created_at=created_at or BASE_TIME + timedelta(seconds=number),
        source=Source.PIPELINE,
        verdict=verdict,
        mode=EnforcementMode.ENFORCE,
        environment="production",
        namespace=namespace,
        ticket=Ticket(intent_id="INT-1", plan_id="PLAN-1", ticket_id=ticket_id, deploy_id=None),
        images=(
            ImageResult(
                reference,
                parse_digest(DIGEST),
                {"signature": {"status": "verified", "bundle_sha256": "cd" * 32},
                 "sbom": {"sha256": "ef" * 32}},
            ),
        ),
        violations=(Violation("registries", "registry not allowed", reference.original),)
        if verdict is Verdict.DENY
        else (),
        warnings=(),
        policy_revision="sha256:" + "12" * 32,
        caller=caller,
        latency_ms=12.5,
        policy_input={"schema_version": "1", "images": [{"reference": reference.original}]},
        context={"kind": "Deployment", "name": "api", "user": "system:serviceaccount:ci"},
    )
