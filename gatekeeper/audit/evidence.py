"""The evidence store of the audit trail: each evidence document once, by its sha256.

A decision's policy input references large evidence (an SBOM's component list) by the sha256
of its RFC 8785 canonical JSON (:mod:`gatekeeper.domain.evidence_documents`). The row keeps
that input, whose sha256 the hash chain covers, so the chain commits to every reference; the
document itself is stored once in ``gatekeeper_evidence_documents`` (its canonical text) and
``gatekeeper_decision_evidence`` says which decision references which document. A document is
verified by hashing its stored text again; retention deletes a document only when no
remaining decision references it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from gatekeeper.audit.chain import sha256_hex
from gatekeeper.audit.rows import Prepared
from gatekeeper.audit.schema import decision_evidence, evidence_documents
from gatekeeper.domain.canonical import canonical_json
from gatekeeper.domain.evidence_documents import mentions_references, referenced_hashes
from gatekeeper.errors import IntegrityError, StorageError

__all__ = [
    "evidence_problem",
    "load_evidence",
    "prune_unreferenced_evidence",
    "read_verified_evidence",
    "referenced_by",
    "store_evidence",
]

_CHUNK = 500  # hashes per IN (...) list


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start:start + _CHUNK]


def _stored(connection: Connection, hashes: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(hashes):
        found.update(connection.execute(
            sa.select(evidence_documents.c.sha256).where(evidence_documents.c.sha256.in_(chunk))
        ).scalars())
    return found


def store_evidence(connection: Connection, prepared: Sequence[Prepared]) -> None:
    """Insert the documents ``prepared`` references that are not stored yet (inside the
    append transaction, under the chain-head lock, so retention cannot interleave).

    A referenced document that is neither stored nor given, or whose content does not hash
    to its key, refuses the whole batch (:class:`StorageError`): a decision is never recorded
    with a reference nobody could resolve.
    """
    needed = sorted({digest for item in prepared for digest in item.evidence_hashes})
    if not needed:
        return
    given: dict[str, Any] = {}
    for item in prepared:
        given.update(item.evidence)
    rows: list[dict[str, Any]] = []
    for digest in sorted(set(needed) - _stored(connection, needed)):
        if digest not in given:
            raise StorageError(
                f"cannot record decision {prepared[0].decision_id}: it references evidence "
                f"document {digest}, which is neither stored nor given"
            )
        text = canonical_json(given[digest])
        if sha256_hex(text) != digest:
            raise StorageError(
                f"cannot record decision {prepared[0].decision_id}: evidence document {digest} "
                "does not hash to its key"
            )
        rows.append({"sha256": digest, "document": text.decode(), "size_bytes": len(text)})
    if not rows:
        return
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(
            postgresql.insert(evidence_documents).on_conflict_do_nothing(), rows
        )
    elif dialect == "sqlite":
        connection.execute(sqlite.insert(evidence_documents).on_conflict_do_nothing(), rows)
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        connection.execute(evidence_documents.insert(), rows)


def _read_texts(connection: Connection, hashes: Sequence[str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for chunk in _chunks(hashes):
        for row in connection.execute(
            sa.select(evidence_documents.c.sha256, evidence_documents.c.document)
            .where(evidence_documents.c.sha256.in_(chunk))
        ):
            texts[str(row.sha256)] = str(row.document)
    return texts


def read_verified_evidence(connection: Connection, hashes: Iterable[str]) -> dict[str, str]:
    """The canonical text of each document (sha256 -> text), each re-hashed: a missing or
    altered document is an :class:`IntegrityError` naming it."""
    wanted = sorted(set(hashes))
    texts = _read_texts(connection, wanted)
    for digest in wanted:
        text = texts.get(digest)
        if text is None:
            raise IntegrityError(f"evidence document {digest} is missing from the audit store")
        if sha256_hex(text.encode()) != digest:
            raise IntegrityError(
                f"evidence document {digest} changed: its content does not match its hash"
            )
    return texts


def load_evidence(connection: Connection, hashes: Iterable[str]) -> dict[str, Any]:
    """The documents (sha256 -> parsed document), verified by re-hashing."""
    return {
        digest: json.loads(text)
        for digest, text in read_verified_evidence(connection, hashes).items()
    }


def referenced_by(connection: Connection, seqs: Sequence[int]) -> dict[int, set[str]]:
    """The link rows of the decisions ``seqs``: seq -> hashes."""
    links: dict[int, set[str]] = {}
    if not seqs:
        return links
    for row in connection.execute(
        sa.select(decision_evidence.c.decision_seq, decision_evidence.c.sha256).where(
            decision_evidence.c.decision_seq >= min(seqs),
            decision_evidence.c.decision_seq <= max(seqs),
        )
    ):
        links.setdefault(int(row.decision_seq), set()).add(str(row.sha256))
    return links


def evidence_problem(
    connection: Connection, batch: Sequence[tuple[int, str | None]], verified: set[str]
) -> tuple[int, str] | None:
    """For ``gatekeeper audit verify``: the first record of ``batch`` (``(seq, policy input
    text)``, in order) whose evidence does not hold, and why; None when all hold.

    The references come from the policy input (which the chain covers): the link rows must
    name exactly those documents, and every document must be stored and hash to its key.
    ``verified`` remembers the documents already re-hashed (each is hashed once per run).
    """
    wanted: dict[int, set[str]] = {}
    for seq, text in batch:
        if text and mentions_references(text):
            wanted[seq] = set(referenced_hashes(json.loads(text)))
    if not wanted and not sa.inspect(connection).has_table(decision_evidence.name):
        return None  # a store from before migration 2 (verified as it is, not migrated)
    links = referenced_by(connection, [seq for seq, _ in batch])
    for seq, _ in batch:
        if links.get(seq, set()) != wanted.get(seq, set()):
            return seq, (
                f"record {seq} changed: its evidence links differ from the evidence documents "
                "its policy input references"
            )
    for seq, hashes in wanted.items():
        need = sorted(hashes - verified)
        try:
            read_verified_evidence(connection, need)
        except IntegrityError as exc:
            return seq, f"record {seq}: {exc.message}"
        verified.update(need)
    return None


def prune_unreferenced_evidence(connection: Connection, through: int) -> int:
    """Retention, inside its transaction (a prune permit is in place): drop the link rows of
    the pruned decisions, then every document no remaining decision references."""
    connection.execute(
        decision_evidence.delete().where(decision_evidence.c.decision_seq <= through)
    )
    still = sa.select(decision_evidence.c.sha256).where(
        decision_evidence.c.sha256 == evidence_documents.c.sha256
    )
    deleted = connection.execute(evidence_documents.delete().where(~still.exists())).rowcount
    return int(deleted or 0)

