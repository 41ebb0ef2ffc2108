"""Golden policy inputs: requests whose input documents are pinned in rego-tests/golden/.

The Rego suites test against these exact documents, so Rego tests cannot drift from what the
Python input builder really sends. ``UPDATE_GOLDEN=1 pytest tests/unit/test_golden_inputs.py``
rewrites them after an intended change of the input schema.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gatekeeper.domain import (
    EvaluationRequest,
    Source,
    Ticket,
    build_policy_input,
    parse_image_reference,
)

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "rego-tests" / "golden"
EVALUATED_AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def _input(request: EvaluationRequest) -> dict[str, Any]:
    images = [(ref, ref.digest, {}) for ref in request.images]
    return build_policy_input(request, images, EVALUATED_AT)


def golden_inputs() -> dict[str, dict[str, Any]]:
    ticket = Ticket(intent_id="INT-7", plan_id="PLAN-3", ticket_id="CHG-1042", deploy_id=None)
    return {
        "pipeline_production_pinned": _input(
            EvaluationRequest(
                images=(
                    parse_image_reference(f"registry.example.com/payments/api:1.4@{DIGEST}"),
                    parse_image_reference(f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/web@{DIGEST}"),
                ),
                source=Source.PIPELINE,
                environment="production",
                namespace="payments",
                ticket=ticket,
            )
        ),
        "pipeline_production_unpinned": _input(
            EvaluationRequest(
                images=(
                    parse_image_reference("registry.example.com/payments/api:1.4"),
                    parse_image_reference("registry.example.com.evil.io/payments/api:1.4"),
                    parse_image_reference("nginx"),
                ),
                source=Source.PIPELINE,
                environment="production",
                namespace="payments",
                ticket=ticket,
            )
        ),
        "pipeline_development_hub": _input(
            EvaluationRequest(
                images=(
                    parse_image_reference("nginx:1.27"),
                    parse_image_reference("localhost:5000/team/tool:dev"),
                ),
                source=Source.PIPELINE,
                environment="development",
            )
        ),
    }
