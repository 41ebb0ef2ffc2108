"""``SqlAuditLog``: the hash-chained audit trail on SQLAlchemy Core (SQLite, PostgreSQL).

How several replicas append to one PostgreSQL without gaps or forks
--------------------------------------------------------------------
Every append transaction first locks the single chain-head row
(``SELECT ... FROM gatekeeper_audit_chain_head WHERE id = 1 FOR UPDATE``; on SQLite a no-op
``UPDATE`` of it, which takes the database write lock before anything is read). Holding that
row lock it reads the last ``(seq, record_hash)``, gives the batch the next sequence numbers,
computes each record's hash from its predecessor's, inserts the rows, signs a checkpoint if one
is due, and moves the head, all in one transaction. A second replica blocks on the head row
until the first commits, then reads the new head, so every record has exactly one predecessor
(no fork). Sequence numbers come from the head row, not from a database sequence, so a rolled
back transaction leaves no gap. We chose the head row over ``pg_advisory_xact_lock``: it works
the same on SQLite, it keeps the head readable for verification (a truncated tail is visible
against it), and it puts the lock and the data it protects in one place.

The lock is held for one short transaction per *batch*: concurrent callers in one process are
grouped (a leader writes everyone's pending decisions, the others wait for their outcome), and
canonical JSON and document digests are computed before the lock is taken.

Never lost: when the database cannot be reached, the batch goes to the local
:class:`~gatekeeper.audit.spool.DurableSpool` (fsync) before anyone is answered, and the spool
is replayed in order (at start, before the next write, and by the maintenance thread). If the
spool cannot be written either, :meth:`record` raises :class:`StorageError` saying both why.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from gatekeeper.audit.chain import Checkpoint, CheckpointSigner
from gatekeeper.audit.database import create_database_engine, describe_url
from gatekeeper.audit.rows import (
    Prepared,
    checkpoint_from_row,
    decode_cursor,
    encode_cursor,
    filter_conditions,
    indexed_columns,
    prepare,
)
from gatekeeper.audit.schema import (
    chain_head,
    checkpoints,
    decision_images,
    decisions,
    migrate,
    prune_permits,
)
from gatekeeper.audit.spool import DurableSpool
from gatekeeper.audit.witness import CheckpointWitness, check_head_against_checkpoint
from gatekeeper.domain import Decision, DecisionPage, DecisionQuery, decision_from_dict
from gatekeeper.errors import (
    AmbiguousIdError,
    GatekeeperError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)
from gatekeeper.metrics import Metrics

__all__ = [
    "AuditSettings",
    "SqlAuditLog",
    "checkpoint_from_row",
    "create_database_engine",
    "describe_url",
    "filter_conditions",
    "indexed_columns",
    "prepare",
]

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 500
_REPLAY_RETRY_SECONDS = 1.0
#: An abbreviated decision id (``gatekeeper decisions show 0193a5``): hex digits and dashes.
_ID_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]{0,35}")
#: How many ids an ambiguous prefix names.
_PREFIX_CANDIDATES = 10


def _is_unreachable(exc: SQLAlchemyError) -> bool:
    """A database that cannot be reached (spool it) versus one that refused (fail)."""
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@dataclass(slots=True)
class _Pending:
    prepared: Prepared
    spoolable: tuple[Mapping[str, Any], Mapping[str, Any] | None]
    done: bool = False
    error: GatekeeperError | None = None


@dataclass
class AuditSettings:
    """Knobs of the trail (the composition root fills them from :class:`Settings`)."""

    checkpoint_every: int = 1000
    checkpoint_interval_seconds: float = 60.0
    batch_size: int = 256
    maintenance_interval_seconds: float = 1.0
    #: Records older than this many days are pruned (behind a checkpoint) by the maintenance
    #: thread, once per ``retention_interval_seconds``; None keeps everything.
    retention_days: int | None = None
    retention_interval_seconds: float = 3600.0


class SqlAuditLog:
    """Stores every decision in the hash chain; reads, queries, checkpoints, prunes."""

    def __init__(
        self,
        engine: Engine,
        *,
        metrics: Metrics | None = None,
        spool: DurableSpool | None = None,
        signer: CheckpointSigner | None = None,
        settings: AuditSettings | None = None,
        witness: CheckpointWitness | None = None,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self.spool = spool
        #: Why the last spool replay stopped (None once it drained): ``/readyz`` reports it.
        self.replay_error: str | None = None
        self.signer = signer
        #: Signed checkpoints are also published here (outside the database), if configured.
        self.witness = witness
        #: The newest checkpoint this writer trusts (signed by it, or read from the witness):
        #: the chain must still verify against it before the writer extends or signs it.
        self._trusted: Checkpoint | None = None
        self._last_head_hash: str | None = None
        #: Why the writer refused to extend the chain (``/readyz`` fails while it is set).
        self.chain_error: str | None = None
        #: The last (seq, record hash) this writer checked or wrote: later checks start there.
        self._verified: tuple[int, str] | None = None
        #: The key checkpoints are verified with: the signer's, or a configured public key.
        self.verify_key = signer.public_key if signer is not None else None
        #: Where the signing key came from (``/readyz``): configured, generated, embedded, none.
        self.signing_key_info: dict[str, str] = {"source": "configured" if signer else "none"}
        self.settings = settings or AuditSettings()
        self._where = describe_url(str(engine.url.render_as_string(hide_password=False)))
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False
        self._last_replay_failure = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_retention = 0.0
        self._update_depth()

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def where(self) -> str:
        return self._where

    @contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self._metrics is not None:
                self._metrics.db_queries.labels(operation).observe(time.perf_counter() - started)

    def _update_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.spool_depth.set(self.spool_depth)
            self._metrics.spool_quarantined.set(self.spool_quarantined)

    @property
    def spool_depth(self) -> int:
        return self.spool.depth if self.spool is not None else 0

    @property
    def spool_quarantined(self) -> int:
        """Spooled decisions the store refused (kept in the spool's quarantine file)."""
        return self.spool.quarantined if self.spool is not None else 0

    @property
    def spool_quarantine_path(self) -> str | None:
        """Where the quarantined decisions are kept (None without a spool)."""
        return str(self.spool.quarantine_path) if self.spool is not None else None

    def spool_blocked(self) -> str | None:
        """Why the spool cannot drain now (None when it is empty or draining)."""
        if self.spool_depth and self.replay_error is not None:
            return (
                f"audit spool cannot drain: {self.spool_depth} decisions waiting "
                f"({self.replay_error})"
            )
        return None

    # -- lifecycle -------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Create or upgrade the schema, then replay what a previous run left in the spool."""
        try:
            with self._engine.begin() as connection:
                applied = migrate(connection)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot migrate audit store {self._where}: {exc}") from exc
        if self.witness is not None:
            try:
                witnessed = self.witness.read()
            except GatekeeperError as exc:
                log.error("audit witness unreadable at start: %s", exc.render())
                witnessed = []
            if witnessed:
                self._trusted = max(witnessed, key=lambda c: c.seq)
        if self.spool_depth:
            self._as_writer(self._try_replay)
        return applied

    def start(self) -> None:
        """Start the maintenance thread: spool replay and time-based checkpoints."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._maintain, name="gatekeeper-audit-maintenance", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._engine.dispose()

    def _maybe_prune(self) -> None:
        days = self.settings.retention_days
        if not days or self.signer is None:
            return
        if time.monotonic() - self._last_retention < self.settings.retention_interval_seconds:
            return
        self._last_retention = time.monotonic()
        deleted = self._as_writer(lambda: self.prune(timedelta(days=days)))
        if deleted:
            log.info("audit retention: pruned %d records older than %d days", deleted, days)

    def _maintain(self) -> None:
        while not self._stop.wait(self.settings.maintenance_interval_seconds):
            try:
                if self.spool_depth:
                    self._as_writer(self._try_replay)
                elif self.signer is not None:
                    self._as_writer(lambda: self.write_checkpoint(only_if_due=True))
                self._maybe_prune()
            except GatekeeperError as exc:
                log.warning("audit maintenance: %s", exc.render())
            except Exception:  # the thread must survive anything; the next tick retries
                log.exception("audit maintenance failed")

    # -- writing ---------------------------------------------------------------------------

    def record(self, decision: Decision) -> None:
        """Append ``decision`` (or spool it durably); raise StorageError if neither worked."""
        document = decision.as_dict()
        policy_input = dict(decision.policy_input) if decision.policy_input is not None else None
        try:
            prepared = prepare(document, policy_input)
        except InvalidInputError as exc:
            raise StorageError(
                f"cannot record decision {decision.decision_id}: {exc.message}"
            ) from exc
        item = _Pending(prepared, (document, policy_input))
        with self._cond:
            self._queue.append(item)
            while not item.done:
                if self._writing:
                    self._cond.wait()
                    continue
                self._writing = True
                batch = self._queue[: self.settings.batch_size]
                del self._queue[: self.settings.batch_size]
                self._cond.release()
                try:
                    self._persist(batch)
                finally:
                    self._cond.acquire()
                    self._writing = False
                    self._cond.notify_all()
        if self._metrics is not None:
            self._metrics.audit_writes.labels("error" if item.error else "ok").inc()
        if item.error is not None:
            raise item.error

    def _as_writer(self, action: Any) -> Any:
        """Run ``action`` as the only writer (spool and chain are touched by one thread)."""
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._writing = True
        try:
            return action()
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()

    def _persist(self, batch: list[_Pending]) -> None:
        """Write ``batch`` to the chain, or to the spool; set every item's outcome."""
        try:
            if self.spool_depth and not self._try_replay():
                self._spool(batch, reason="earlier decisions are still waiting in the spool")
                return
            try:
                with self._timed("record"):
                    self._append([item.prepared for item in batch], dedupe=False)
            except SQLAlchemyError as exc:
                if self.spool is None or not _is_unreachable(exc):
                    raise StorageError(
                        f"cannot record decision {batch[0].prepared.decision_id} in "
                        f"{self._where}: {type(exc).__name__}"
                    ) from exc
                log.error("audit store %s unreachable (%s); spooling", self._where,
                          type(exc).__name__)
                self._last_replay_failure = time.monotonic()
                self._spool(batch, reason=f"audit store {self._where} unreachable")
        except GatekeeperError as exc:
            for item in batch:
                item.error = exc
        except Exception as exc:  # a bug must not pass for a stored decision: fail closed
            log.exception("audit write failed unexpectedly")
            failure = StorageError(
                f"cannot record decision {batch[0].prepared.decision_id}: internal error "
                f"({type(exc).__name__})"
            )
            for item in batch:
                item.error = failure
        finally:
            for item in batch:
                item.done = True
            self._update_depth()

    def _spool(self, batch: list[_Pending], *, reason: str) -> None:
        assert self.spool is not None
        try:
            self.spool.append([item.spoolable for item in batch])
        except StorageError as exc:
            raise StorageError(
                f"cannot record decision {batch[0].prepared.decision_id}: {reason}, and "
                f"{exc.message}; failing closed"
            ) from exc

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

    def _replay_chunk(self, chunk: list[tuple[Any, Any]]) -> None:
        with self._timed("replay"):
            self._append([prepare(doc, policy) for doc, policy in chunk], dedupe=True)

    def _lock_head(self, connection: Connection) -> sa.Row[Any]:
        if connection.dialect.name == "sqlite":
            # Take the write lock before reading, so no other writer can slip in between.
            connection.execute(
                chain_head.update().where(chain_head.c.id == 1).values(seq=chain_head.c.seq)
            )
            return connection.execute(sa.select(chain_head).where(chain_head.c.id == 1)).one()
        return connection.execute(
            sa.select(chain_head).where(chain_head.c.id == 1).with_for_update()
        ).one()

    def _append(self, prepared: Sequence[Prepared], *, dedupe: bool) -> None:
        """One transaction: lock the head, chain the batch, insert, checkpoint if due."""
        from gatekeeper.audit.chain import record_hash

        signed: Checkpoint | None = None
        with self._engine.begin() as connection:
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
            if rows:
                connection.execute(decisions.insert(), rows)
            if images:
                connection.execute(decision_images.insert(), images)
            values: dict[str, Any] = {"seq": seq, "record_hash": prev}
            if head.checkpoint_at is None:
                values["checkpoint_at"] = datetime.now(UTC)
            if self._checkpoint_due(head, seq):
                assert self.signer is not None
                signed = self.signer.sign(seq, prev)
                connection.execute(checkpoints.insert().values(**signed.as_dict()))
                values.update(checkpoint_seq=seq, checkpoint_at=datetime.now(UTC))
            if rows or len(values) > 2:
                connection.execute(
                    chain_head.update().where(chain_head.c.id == 1).values(**values)
                )
        self._last_head_hash = prev
        self._verified = (seq, prev)
        self.chain_error = None
        if signed is not None:
            self._signed(signed)

    def _trusted_checkpoint(self, connection: Connection) -> Checkpoint | None:
        """The newest checkpoint known good: the database's, or ours if newer (or the
        database's was deleted)."""
        stored = self._latest_checkpoint(connection)
        if self._trusted is None or (stored is not None and stored.seq > self._trusted.seq):
            return stored
        return self._trusted

    def _signed(self, checkpoint: Checkpoint) -> None:
        """After the commit: remember the checkpoint and publish it to the witness."""
        self._trusted = checkpoint
        if self.witness is not None:
            try:
                self.witness.publish(checkpoint)
            except GatekeeperError as exc:
                # the checkpoint is committed; `audit verify --witness` will name the gap
                log.error("checkpoint at record %d not witnessed: %s", checkpoint.seq,
                          exc.render())

    def _checkpoint_due(self, head: sa.Row[Any], new_seq: int) -> bool:
        if self.signer is None or new_seq <= int(head.checkpoint_seq):
            return False
        if new_seq - int(head.checkpoint_seq) >= self.settings.checkpoint_every:
            return True
        last = head.checkpoint_at
        if last is None:
            return False  # the clock starts with the first append (see _append)
        if last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        age = (datetime.now(UTC) - last).total_seconds()
        return bool(age >= self.settings.checkpoint_interval_seconds)

    def write_checkpoint(self, *, only_if_due: bool = False) -> Checkpoint | None:
        """Sign the current head (if it moved since the last checkpoint); return the latest."""
        if self.signer is None:
            raise StorageError("no audit signing key is configured: checkpoints cannot be signed")
        try:
            with self._engine.begin() as connection:
                head = self._lock_head(connection)
                seq = int(head.seq)
                due = self._checkpoint_due(head, seq) if only_if_due else seq > int(
                    head.checkpoint_seq
                )
                if due:
                    try:
                        check_head_against_checkpoint(
                            connection, head, self._trusted_checkpoint(connection),
                            self._verified,
                        )
                    except StorageError as exc:
                        self.chain_error = exc.message
                        raise
                    checkpoint = self.signer.sign(seq, str(head.record_hash))
                    connection.execute(checkpoints.insert().values(**checkpoint.as_dict()))
                    connection.execute(
                        chain_head.update().where(chain_head.c.id == 1).values(
                            checkpoint_seq=seq, checkpoint_at=datetime.now(UTC)
                        )
                    )
                else:
                    return self._latest_checkpoint(connection)
            self._signed(checkpoint)
            return checkpoint
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot write a checkpoint in {self._where}: {exc}") from exc

    def _latest_checkpoint(self, connection: Connection) -> Checkpoint | None:
        row = connection.execute(
            sa.select(checkpoints)
            .order_by(checkpoints.c.seq.desc(), checkpoints.c.id.desc())
            .limit(1)
        ).first()
        return checkpoint_from_row(row) if row is not None else None

    # -- reading ---------------------------------------------------------------------------

    def get(self, decision_id: str) -> Decision:
        """The decision with this id, or with the one id that starts with it (an abbreviated
        id: hex digits and dashes); AmbiguousIdError lists the ids a prefix matches."""
        statement = sa.select(decisions.c.document, decisions.c.policy_input).where(
            decisions.c.decision_id == decision_id
        )
        try:
            with self._timed("get"), self._engine.connect() as connection:
                row = connection.execute(statement).first()
                if row is None and _ID_PREFIX.fullmatch(decision_id):
                    matches = connection.execute(
                        sa.select(decisions.c.decision_id)
                        .where(decisions.c.decision_id.startswith(decision_id))
                        .order_by(decisions.c.decision_id)
                        .limit(_PREFIX_CANDIDATES + 1)
                    ).scalars().all()
                    if len(matches) > 1:
                        raise AmbiguousIdError(decision_id, list(matches), field="decision_id")
                    if matches:
                        row = connection.execute(
                            sa.select(decisions.c.document, decisions.c.policy_input).where(
                                decisions.c.decision_id == matches[0]
                            )
                        ).first()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read audit store {self._where}") from exc
        if row is None:
            raise NotFoundError(f"decision {decision_id} not found")
        return decision_from_dict(
            json.loads(row.document), json.loads(row.policy_input) if row.policy_input else None
        )

    def query(self, query: DecisionQuery) -> DecisionPage:
        limit = max(1, min(query.limit, MAX_PAGE_SIZE))
        statement = sa.select(decisions.c.seq, decisions.c.document)
        for condition in filter_conditions(query):
            statement = statement.where(condition)
        if query.cursor is not None:
            statement = statement.where(decisions.c.seq < decode_cursor(query.cursor))
        statement = statement.order_by(decisions.c.seq.desc()).limit(limit + 1)
        try:
            with self._timed("query"), self._engine.connect() as connection:
                rows = connection.execute(statement).all()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot query audit store {self._where}") from exc
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1].seq) if len(rows) > limit else None
        items = tuple(decision_from_dict(json.loads(row.document)) for row in page)
        return DecisionPage(items, next_cursor)

    def check_health(self) -> None:
        """Reachable, and writable: no row beyond the chain head (every append would fail on
        it), and no refusal of the writer to extend the chain (see ``chain_error``)."""
        try:
            with self._engine.connect() as connection:
                head = connection.execute(
                    sa.select(chain_head.c.seq).where(chain_head.c.id == 1)
                ).scalar()
                beyond = None
                if head is not None:
                    beyond = connection.execute(
                        sa.select(sa.func.min(decisions.c.seq)).where(decisions.c.seq > head)
                    ).scalar()
        except SQLAlchemyError as exc:
            raise StorageError(f"audit store {self._where} unreachable") from exc
        if beyond is not None:
            raise StorageError(
                f"audit store {self._where}: record {beyond} lies beyond the chain head at "
                f"record {head}; no decision can be recorded (run gatekeeper audit verify)"
            )
        if self.chain_error is not None:
            raise StorageError(self.chain_error)

    def checkpoint_status(self) -> tuple[float | None, int]:
        """(epoch seconds of the newest signed checkpoint or None, records not yet covered by
        one); read at each metrics scrape. An unreachable store reads as (None, 0)."""
        try:
            with self._engine.connect() as connection:
                head = connection.execute(
                    sa.select(chain_head).where(chain_head.c.id == 1)
                ).first()
        except SQLAlchemyError:
            return None, 0
        if head is None:
            return None, 0
        uncovered = int(head.seq) - int(head.checkpoint_seq)
        if int(head.checkpoint_seq) == 0 or head.checkpoint_at is None:
            return None, uncovered
        at = head.checkpoint_at
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp(), uncovered

    # -- retention -------------------------------------------------------------------------

    def prune(self, older_than: timedelta, *, now: datetime | None = None) -> int:
        """Delete the records older than ``older_than`` that lie behind a signed checkpoint.

        Only a prefix ending exactly at a checkpoint is removed, so the first remaining record
        still chains to signed state; a fresh checkpoint records ``pruned_through``. Returns
        the number of records deleted.
        """
        if self.signer is None:
            raise StorageError("retention needs the audit signing key: nothing was pruned")
        cutoff = (now or datetime.now(UTC)) - older_than
        try:
            with self._engine.begin() as connection:
                head = self._lock_head(connection)
                through = connection.execute(
                    sa.select(sa.func.max(checkpoints.c.seq)).where(
                        checkpoints.c.seq.in_(
                            sa.select(decisions.c.seq).where(decisions.c.created_at < cutoff)
                        )
                    )
                ).scalar()
                if through is None:
                    return 0
                # every record up to the checkpoint must be older than the cutoff
                younger = connection.execute(
                    sa.select(sa.func.max(decisions.c.seq)).where(
                        decisions.c.seq <= through, decisions.c.created_at >= cutoff
                    )
                ).scalar()
                if younger is not None:
                    through = connection.execute(
                        sa.select(sa.func.max(checkpoints.c.seq)).where(
                            checkpoints.c.seq < younger
                        )
                    ).scalar()
                    if through is None:
                        return 0
                connection.execute(prune_permits.insert().values(through_seq=through))
                connection.execute(
                    decision_images.delete().where(decision_images.c.decision_seq <= through)
                )
                deleted = connection.execute(
                    decisions.delete().where(decisions.c.seq <= through)
                ).rowcount
                connection.execute(prune_permits.delete())
                # a signed statement that records 1..through were pruned on purpose
                checkpoint = self.signer.sign(
                    int(head.seq), str(head.record_hash), pruned_through=int(through)
                )
                connection.execute(checkpoints.insert().values(**checkpoint.as_dict()))
                connection.execute(
                    chain_head.update().where(chain_head.c.id == 1).values(
                        checkpoint_seq=int(head.seq), checkpoint_at=datetime.now(UTC)
                    )
                )
                return int(deleted or 0)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot prune audit store {self._where}: {exc}") from exc
