"""Rows of the trail: columns derived from a decision document, query filters, cursors."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from gatekeeper.audit.chain import Checkpoint, canonical_json, sha256_hex
from gatekeeper.audit.schema import decision_images, decisions
from gatekeeper.domain import DecisionQuery
from gatekeeper.domain.evidence_documents import referenced_hashes
from gatekeeper.errors import InvalidInputError

__all__ = [
    "Prepared",
    "checkpoint_from_row",
    "decode_cursor",
    "encode_cursor",
    "filter_conditions",
    "indexed_columns",
    "prepare",
]


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "seq":
            raise ValueError(prefix)
        return int(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError("invalid cursor", field="cursor") from exc


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(slots=True)
class Prepared:
    """A decision ready to be chained: canonical bytes and digests computed outside the lock."""

    decision_id: str
    row: dict[str, Any]
    images: list[dict[str, Any]]
    #: Hashes of the evidence documents the policy input references (sorted, each once) ...
    evidence_hashes: list[str] = field(default_factory=list)
    #: ... and those documents, as far as the caller has them (sha256 -> document).
    evidence: Mapping[str, Any] = field(default_factory=dict)


def indexed_columns(document: Mapping[str, Any]) -> dict[str, Any]:
    """The query columns of a decision row, derived from its document (verify re-derives them)."""
    ticket = document.get("ticket") or {}
    return {
        "decision_id": document["decision_id"],
        "created_at": _parse_time(document["created_at"]),
        "source": document["source"],
        "verdict": document["verdict"],
        "mode": document["mode"],
        "dry_run": bool(document["dry_run"]),
        "environment": document["environment"],
        "namespace": document.get("namespace"),
        "intent_id": ticket.get("intent_id"),
        "plan_id": ticket.get("plan_id"),
        "ticket_id": ticket.get("ticket_id"),
        "deploy_id": ticket.get("deploy_id"),
        "policy_revision": document.get("policy_revision"),
        "caller": document.get("caller"),
    }


def prepare(
    document: Mapping[str, Any],
    policy_input: Mapping[str, Any] | None,
    evidence: Mapping[str, Any] | None = None,
) -> Prepared:
    """Columns of one decision row from its public document (and Rego input, and the
    evidence documents that input references by hash)."""
    canonical = canonical_json(document).decode()
    policy_text = canonical_json(policy_input).decode() if policy_input is not None else None
    row = {
        **indexed_columns(document),
        "document": canonical,
        "policy_input": policy_text,
        "decision_sha256": sha256_hex(canonical.encode()),
        "policy_input_sha256": sha256_hex(policy_text.encode()) if policy_text else None,
    }
    images = [
        {"position": position, "reference": image["reference"], "digest": image.get("digest")}
        for position, image in enumerate(document.get("images") or [])
    ]
    hashes = referenced_hashes(policy_input) if policy_input is not None else []
    return Prepared(document["decision_id"], row, images, hashes, dict(evidence or {}))


def checkpoint_from_row(row: Any) -> Checkpoint:
    return Checkpoint(
        seq=int(row.seq),
        record_hash=row.record_hash,
        created_at=row.created_at,
        key_id=row.key_id,
        signature=row.signature,
        pruned_through=int(row.pruned_through) if row.pruned_through is not None else None,
    )


def filter_conditions(query: DecisionQuery) -> list[sa.ColumnElement[bool]]:
    """SQL conditions for the filters of ``query`` (pagination aside)."""
    conditions: list[sa.ColumnElement[bool]] = []
    for column in ("intent_id", "plan_id", "ticket_id", "deploy_id", "namespace"):
        value = getattr(query, column)
        if value is not None:
            conditions.append(decisions.c[column] == value)
    if query.verdict is not None:
        conditions.append(decisions.c.verdict == query.verdict.value)
    if query.since is not None:
        conditions.append(decisions.c.created_at >= query.since)
    if query.until is not None:
        conditions.append(decisions.c.created_at < query.until)
    if query.image_digest is not None:
        conditions.append(
            decisions.c.seq.in_(
                sa.select(decision_images.c.decision_seq).where(
                    decision_images.c.digest == query.image_digest
                )
            )
        )
    return conditions
