"""The state every part of ``SqlAuditLog`` shares: settings, metrics, spool gauges, head lock."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gatekeeper.audit.chain import Checkpoint, CheckpointSigner
from gatekeeper.audit.rows import Prepared
from gatekeeper.audit.schema import chain_head
from gatekeeper.audit.spool import DurableSpool
from gatekeeper.audit.witness import CheckpointWitness
from gatekeeper.domain import Decision
from gatekeeper.errors import GatekeeperError
from gatekeeper.metrics import Metrics
from gatekeeper.storage.engine import describe_url

__all__ = ["AuditCore", "AuditSettings"]


def _turns_file(engine: Engine) -> str | None:
    """``<database>.append-turns`` for a SQLite file, None for anything else."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return f"{url.database}.append-turns"


# The statements of every append, built once (each append only executes them).
_TOUCH_HEAD = chain_head.update().where(chain_head.c.id == 1).values(seq=chain_head.c.seq)
_READ_HEAD = sa.select(chain_head).where(chain_head.c.id == 1)
_READ_HEAD_FOR_UPDATE = _READ_HEAD.with_for_update()


@dataclass(slots=True, eq=False)
class _Pending:
    """One decision waiting for the writer thread, and how its caller learns the outcome.

    A thread caller blocks on ``released`` (a lock taken at creation, released by the writer);
    an async caller awaits ``future``, resolved on ``loop`` by ``call_soon_threadsafe``. An
    async caller's decision is prepared by the writer (``decision`` set, ``prepared`` None), so
    the event loop spends no time on canonical JSON.
    """

    prepared: Prepared | None
    spoolable: (
        tuple[Mapping[str, Any], Mapping[str, Any] | None, Mapping[str, Any]] | None
    )
    decision: Decision | None = None
    released: threading.Lock | None = None
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[None] | None = None
    done: bool = False
    error: GatekeeperError | None = None


@dataclass
class AuditSettings:
    """Knobs of the trail (the composition root fills them from :class:`Settings`)."""

    checkpoint_every: int = 1000
    checkpoint_interval_seconds: float = 60.0
    batch_size: int = 256
    #: How long the writer thread waits for more decisions once one is queued, before it
    #: commits them together (one fsync per batch); 0 commits whatever is queued at once.
    batch_wait_seconds: float = 0.002
    maintenance_interval_seconds: float = 1.0
    #: Records older than this many days are pruned (behind a checkpoint) by the maintenance
    #: thread, once per ``retention_interval_seconds``; None keeps everything.
    retention_days: int | None = None
    retention_interval_seconds: float = 3600.0


class AuditCore:
    """Constructor, shared state and helpers of the trail (the other parts are mixins)."""

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
        #: The writer thread (started by the first record, in this process) and its stop flag.
        self._writer: threading.Thread | None = None
        self._writer_pid = 0
        self._writer_stop = False
        #: Size of the batch the writer committed last (it waits for more only after a batch
        #: of several: a lone caller is never slowed down by the wait).
        self._last_batch = 0
        self._last_replay_failure = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_retention = 0.0
        #: SQLite file: the flock file the appends of every process on it take turns on.
        self._turns_path = _turns_file(engine)
        self._turns_fd: int | None = None
        self._turns_lock = threading.Lock()
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
                self._metrics.db_query_operations(operation).observe(time.perf_counter() - started)

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

    @contextmanager
    def _append_turn(self) -> Iterator[None]:
        """The appends of every process writing one SQLite file (the workers of ``gatekeeper
        serve --workers N``, a CLI) take turns on an ``flock`` beside it: a waiting writer is
        woken the moment the holder commits, where SQLite's own busy handler polls with sleeps
        of 1 to 100 ms. PostgreSQL needs none: its writers queue on the head row's lock."""
        if self._turns_path is None:
            yield
            return
        with self._turns_lock:
            if self._turns_fd is None:
                with contextlib.suppress(OSError):
                    self._turns_fd = os.open(self._turns_path, os.O_RDWR | os.O_CREAT, 0o600)
            if self._turns_fd is None:
                # Only a speed-up: SQLite's own write lock keeps the chain correct, and the
                # append itself says what is wrong with the database (spool, or fail).
                yield
                return
            fcntl.flock(self._turns_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._turns_fd, fcntl.LOCK_UN)

    def _close_turns(self) -> None:
        with self._turns_lock:
            if self._turns_fd is not None:
                os.close(self._turns_fd)
                self._turns_fd = None

    def _lock_head(self, connection: Connection) -> sa.Row[Any]:
        if connection.dialect.name == "sqlite":
            # Take the write lock before reading, so no other writer can slip in between.
            connection.execute(_TOUCH_HEAD)
            return connection.execute(_READ_HEAD).one()
        return connection.execute(_READ_HEAD_FOR_UPDATE).one()
