"""The chain append transaction (lock head, chain, insert, checkpoint) and the spool replay."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.audit.chain import Checkpoint, record_hash
from gatekeeper.audit.checkpoints import CheckpointsMixin
from gatekeeper.audit.evidence import store_evidence
from gatekeeper.audit.rows import Prepared, prepare
from gatekeeper.audit.schema import (
    chain_head,
    checkpoints,
    decision_evidence,
    decision_images,
    decisions,
)
from gatekeeper.audit.witness import check_head_against_checkpoint
from gatekeeper.errors import GatekeeperError, StorageError

__all__ = ["AppendMixin"]

log = logging.getLogger(__name__)

_REPLAY_RETRY_SECONDS = 1.0

# Built once: an append executes them with its rows as parameters.
_INSERT_DECISIONS = decisions.insert()
_INSERT_IMAGES = decision_images.insert()
_INSERT_EVIDENCE_LINKS = decision_evidence.insert()
_UPDATE_HEAD = chain_head.update().where(chain_head.c.id == 1)


class AppendMixin(CheckpointsMixin):
    """Appends prepared decisions to the chain; replays the spool in order."""

    def _append(self, prepared: Sequence[Prepared], *, dedupe: bool) -> None:
        """One transaction: lock the head, chain the batch, insert, checkpoint if due."""
        signed: Checkpoint | None = None
        with self._append_turn(), self._engine.begin() as connection:
            head = self._lock_head(connection)
            if str(head.record_hash) != self._last_head_hash:
                # the head moved without us (another replica, or someone with the database)
                trusted = self._trusted_checkpoint(connection)
                try:
                    check_head_against_checkpoint(connection, head, trusted, self._verified)
                except StorageError as exc:
                    self.chain_error = exc.message
                    raise
            if dedupe and prepared:
                ids = [item.decision_id for item in prepared]
                seen = set(
                    connection.execute(
                        sa.select(decisions.c.decision_id).where(decisions.c.decision_id.in_(ids))
                    ).scalars()
                )
                unique: list[Prepared] = []
                for item in prepared:
                    if item.decision_id not in seen:
                        seen.add(item.decision_id)
                        unique.append(item)
                prepared = unique
            seq, prev = int(head.seq), str(head.record_hash)
            rows: list[dict[str, Any]] = []
            images: list[dict[str, Any]] = []
            for item in prepared:
                seq += 1
                digest = record_hash(
                    seq, prev, item.row["decision_sha256"], item.row["policy_input_sha256"]
                )
                rows.append({**item.row, "seq": seq, "prev_hash": prev, "record_hash": digest})
                images.extend({**image, "decision_seq": seq} for image in item.images)
                prev = digest
            store_evidence(connection, prepared)
            if rows:
                connection.execute(_INSERT_DECISIONS, rows)
            if images:
                connection.execute(_INSERT_IMAGES, images)
            links = [{"decision_seq": row["seq"], "sha256": digest}
                     for row, item in zip(rows, prepared, strict=True)
                     for digest in item.evidence_hashes]
            if links:
                connection.execute(_INSERT_EVIDENCE_LINKS, links)
            values: dict[str, Any] = {"seq": seq, "record_hash": prev}
            if head.checkpoint_at is None:
                values["checkpoint_at"] = datetime.now(UTC)
            if self._checkpoint_due(head, seq):
                assert self.signer is not None
                signed = self.signer.sign(seq, prev)
                connection.execute(checkpoints.insert().values(**signed.as_dict()))
                values.update(checkpoint_seq=seq, checkpoint_at=datetime.now(UTC))
            if rows or len(values) > 2:
                connection.execute(_UPDATE_HEAD, values)
        self._last_head_hash = prev
        self._verified = (seq, prev)
        self.chain_error = None
        if signed is not None:
            self._signed(signed)

    def _try_replay(self) -> bool:
        """Move the spool into the chain, in order. True when the spool is empty afterwards.

        A line the store refuses for its content (``DataError``: a NUL byte, an over-long
        value) or that cannot be read back is quarantined (see :mod:`gatekeeper.audit.spool`)
        so it never blocks the lines behind it. Any other failure stops the replay and is kept
        in :attr:`replay_error` (``/readyz`` fails while the spool cannot drain).
        """
        if self.spool is None or not self.spool.depth:
            self.replay_error = None
            return True
        if time.monotonic() - self._last_replay_failure < _REPLAY_RETRY_SECONDS:
            return False
        replayed = 0
        chunk: list[tuple[int, Any, bytes]] = []
        try:
            for number, item, raw in self.spool.iter_lines():
                if item is None:
                    replayed += self._replay_or_quarantine(chunk)
                    chunk = []
                    self.spool.quarantine(raw, number=number, reason="corrupt spool line")
                    replayed += 1
                    continue
                chunk.append((number, item, raw))
                if len(chunk) >= self.settings.batch_size:
                    replayed += self._replay_or_quarantine(chunk)
                    chunk = []
            replayed += self._replay_or_quarantine(chunk)
        except SQLAlchemyError as exc:
            self._last_replay_failure = time.monotonic()
            self.replay_error = f"{type(exc).__name__} from {self._where}"
            log.warning("audit spool replay stopped after %d of %d: %s: %s",
                        replayed, self.spool.depth, self._where, type(exc).__name__)
            if replayed:
                self.spool.clear(replayed)
            self._update_depth()
            return False
        self.spool.clear(replayed)
        self.replay_error = None
        self._update_depth()
        log.info("audit spool replayed: %d decisions moved into %s", replayed, self._where)
        return True

    def _replay_or_quarantine(self, chunk: list[tuple[int, Any, bytes]]) -> int:
        """Replay ``chunk``; if the store refuses it for its data, one by one, quarantining
        the refused lines. Returns the lines consumed; raises SQLAlchemyError otherwise."""
        if not chunk:
            return 0
        try:
            self._replay_chunk([item for _number, item, _raw in chunk])
            return len(chunk)
        except sa.exc.DataError:
            pass
        except (GatekeeperError, ValueError, KeyError, TypeError):
            pass
        assert self.spool is not None
        for number, item, raw in chunk:
            try:
                self._replay_chunk([item])
            except sa.exc.DataError as exc:
                reason = f"refused by {self._where}: {type(exc.orig).__name__}: {exc.orig}"
                self.spool.quarantine(raw, number=number, reason=reason[:500])
            except (GatekeeperError, ValueError, KeyError, TypeError) as exc:
                self.spool.quarantine(
                    raw, number=number, reason=f"cannot be read back: {exc}"[:500]
                )
        return len(chunk)

    def _replay_chunk(self, chunk: list[tuple[Any, Any, Any]]) -> None:
        with self._timed("replay"):
            self._append([prepare(doc, policy, evidence) for doc, policy, evidence in chunk],
                         dedupe=True)
