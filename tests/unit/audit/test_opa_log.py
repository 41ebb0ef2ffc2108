"""Decisions as OPA decision-log events: the shape an OPA decision-log consumer reads."""

import dataclasses
import json
import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

import jsonschema_rs
import pytest

from gatekeeper.audit.opa_log import DecisionLogFile, decision_log_event, rfc3339_nanos
from gatekeeper.domain import (
    Decision,
    EnforcementMode,
    ImageResult,
    Source,
    Ticket,
    Verdict,
    Violation,
    parse_image_reference,
)

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "assets/opa/decision-log-event.schema.json").read_text()
)
VALIDATOR = jsonschema_rs.validator_for(SCHEMA)


def _decision(revision: str | None = "sha256:" + "ab" * 32, caller: str | None = "ci-bot") -> Decision:
    return Decision(
        decision_id="0193a1b2-0000-7000-8000-000000000001",
        created_at=datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC),
        source=Source.PIPELINE, verdict=Verdict.DENY, mode=EnforcementMode.ENFORCE,
        environment="production", namespace="pay",
        ticket=Ticket("INT-7", "PLAN-3", "CHG-1042", "DEP-9"),
        images=(ImageResult(parse_image_reference("nginx"), None, {}),),
        violations=(Violation("registries", "registry \"docker.io\" is not allowed", "nginx"),),
        warnings=(),
        policy_revision=revision, caller=caller, latency_ms=12.5,
        policy_input={"schema_version": "1", "images": [{"reference": "nginx"}]},
    )


def test_event_has_opas_fields_and_ours() -> None:
    decision = _decision()
    event = decision_log_event(decision.as_dict(), decision.policy_input, version="0.1.0",
                               chain={"seq": 7, "record_hash": "cd" * 32})
    assert VALIDATOR.is_valid(event), list(VALIDATOR.iter_errors(event))
    assert event["decision_id"] == decision.decision_id
    assert event["path"] == "gatekeeper/main/decision"
    assert event["bundles"] == {"gatekeeper": {"revision": "sha256:" + "ab" * 32}}
    assert event["input"] == {"schema_version": "1", "images": [{"reference": "nginx"}]}
    assert event["result"]["verdict"] == "deny" and event["result"]["allowed"] is False
    assert event["result"]["violations"][0]["policy"] == "registries"
    assert event["timestamp"] == "2026-11-24T12:00:00.123456000Z"
    assert event["requested_by"] == "ci-bot"
    assert event["labels"] == {"app": "forge-gatekeeper", "version": "0.1.0",
                               "source": "pipeline", "environment": "production"}
    assert event["metrics"] == {"timer_gatekeeper_decision_ns": 12_500_000}
    assert event["gatekeeper"]["ticket_id"] == "CHG-1042"
    assert event["gatekeeper"]["intent_id"] == "INT-7"
    assert event["chain"] == {"seq": 7, "record_hash": "cd" * 32}


def test_a_decision_the_engine_never_reached_names_no_bundle() -> None:
    decision = _decision(revision=None, caller=None)
    event = decision_log_event(decision.as_dict(), None, version="0.1.0")
    assert VALIDATOR.is_valid(event)
    assert event["bundles"] == {} and event["input"] is None and "requested_by" not in event


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-24T12:00:00Z", "2026-11-24T12:00:00.000000000Z"),
    ("2026-11-24T12:00:00.5+00:00", "2026-11-24T12:00:00.500000000Z"),
])
def test_timestamps_carry_nanoseconds(text: str, expected: str) -> None:
    assert rfc3339_nanos(text) == expected


def test_the_schema_refuses_what_a_consumer_could_not_read() -> None:
    good = decision_log_event(_decision().as_dict(), None, version="0.1.0")
    for broken in (
        {**good, "timestamp": "24/11/2026"},
        {**good, "labels": {"app": 1}},
        {**good, "bundles": {"gatekeeper": {}}},
        {key: value for key, value in good.items() if key != "decision_id"},
    ):
        assert not VALIDATOR.is_valid(broken)


def test_streaming_sink_appends_one_event_per_decision(tmp_path: Path) -> None:
    sink = DecisionLogFile(tmp_path / "logs" / "decisions.jsonl", version="0.1.0")
    sink.decision_recorded(_decision())
    sink.decision_recorded(_decision())
    lines = (tmp_path / "logs" / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert all(VALIDATOR.is_valid(json.loads(line)) for line in lines)


def _append_large(path: str, marker: str, count: int) -> None:
    sink = DecisionLogFile(Path(path), version="0.1.0")
    big = {"schema_version": "1", "components": [marker * 64] * 4000}  # ~260 KB per line
    for _ in range(count):
        sink.decision_recorded(dataclasses.replace(_decision(), policy_input=big))


def test_processes_appending_to_one_log_never_interleave_lines(tmp_path: Path) -> None:
    # the workers of `gatekeeper serve --workers N` share GATEKEEPER_DECISION_LOG_FILE
    path = tmp_path / "decisions.jsonl"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_large, args=(str(path), marker, 15))
               for marker in "ab"]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 30
    markers = sorted(json.loads(line)["input"]["components"][0][0] for line in lines)
    assert markers == ["a"] * 15 + ["b"] * 15
