"""Decisions as OPA decision-log events, for tools that already consume OPA's decision logs.

The event has the fields OPA's decision-log plugin sends (see
https://www.openpolicyagent.org/docs/management-decision-logs): ``labels``, ``decision_id``,
``bundles`` (``{name: {"revision": ...}}``), ``path`` (the rule queried, without ``/v1/data/``),
``input`` (the exact policy input), ``result``, ``requested_by``, ``timestamp`` (RFC 3339 with
nanoseconds, UTC) and ``metrics``. Our own fields ride beside them: ``gatekeeper`` holds the
verdict summary and ticket ids, ``chain`` (exports only) the record's place in the hash chain
(``seq``, ``prev_hash``, ``record_hash``, ``decision_sha256``, ``policy_input_sha256``), so an
event can be matched to the verifiable ``jsonl`` export of the same range.

Two ways out: ``gatekeeper audit export --format opa`` (matching records of the range, one
event per line) and a streaming sink (:class:`DecisionLogFile`, ``GATEKEEPER_DECISION_LOG_FILE``)
that appends every recorded decision as it is recorded.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.audit.rows import filter_conditions
from gatekeeper.audit.schema import decisions
from gatekeeper.audit.sql import SqlAuditLog
from gatekeeper.domain import Decision
from gatekeeper.errors import StorageError

__all__ = [
    "BUNDLE_NAME",
    "DECISION_LOG_PATH",
    "DecisionLogFile",
    "decision_log_event",
    "iter_opa_export",
    "rfc3339_nanos",
]

log = logging.getLogger(__name__)

#: The rule every decision queries (``OpaPolicyEngine``'s ``/v1/data/gatekeeper/main/decision``).
DECISION_LOG_PATH = "gatekeeper/main/decision"
#: The bundle name the OPA sidecar is configured with (chart: ``bundles.gatekeeper``).
BUNDLE_NAME = "gatekeeper"


def rfc3339_nanos(text: str) -> str:
    """``2026-11-24T12:00:00.5Z`` -> ``2026-11-24T12:00:00.500000000Z`` (OPA's timestamp form)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond * 1000:09d}Z"


def decision_log_event(
    document: Mapping[str, Any],
    policy_input: Mapping[str, Any] | None,
    *,
    version: str,
    chain: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One OPA decision-log event for a recorded decision document."""
    ticket = document.get("ticket") or {}
    revision = document.get("policy_revision")
    event: dict[str, Any] = {
        "labels": {
            "app": "forge-gatekeeper",
            "version": version,
            "source": str(document.get("source")),
            "environment": str(document.get("environment")),
        },
        "decision_id": document["decision_id"],
        # A decision the engine never reached (OPA down, input refused) loaded no bundle.
        "bundles": {BUNDLE_NAME: {"revision": revision}} if revision else {},
        "path": DECISION_LOG_PATH,
        "input": dict(policy_input) if policy_input is not None else None,
        "result": {
            "allowed": document.get("allowed"),
            "verdict": document.get("verdict"),
            "mode": document.get("mode"),
            "violations": document.get("violations", []),
            "warnings": document.get("warnings", []),
            "exceptions": document.get("exceptions", []),
        },
        "timestamp": rfc3339_nanos(str(document["created_at"])),
        "metrics": {"timer_gatekeeper_decision_ns": int(
            float(document.get("latency_ms") or 0) * 1_000_000)},
        "gatekeeper": {
            "verdict": document.get("verdict"),
            "dry_run": document.get("dry_run"),
            "namespace": document.get("namespace"),
            "error": document.get("error"),
            **{name: ticket.get(name) for name in
               ("intent_id", "plan_id", "ticket_id", "deploy_id")},
        },
    }
    if document.get("caller"):
        event["requested_by"] = document["caller"]
    if chain is not None:
        event["chain"] = dict(chain)
    return event


def iter_opa_export(
    audit: SqlAuditLog, plan: Any, *, version: str, batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The matching records of ``plan`` (an ``ExportPlan``) as OPA events, one per line."""
    if plan.first_seq is None or plan.end_seq is None:
        return
    matching = sa.and_(sa.true(), *filter_conditions(plan.query))
    columns = [decisions.c.seq, decisions.c.prev_hash, decisions.c.record_hash,
               decisions.c.decision_sha256, decisions.c.policy_input_sha256,
               decisions.c.document, decisions.c.policy_input]
    after = plan.first_seq - 1
    while True:
        try:
            with audit.engine.connect() as connection:
                rows = connection.execute(
                    sa.select(*columns)
                    .where(matching, decisions.c.seq > after, decisions.c.seq <= plan.end_seq)
                    .order_by(decisions.c.seq)
                    .limit(batch_size)
                ).all()
        except SQLAlchemyError as exc:
            raise StorageError(f"export interrupted: cannot read {audit.where}") from exc
        if not rows:
            return
        chunk = []
        for row in rows:
            chain = {"seq": int(row.seq), "prev_hash": row.prev_hash,
                     "record_hash": row.record_hash, "decision_sha256": row.decision_sha256,
                     "policy_input_sha256": row.policy_input_sha256}
            event = decision_log_event(
                json.loads(row.document),
                json.loads(row.policy_input) if row.policy_input else None,
                version=version, chain=chain,
            )
            chunk.append(json.dumps(event, separators=(",", ":"), sort_keys=True) + "\n")
        if progress is not None:
            progress(len(rows))
        yield "".join(chunk)
        after = int(rows[-1].seq)


class DecisionLogFile:
    """Streaming sink: appends every recorded decision as one OPA event line to a file.

    An :class:`~gatekeeper.domain.ports.EvaluationObserver`. A write failure is logged, never
    raised: the decision is already in the audit trail, which stays the record of truth.
    """

    def __init__(self, path: Path, *, version: str) -> None:
        self._path = path
        self._version = version
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def evidence_step(self, step: str, outcome: str, seconds: float) -> None:
        return None

    def decision_recorded(self, decision: Decision) -> None:
        event = decision_log_event(decision.as_dict(), decision.policy_input,
                                   version=self._version)
        line = json.dumps(event, separators=(",", ":"), sort_keys=True) + "\n"
        try:
            with self._lock, self._path.open("a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError as exc:
            log.error("decision log %s: cannot append decision %s: %s",
                      self._path, decision.decision_id, exc.strerror)
