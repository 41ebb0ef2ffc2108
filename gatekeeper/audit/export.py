"""Streamed exports of the trail (JSON lines or CSV) and their offline verification.

An export covers the records from the first one matching the filters up to the first signed
checkpoint at or after the last match. Matching records carry their whole decision document;
the others in between appear as *links* (their chain entry only: seq, hashes and digests, no
content), so the chain can be recomputed end to end. Every checkpoint inside the range follows
its record, and the export ends with the checkpoint that covers it. Each evidence document a
matching record references by hash (a large SBOM component list, see
:mod:`gatekeeper.audit.evidence`) is written once, as an ``evidence`` line before the first
record that references it. With only the public key,
``gatekeeper audit verify --file EXPORT`` proves that no matching record was changed, removed
or inserted after it was recorded.

Memory stays constant: rows are read in keyset batches (``seq > last ORDER BY seq LIMIT n``)
and each batch is written out before the next is read.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import rfc8785
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.audit.chain import Checkpoint, sha256_hex
from gatekeeper.audit.evidence import read_verified_evidence
from gatekeeper.audit.rows import checkpoint_from_row, filter_conditions
from gatekeeper.audit.schema import checkpoints, decisions
from gatekeeper.audit.sql import SqlAuditLog
from gatekeeper.audit.verify import ChainBrokenError, ChainVerifier, VerificationReport
from gatekeeper.domain import DecisionQuery
from gatekeeper.domain.evidence_documents import mentions_references, referenced_hashes
from gatekeeper.domain.wording import counted
from gatekeeper.errors import InvalidInputError, StorageError

__all__ = [
    "CSV_COLUMNS",
    "EXPORT_FORMAT",
    "ExportPlan",
    "ExportReport",
    "iter_export",
    "plan_export",
    "verify_export_file",
]

#: v2 adds ``evidence`` lines; v1 exports (no evidence lines) still verify.
EXPORT_FORMAT = "gatekeeper-audit-export/v2"
_READABLE_FORMATS = ("gatekeeper-audit-export/v1", EXPORT_FORMAT)
Format = Literal["jsonl", "csv"]

CSV_COLUMNS = [
    "type", "seq", "prev_hash", "record_hash", "decision_sha256", "policy_input_sha256",
    "decision_id", "created_at", "verdict", "source", "environment", "namespace",
    "intent_id", "plan_id", "ticket_id", "deploy_id", "policy_revision", "caller",
    "key_id", "pruned_through", "signature", "decision",
]
_CSV_FROM_DOCUMENT = ("decision_id", "verdict", "source", "environment", "namespace",
                      "policy_revision", "caller", "created_at")


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """What one export will contain, decided (and checkpointed) before the first byte."""

    query: DecisionQuery
    checkpoint: Checkpoint
    first_seq: int | None
    end_seq: int | None
    entries: int
    created_at: str

    def header(self) -> dict[str, Any]:
        filters = {
            key: (value.isoformat() if isinstance(value, datetime) else
                  value.value if hasattr(value, "value") else value)
            for key in ("since", "until", "intent_id", "plan_id", "ticket_id", "deploy_id",
                        "image_digest", "verdict", "namespace")
            if (value := getattr(self.query, key)) is not None
        }
        return {
            "type": "header", "format": EXPORT_FORMAT, "created_at": self.created_at,
            "filters": filters, "first_seq": self.first_seq, "covered_through": self.end_seq,
            "key_id": self.checkpoint.key_id,
        }


def plan_export(audit: SqlAuditLog, query: DecisionQuery) -> ExportPlan:
    """Sign the head (when this process holds the key), then find the range to stream."""
    if audit.signer is not None:
        cover = audit.write_checkpoint()
    else:
        try:
            with audit.engine.connect() as connection:
                row = connection.execute(
                    sa.select(checkpoints).order_by(checkpoints.c.seq.desc()).limit(1)
                ).first()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read audit store {audit.where}") from exc
        cover = checkpoint_from_row(row) if row is not None else None
    if cover is None:
        raise StorageError(
            "no signed checkpoint exists and no audit signing key is configured: an export "
            "could not be verified (configure GATEKEEPER_AUDIT_SIGNING_KEY_FILE)"
        )
    matching = sa.and_(sa.true(), *filter_conditions(query))
    created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    try:
        with audit.engine.connect() as connection:
            first, last = connection.execute(
                sa.select(sa.func.min(decisions.c.seq), sa.func.max(decisions.c.seq)).where(
                    matching, decisions.c.seq <= cover.seq
                )
            ).one()
            if first is None:
                return ExportPlan(query, cover, None, None, 0, created)
            end_row = connection.execute(
                sa.select(checkpoints)
                .where(checkpoints.c.seq >= last, checkpoints.c.seq <= cover.seq)
                .order_by(checkpoints.c.seq, checkpoints.c.id)
                .limit(1)
            ).one()
            end = checkpoint_from_row(end_row)
            entries = connection.execute(
                sa.select(sa.func.count()).where(
                    decisions.c.seq >= first, decisions.c.seq <= end.seq
                )
            ).scalar_one()
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot plan the export from {audit.where}: {exc}") from exc
    return ExportPlan(query, end, int(first), end.seq, int(entries), created)


def _checkpoint_line(checkpoint: Checkpoint) -> dict[str, Any]:
    return {"type": "checkpoint", **checkpoint.as_dict()}


def iter_export(
    audit: SqlAuditLog, plan: ExportPlan, output_format: Format, *, batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The export as text chunks (one per batch): header, entries, checkpoints."""
    if output_format not in ("jsonl", "csv"):
        raise InvalidInputError(f"unknown export format {output_format!r}: use jsonl or csv",
                                field="format")
    csv_mode = output_format == "csv"
    yield _csv_row(CSV_COLUMNS) if csv_mode else json.dumps(plan.header()) + "\n"
    if plan.first_seq is None or plan.end_seq is None:
        yield _render_checkpoint(plan.checkpoint, csv_mode)
        return
    matching = sa.and_(sa.true(), *filter_conditions(plan.query))
    with audit.engine.connect() as connection:
        inside = {
            cp.seq: cp
            for cp in map(checkpoint_from_row, connection.execute(
                sa.select(checkpoints)
                .where(checkpoints.c.seq >= plan.first_seq, checkpoints.c.seq <= plan.end_seq)
                .order_by(checkpoints.c.id)
            ))
        }
    inside[plan.checkpoint.seq] = plan.checkpoint
    columns = [
        decisions.c.seq, decisions.c.prev_hash, decisions.c.record_hash,
        decisions.c.decision_sha256, decisions.c.policy_input_sha256,
        sa.case((matching, decisions.c.document), else_=None).label("document"),
    ]
    end_seq = plan.end_seq

    def read(after: int) -> Sequence[Any]:
        try:
            with audit.engine.connect() as connection:
                return connection.execute(
                    sa.select(*columns)
                    .where(decisions.c.seq > after, decisions.c.seq <= end_seq)
                    .order_by(decisions.c.seq)
                    .limit(batch_size)
                ).all()
        except SQLAlchemyError as exc:
            raise StorageError(f"export interrupted: cannot read {audit.where}") from exc

    written: set[str] = set()  # evidence documents already in the export
    # One batch is read ahead while the previous one is rendered and sent: two in memory.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-export-read") as reader:
        pending = reader.submit(read, plan.first_seq - 1)
        while True:
            rows = pending.result()
            if not rows:
                break
            last = int(rows[-1].seq)
            if last < end_seq:
                pending = reader.submit(read, last)
            chunk: list[str] = []
            documents = _new_evidence(audit, rows, written)
            for row in rows:
                for digest in _references(row.document):
                    if digest in documents:
                        chunk.append(_render_evidence(digest, documents.pop(digest), csv_mode))
                chunk.append(_render_entry(row, csv_mode))
                checkpoint = inside.get(int(row.seq))
                if checkpoint is not None:
                    chunk.append(_render_checkpoint(checkpoint, csv_mode))
            if progress is not None:
                progress(len(rows))
            yield "".join(chunk)
            if last >= end_seq:
                break


def _references(document: str | None) -> list[str]:
    """The evidence documents a stored decision document references (cheap when none)."""
    if document is None or not mentions_references(document):
        return []
    return referenced_hashes(json.loads(document))


def _new_evidence(audit: SqlAuditLog, rows: Sequence[Any], written: set[str]) -> dict[str, str]:
    """The canonical text of the documents this batch references that are not written yet;
    they are marked written (the caller writes each before its first record)."""
    wanted = sorted({d for row in rows for d in _references(row.document)} - written)
    if not wanted:
        return {}
    try:
        with audit.engine.connect() as connection:
            texts = read_verified_evidence(connection, wanted)
    except SQLAlchemyError as exc:
        raise StorageError(f"export interrupted: cannot read {audit.where}") from exc
    written.update(wanted)
    return texts


def _render_evidence(digest: str, text: str, csv_mode: bool) -> str:
    if csv_mode:  # the document's hash in decision_sha256, its canonical text in decision
        values = {"type": "evidence", "decision_sha256": digest, "decision": text}
        return _csv_row([_csv_value(values.get(name)) for name in CSV_COLUMNS])
    # the stored text is canonical JSON: written as is
    return f'{{"type":"evidence","sha256":"{digest}","document":{text}}}\n'


def _csv_row(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _render_entry(row: Any, csv_mode: bool) -> str:
    kind = "record" if row.document is not None else "link"
    policy = row.policy_input_sha256
    if csv_mode:
        values: dict[str, Any] = {
            "type": kind, "seq": row.seq, "prev_hash": row.prev_hash,
            "record_hash": row.record_hash, "decision_sha256": row.decision_sha256,
            "policy_input_sha256": policy or "",
        }
        if row.document is not None:
            document = json.loads(row.document)
            ticket = document.get("ticket") or {}
            for name in _CSV_FROM_DOCUMENT:
                values[name] = document.get(name)
            for name in ("intent_id", "plan_id", "ticket_id", "deploy_id"):
                values[name] = ticket.get(name)
            values["decision"] = row.document
        return _csv_row([_csv_value(values.get(name)) for name in CSV_COLUMNS])
    # The stored document is already canonical JSON: written as is, never re-serialised.
    policy_json = "null" if policy is None else f'"{policy}"'
    text = (
        f'{{"type":"{kind}","seq":{int(row.seq)},"prev_hash":"{row.prev_hash}",'
        f'"record_hash":"{row.record_hash}","decision_sha256":"{row.decision_sha256}",'
        f'"policy_input_sha256":{policy_json}'
    )
    if row.document is not None:
        text += f',"decision":{row.document}'
    return text + "}\n"


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _render_checkpoint(checkpoint: Checkpoint, csv_mode: bool) -> str:
    if not csv_mode:
        return json.dumps(_checkpoint_line(checkpoint), separators=(",", ":")) + "\n"
    values = {"type": "checkpoint", "seq": checkpoint.seq, "record_hash": checkpoint.record_hash,
              "created_at": checkpoint.created_at, "key_id": checkpoint.key_id,
              "pruned_through": checkpoint.pruned_through, "signature": checkpoint.signature}
    return _csv_row([_csv_value(values.get(name)) for name in CSV_COLUMNS])


@dataclass
class ExportReport:
    chain: VerificationReport
    records: int
    links: int
    evidence_documents: int = 0

    def summary(self) -> str:
        chain = self.chain
        evidence = (f", {counted(self.evidence_documents, 'evidence document')}"
                    if self.evidence_documents else "")
        return (
            f"export verified: {counted(self.records, 'record')} and "
            f"{counted(self.links, 'chain link')} ({chain.first_seq or 0}..{chain.last_seq or 0})"
            f"{evidence}, "
            f"{counted(chain.checkpoints, 'signed checkpoint')}, covered by the checkpoint at "
            f"record {chain.last_checkpoint_seq}"
        )


def _entries(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, parsed row) of a JSONL or CSV export, streamed."""
    with path.open("r", encoding="utf-8", newline="") as handle:
        first = handle.readline()
        handle.seek(0)
        if first.startswith("type,"):
            for number, row in enumerate(csv.DictReader(handle), start=2):
                yield number, dict(row)
            return
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise InvalidInputError(f"{path} line {number}: not JSON") from exc
            if not isinstance(value, dict):
                raise InvalidInputError(f"{path} line {number}: not a JSON object")
            yield number, value


def verify_export_file(path: Path, public_key: Ed25519PublicKey) -> ExportReport:
    """Verify an export offline; raises ChainBrokenError naming the first bad record."""
    try:
        return _verify_export_file(path, public_key)
    except ChainBrokenError as exc:
        if exc.subject == "export":
            raise
        raise ChainBrokenError(exc.seq, exc.message, subject="export") from exc


def _verify_export_file(path: Path, public_key: Ed25519PublicKey) -> ExportReport:
    verifier = ChainVerifier((), public_key, anchored_start=False, require_final_checkpoint=True)
    records = links = 0
    saw_final_checkpoint = False
    evidence: set[str] = set()  # documents seen (and re-hashed) so far
    try:
        for number, row in _entries(path):
            kind = row.get("type")
            where = f"{path} line {number}"
            if kind == "header":
                if row.get("format") not in _READABLE_FORMATS:
                    raise InvalidInputError(f"{where}: unknown export format {row.get('format')!r}")
                continue
            if kind == "checkpoint":
                cleaned = {k: (v if v != "" else None) for k, v in row.items()}
                verifier.add_checkpoint(Checkpoint.from_dict(cleaned, where=where))
                saw_final_checkpoint = True
                continue
            if kind == "evidence":
                evidence.add(_verified_evidence_line(row, where))
                continue
            if kind not in ("record", "link"):
                raise InvalidInputError(f"{where}: unknown line type {kind!r}")
            saw_final_checkpoint = False
            seq = int(row["seq"])
            decision_sha = str(row["decision_sha256"])
            if kind == "record":
                decision = row["decision"]
                if isinstance(decision, str):  # CSV: the canonical text itself
                    content = decision.encode()
                    decision = json.loads(decision)
                    _check_csv_columns(seq, row, decision)
                else:
                    content = bytes(rfc8785.dumps(decision))
                for digest in referenced_hashes(decision):
                    if digest not in evidence:
                        raise ChainBrokenError(
                            seq, f"record {seq} references evidence document {digest}, which "
                            "the export does not carry before it", subject="export",
                        )
                if sha256_hex(content) != decision_sha:
                    raise ChainBrokenError(
                        seq, f"record {seq} changed: its decision does not match its digest",
                        subject="export",
                    )
                records += 1
            else:
                links += 1
            verifier.add(seq, str(row["prev_hash"]), str(row["record_hash"]), decision_sha,
                         row.get("policy_input_sha256") or None)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"{path}: malformed export ({exc})") from exc
    if not saw_final_checkpoint:
        last = verifier.report.last_seq or 0
        raise ChainBrokenError(
            last, f"the export does not end with a signed checkpoint (after record {last}): "
            f"it was cut short"
        )
    return ExportReport(verifier.finish(), records, links, len(evidence))


def _verified_evidence_line(row: dict[str, Any], where: str) -> str:
    """The hash of an ``evidence`` line whose document hashes to it (else ChainBrokenError)."""
    document = row.get("document")
    if document is None:  # CSV: hash in decision_sha256, canonical text in decision
        digest, text = str(row["decision_sha256"]), str(row["decision"])
        content = text.encode()
    else:
        digest, content = str(row["sha256"]), bytes(rfc8785.dumps(document))
    if sha256_hex(content) != digest:
        raise ChainBrokenError(
            0, f"{where}: evidence document {digest} changed: its content does not match its "
            "hash", subject="export",
        )
    return digest


def _check_csv_columns(seq: int, row: dict[str, Any], document: dict[str, Any]) -> None:
    for name in ("decision_id", "verdict"):
        if (row.get(name) or None) != document.get(name):
            raise ChainBrokenError(
                seq, f"record {seq} changed: column {name} differs from its decision"
            )
