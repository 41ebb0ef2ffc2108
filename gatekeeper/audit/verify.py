"""Recompute the hash chain and check the signed checkpoints; name the first broken record.

The same :class:`ChainVerifier` walks the database (``gatekeeper audit verify``) and an export
file (``gatekeeper audit verify --file``). It is fed entries in ``seq`` order and says, for the
first one that does not fit, what happened to which record:

* ``record N changed``  — its stored content no longer matches its hash, or it was rewritten
  and re-hashed (then the next record, or the signed checkpoint, no longer chains to it);
* ``record N removed``  — a gap in the sequence, a renumbered successor, or a checkpoint that
  covers more records than remain;
* ``record N inserted`` — a record whose successor chains to its predecessor, or rows that
  were renumbered to make room for it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.audit.chain import (
    GENESIS_HASH,
    Checkpoint,
    record_hash,
    sha256_hex,
    verify_checkpoint_signature,
)
from gatekeeper.audit.witness import check_against_witness
from gatekeeper.domain.wording import counted
from gatekeeper.errors import IntegrityError, StorageError

__all__ = ["ChainBrokenError", "ChainVerifier", "VerificationReport", "verify_database"]

_RENUMBER_SEARCH = 64
#: Slack on top of the checkpoint interval before unsigned records count as "stopped".
_CHECKPOINT_GRACE = 300.0


class ChainBrokenError(IntegrityError):
    """The trail does not verify; ``seq`` is the record named in ``message``.

    ``subject`` says what was verified (``audit`` for the store, ``export`` for a file); the
    user sees ``<subject> verification FAILED: <message>``.
    """

    def __init__(self, seq: int, message: str, *, subject: str = "audit") -> None:
        super().__init__(message, context={"record": seq})
        self.seq = seq
        self.subject = subject

    def user_message(self) -> str:
        return f"{self.subject} verification FAILED: {self.message}"


@dataclass
class VerificationReport:
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints: int = 0
    last_checkpoint_seq: int | None = None
    pruned_through: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def uncovered(self) -> int:
        """Records after the last signed checkpoint (chained, but not yet signed)."""
        if self.last_seq is None:
            return 0
        return self.last_seq - (self.last_checkpoint_seq or 0)

    def summary(self) -> str:
        if self.records == 0:
            span = "no records"
        else:
            span = f"{counted(self.records, 'record')} ({self.first_seq}..{self.last_seq})"
        text = f"audit trail verified: {span}, {counted(self.checkpoints, 'signed checkpoint')}"
        if self.last_checkpoint_seq is not None:
            text += f", last at record {self.last_checkpoint_seq}"
        if self.uncovered > 0:
            verb = "is" if self.uncovered == 1 else "are"
            text += (
                f"; {counted(self.uncovered, 'record')} after it {verb} chained but not yet signed"
            )
        if self.pruned_through:
            text += f"; records 1..{self.pruned_through} pruned by retention"
        return text


class ChainVerifier:
    """Feed :meth:`add` entries in order, then :meth:`finish`; raises :class:`ChainBrokenError`.

    Each of ``checkpoints`` is signature-checked against ``public_key``
    (None: the chain alone is checked and the report says so). ``anchored_start`` requires the
    first entry to follow record 0 or a signed checkpoint (a whole trail); an export filtered
    by ticket starts anywhere and is anchored by the checkpoint that ends it.
    """

    def __init__(
        self,
        checkpoints: Iterable[Checkpoint],
        public_key: Ed25519PublicKey | None,
        *,
        anchored_start: bool = True,
        require_final_checkpoint: bool = False,
        start_after: int | None = None,
    ) -> None:
        self.report = VerificationReport()
        self._public_key = public_key
        self._anchored_start = anchored_start
        self._start_after = start_after
        self._require_final = require_final_checkpoint
        self._checkpoints: dict[int, Checkpoint] = {}
        for checkpoint in sorted(checkpoints, key=lambda c: c.seq):
            self._check_signature(checkpoint)
            other = self._checkpoints.setdefault(checkpoint.seq, checkpoint)
            if other.record_hash != checkpoint.record_hash:
                raise ChainBrokenError(
                    checkpoint.seq,
                    f"record {checkpoint.seq} changed: two signed checkpoints give it different "
                    f"hashes (a forked trail)",
                )
            if checkpoint.pruned_through is not None:
                self.report.pruned_through = max(
                    self.report.pruned_through or 0, checkpoint.pruned_through
                )
        if public_key is None:
            self.report.notes.append("no public key: checkpoint signatures were not checked")
        self._expected_seq: int | None = None
        self._prev_hash: str | None = None
        self._recent: deque[tuple[int, str]] = deque(maxlen=_RENUMBER_SEARCH)

    def _check_signature(self, checkpoint: Checkpoint) -> None:
        if self._public_key is None:
            return
        problem = verify_checkpoint_signature(checkpoint, self._public_key)
        if problem is not None:
            raise ChainBrokenError(
                checkpoint.seq, f"checkpoint at record {checkpoint.seq} is not valid: {problem}"
            )

    def _start(self, seq: int, prev_hash: str) -> None:
        if seq == 1:
            if prev_hash != GENESIS_HASH:
                raise ChainBrokenError(1, "record 1 changed: it does not start the chain")
            self._prev_hash = GENESIS_HASH
            return
        anchor = self._checkpoints.get(seq - 1)
        if not self._anchored_start:
            # an export: trusted only through the checkpoint that ends it
            self._prev_hash = anchor.record_hash if anchor is not None else prev_hash
            return
        # A whole trail may start later than record 1 only where retention pruned it (a signed
        # statement) or where the caller asked to start (--since, at a signed checkpoint).
        pruned = self.report.pruned_through or 0
        allowed = anchor is not None and (seq - 1 <= pruned or seq - 1 == self._start_after)
        if not allowed:
            first_missing = max(pruned, self._start_after or 0) + 1
            raise ChainBrokenError(
                first_missing,
                f"record {first_missing} removed: the trail starts at record {seq} and no "
                f"signed retention checkpoint covers the records before it",
            )
        assert anchor is not None
        self._prev_hash = anchor.record_hash

    def add(
        self,
        seq: int,
        prev_hash: str,
        stored_hash: str,
        decision_sha256: str,
        policy_input_sha256: str | None,
    ) -> None:
        """One entry as stored: its claimed ``prev_hash`` and ``stored_hash``, and the digests
        recomputed from its content (or given, for an export's link lines)."""
        report = self.report
        if self._expected_seq is None:
            self._start(seq, prev_hash)
            report.first_seq = seq
        elif seq > self._expected_seq:
            raise ChainBrokenError(
                self._expected_seq,
                f"record {self._expected_seq} removed: the trail goes from record "
                f"{self._expected_seq - 1} to record {seq}",
            )
        elif seq < self._expected_seq:
            raise ChainBrokenError(seq, f"record {seq} inserted: it appears out of order")
        assert self._prev_hash is not None
        expected = record_hash(seq, self._prev_hash, decision_sha256, policy_input_sha256)
        if expected != stored_hash:
            self._diagnose(seq, prev_hash, stored_hash, decision_sha256, policy_input_sha256)
        checkpoint = self._checkpoints.get(seq)
        if checkpoint is not None:
            if checkpoint.record_hash != stored_hash:
                raise ChainBrokenError(
                    seq,
                    f"record {seq} changed: it does not match the signed checkpoint at record "
                    f"{seq} (the records before it were rewritten)",
                )
            report.checkpoints += 1
            report.last_checkpoint_seq = seq
        self._recent.append((seq, stored_hash))
        self._prev_hash = stored_hash
        self._expected_seq = seq + 1
        report.records += 1
        report.last_seq = seq

    def _diagnose(
        self, seq: int, prev_hash: str, stored_hash: str, decision_sha256: str,
        policy_sha256: str | None,
    ) -> None:
        def position_of(hash_value: str) -> int | None:
            return next((s for s, h in reversed(self._recent) if h == hash_value), None)

        if record_hash(seq, prev_hash, decision_sha256, policy_sha256) == stored_hash:
            # The entry is intact where it stands, but does not chain to its predecessor.
            linked = position_of(prev_hash)
            if linked is not None and linked < seq - 1:
                raise ChainBrokenError(
                    linked + 1,
                    f"record {linked + 1} inserted: record {seq} chains to record {linked}",
                )
            if seq - 1 in self._checkpoints or not self._recent:
                raise ChainBrokenError(
                    seq, f"record {seq} changed: it does not chain to the record before it"
                )
            raise ChainBrokenError(
                seq - 1, f"record {seq - 1} changed: record {seq} no longer chains to it"
            )
        for delta in range(1, _RENUMBER_SEARCH + 1):
            for original in (seq - delta, seq + delta):
                if original < 1:
                    continue
                if record_hash(original, prev_hash, decision_sha256, policy_sha256) != stored_hash:
                    continue
                if original < seq:
                    linked = position_of(prev_hash)
                    first = (linked + 1) if linked is not None else original + 1
                    raise ChainBrokenError(
                        first,
                        f"record {first} inserted: the records after it were renumbered "
                        f"(record {seq} was recorded as {original})",
                    )
                raise ChainBrokenError(
                    seq,
                    f"record {seq} removed: the records after it were renumbered "
                    f"(record {seq} was recorded as {original})",
                )
        raise ChainBrokenError(
            seq, f"record {seq} changed: its content does not match its hash"
        )

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """A checkpoint that follows its record in a stream (an export)."""
        self._check_signature(checkpoint)
        report = self.report
        if checkpoint.pruned_through is not None:
            report.pruned_through = max(report.pruned_through or 0, checkpoint.pruned_through)
        if report.last_seq is None and checkpoint.seq >= 0:
            report.checkpoints += 1  # an export with no records: the checkpoint alone
            report.last_checkpoint_seq = checkpoint.seq
            return
        if checkpoint.seq != report.last_seq:
            raise ChainBrokenError(
                checkpoint.seq,
                f"record {checkpoint.seq} removed: the signed checkpoint at record "
                f"{checkpoint.seq} follows record {report.last_seq}",
            )
        if checkpoint.record_hash != self._prev_hash:
            raise ChainBrokenError(
                checkpoint.seq,
                f"record {checkpoint.seq} changed: it does not match the signed checkpoint at "
                f"record {checkpoint.seq}",
            )
        report.checkpoints += 1
        report.last_checkpoint_seq = checkpoint.seq

    def finish(self, head_seq: int | None = None) -> VerificationReport:
        """After the last entry: checkpoints (or the chain head) beyond it mean removals."""
        last = self.report.last_seq or max(self.report.pruned_through or 0, self._start_after or 0)
        beyond = [seq for seq in self._checkpoints if seq > last]
        if beyond:
            seq = min(beyond)
            raise ChainBrokenError(
                last + 1,
                f"record {last + 1} removed: the signed checkpoint at record {seq} covers it",
            )
        if head_seq is not None and head_seq > last:
            raise ChainBrokenError(
                last + 1, f"record {last + 1} removed: the chain head is at record {head_seq}"
            )
        if self._require_final and self.report.records:
            if self.report.last_checkpoint_seq != last:
                raise ChainBrokenError(
                    last,
                    f"record {last} is not covered by a signed checkpoint: the export must end "
                    f"with the checkpoint at its last record",
                )
        return self.report


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(UTC).replace(
        tzinfo=None
    )


_INDEXED = (
    "decision_id", "created_at", "source", "verdict", "mode", "dry_run", "environment",
    "namespace", "intent_id", "plan_id", "ticket_id", "deploy_id", "policy_revision", "caller",
)


def _check_columns(row: Any, images: list[tuple[str, str | None]]) -> None:
    """The query columns and image rows must say what the hashed document says."""
    from gatekeeper.audit.rows import indexed_columns

    seq = int(row.seq)
    try:
        document = json.loads(row.document)
        expected = indexed_columns(document)
    except (ValueError, KeyError, TypeError) as exc:
        raise ChainBrokenError(seq, f"record {seq} changed: its document is not valid") from exc
    stored = tuple(row[: len(_INDEXED)])
    wanted = tuple(expected[name] for name in _INDEXED)
    if stored != wanted:
        # slow path: naive datetimes (SQLite) compare unequal to aware ones; find the column
        for name, have, want in zip(_INDEXED, stored, wanted, strict=True):
            if isinstance(have, datetime) and isinstance(want, datetime):
                have, want = _utc(have), _utc(want)
            if have != want:
                raise ChainBrokenError(
                    seq, f"record {seq} changed: column {name} differs from its hashed document"
                )
    wanted_images = [(i["reference"], i.get("digest")) for i in document.get("images") or []]
    if images != wanted_images:
        raise ChainBrokenError(
            seq, f"record {seq} changed: its image rows differ from its hashed document"
        )


def verify_database(
    engine: Engine,
    public_key: Ed25519PublicKey | None,
    *,
    since: datetime | None = None,
    batch_size: int = 5000,
    progress: Callable[[int], None] | None = None,
    witnessed: Sequence[Checkpoint] | None = None,
    witness_name: str = "the witness",
    checkpoint_every: int | None = None,
    checkpoint_interval: float | None = None,
) -> VerificationReport:
    """Recompute the chain stored in ``engine``; raise :class:`ChainBrokenError` at the first
    record that was changed, removed or inserted. ``since``: start at the last signed
    checkpoint before the first record at or after that time (faster, still anchored).
    A database that cannot be read is a :class:`StorageError`."""
    from gatekeeper.audit.schema import checkpoints

    def pruned_through() -> int | None:
        with engine.connect() as connection:
            return connection.execute(sa.select(sa.func.max(checkpoints.c.pruned_through))).scalar()

    try:
        for attempt in range(3):
            pruned_before = pruned_through()
            try:
                return _verify_database(
                    engine, public_key, since, batch_size, progress,
                    witnessed, witness_name, checkpoint_every, checkpoint_interval,
                )
            except ChainBrokenError:
                # Retention committed while we read (it deletes a prefix and signs that it
                # did): start again on the new state; a real break stays broken.
                if attempt == 2 or pruned_through() == pruned_before:
                    raise
        raise AssertionError("unreachable")
    except SQLAlchemyError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise StorageError(
            f"cannot verify audit store {where}: {type(exc).__name__}"
        ) from exc


def _verify_database(
    engine: Engine,
    public_key: Ed25519PublicKey | None,
    since: datetime | None,
    batch_size: int,
    progress: Callable[[int], None] | None,
    witnessed: Sequence[Checkpoint] | None = None,
    witness_name: str = "the witness",
    checkpoint_every: int | None = None,
    checkpoint_interval: float | None = None,
) -> VerificationReport:
    from gatekeeper.audit.evidence import evidence_problem
    from gatekeeper.audit.rows import checkpoint_from_row
    from gatekeeper.audit.schema import chain_head, checkpoints, decision_images, decisions

    with engine.connect() as connection:
        # Checkpoints first, then the head: every checkpoint read was committed before the head
        # was read, so one beyond the head means the head (and the records) were cut back.
        all_checkpoints = [
            checkpoint_from_row(row) for row in connection.execute(sa.select(checkpoints))
        ]
        head = connection.execute(sa.select(chain_head).where(chain_head.c.id == 1)).one()
        # (a) a row beyond the head is invisible to the chain walk, served first by queries
        # and blocks every later write: it is an insertion
        beyond_head = connection.execute(
            sa.select(sa.func.min(decisions.c.seq)).where(decisions.c.seq > int(head.seq))
        ).scalar()
        if beyond_head is not None:
            raise ChainBrokenError(
                int(beyond_head),
                f"record {int(beyond_head)} inserted: it lies beyond the chain head at record "
                f"{int(head.seq)}",
            )
        # (b) the witness: what it holds must be in the database, unchanged and in order
        if witnessed is not None:
            problems = check_against_witness(all_checkpoints, witnessed, describe=witness_name)
            if problems:
                raise ChainBrokenError(*problems[0])
            all_checkpoints = all_checkpoints + list(witnessed)
        head_seq = max([int(head.seq)] + [c.seq for c in all_checkpoints])
        start = 0
        if since is not None:
            first = connection.execute(
                sa.select(sa.func.min(decisions.c.seq)).where(decisions.c.created_at >= since)
            ).scalar()
            if first is None:
                first = head_seq + 1
            anchors = [c.seq for c in all_checkpoints if c.seq < first]
            if anchors:
                start = max(anchors)
    verifier = ChainVerifier(all_checkpoints, public_key, start_after=start or None)
    columns = [decisions.c[name] for name in _INDEXED] + [
        decisions.c.seq, decisions.c.prev_hash, decisions.c.record_hash,
        decisions.c.decision_sha256, decisions.c.policy_input_sha256,
        decisions.c.document, decisions.c.policy_input,
    ]
    def read(last: int) -> tuple[Sequence[Any], dict[int, list[tuple[str, str | None]]]]:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(*columns)
                .where(decisions.c.seq > last, decisions.c.seq <= head_seq)
                .order_by(decisions.c.seq)
                .limit(batch_size)
            ).all()
            images: dict[int, list[tuple[str, str | None]]] = {}
            if not rows:
                return rows, images
            for image in connection.execute(
                sa.select(
                    decision_images.c.decision_seq, decision_images.c.reference,
                    decision_images.c.digest,
                )
                .where(
                    decision_images.c.decision_seq > last,
                    decision_images.c.decision_seq <= rows[-1].seq,
                )
                .order_by(decision_images.c.decision_seq, decision_images.c.position)
            ):
                images.setdefault(int(image.decision_seq), []).append(
                    (image.reference, image.digest)
                )
        return rows, images

    verified_evidence: set[str] = set()
    # Read the next batch while this one is hashed: the database and the CPU work in parallel
    # (the driver releases the GIL while it waits), and memory stays at two batches.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-verify-read") as reader:
        pending = reader.submit(read, start)
        while True:
            rows, images = pending.result()
            if not rows:
                break
            pending = reader.submit(read, int(rows[-1].seq))
            for row in rows:
                seq = int(row.seq)
                decision_sha = sha256_hex(row.document.encode())
                policy_sha = sha256_hex(row.policy_input.encode()) if row.policy_input else None
                verifier.add(seq, row.prev_hash, row.record_hash, decision_sha, policy_sha)
                if row.decision_sha256 != decision_sha or row.policy_input_sha256 != policy_sha:
                    raise ChainBrokenError(
                        seq, f"record {seq} changed: its stored digests differ from its content"
                    )
                _check_columns(row, images.pop(seq, []))
            if images:  # image rows whose decision row is gone
                orphan = min(images)
                raise ChainBrokenError(orphan, f"record {orphan} removed: its image rows remain")
            with engine.connect() as connection:  # (d) the evidence documents they reference
                problem = evidence_problem(
                    connection, [(int(r.seq), r.policy_input) for r in rows], verified_evidence
                )
            if problem is not None:
                raise ChainBrokenError(*problem)
            if progress is not None:
                progress(len(rows))
    report = verifier.finish(head_seq=head_seq)
    # (c) with a key, the writer signs every `checkpoint_every` records or `interval` seconds:
    # unsigned records beyond that (none signed at all, or checkpoints that stop) mean
    # checkpoints were deleted or the signer was stopped, not a trail still being written
    if public_key is not None and checkpoint_every is not None and report.uncovered:
        first = (report.last_checkpoint_seq or 0) + 1
        # the head's checkpoint_at: when the last checkpoint was signed, or the first record
        # appended (the writer's own clock for time-based checkpoints)
        since_signed = head.checkpoint_at
        age = 0.0
        if since_signed is not None:
            age = (datetime.now(UTC) - since_signed.replace(
                tzinfo=since_signed.tzinfo or UTC)).total_seconds()
        overdue = report.uncovered >= checkpoint_every or (
            checkpoint_interval is not None and age > checkpoint_interval + _CHECKPOINT_GRACE
        )
        if overdue and report.checkpoints == 0:
            raise ChainBrokenError(first, (
                f"0 signed checkpoints for {report.records} records although a checkpoint key "
                f"is configured and one was due (deleted, or the signer is not running?)"
            ))
        if overdue:
            raise ChainBrokenError(first, (
                f"checkpoints stop at record {first - 1}: the {report.uncovered} records after "
                f"it are not signed although a checkpoint is due every {checkpoint_every} "
                "records or the interval"
            ))
    return report
