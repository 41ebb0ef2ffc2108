"""The single audit writer: collects every caller's decision, commits batches (one fsync each).

Callers (threads through :meth:`record`, coroutines through :meth:`record_async`) queue their
decision and wait for its outcome. One writer thread per process takes the queue, waits up to
``AuditSettings.batch_wait_seconds`` for more decisions (only while callers are arriving
together: after a batch of several, or with several already queued; a lone caller is not
delayed), and appends them in one transaction: one commit, one fsync, for the whole batch.
Only then is each caller answered, with its own decision durable in the chain or the spool; a
batch that fails fails every member with the reason.
Maintenance (replay, checkpoints, retention) takes the same writer role (:meth:`_as_writer`),
so the spool and the chain are only ever touched by one thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from gatekeeper.audit.append import AppendMixin
from gatekeeper.audit.core import _Pending
from gatekeeper.audit.rows import prepare
from gatekeeper.domain import Decision
from gatekeeper.errors import GatekeeperError, InvalidInputError, StorageError

__all__ = ["WriterMixin"]

log = logging.getLogger(__name__)


def _is_unreachable(exc: SQLAlchemyError) -> bool:
    """A database that cannot be reached (spool it) versus one that refused (fail)."""
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _prepare(item: _Pending, decision: Decision) -> None:
    """Canonical JSON, digests and index rows of ``decision`` (before any lock is taken)."""
    document = decision.as_dict()
    policy_input = dict(decision.policy_input) if decision.policy_input is not None else None
    evidence = decision.evidence_documents
    try:
        item.prepared = prepare(document, policy_input, evidence)
    except InvalidInputError as exc:
        raise StorageError(
            f"cannot record decision {decision.decision_id}: {exc.message}"
        ) from exc
    item.spoolable = (document, policy_input, evidence)


def _decision_id(item: _Pending) -> str:
    if item.prepared is not None:
        return item.prepared.decision_id
    return item.decision.decision_id if item.decision is not None else "?"


def _settle(items: Iterable[_Pending]) -> None:
    """On the caller's event loop: resolve each awaiting caller with its outcome."""
    for item in items:
        future = item.future
        if future is None or future.done():  # a cancelled caller: the decision still counts
            continue
        if item.error is not None:
            future.set_exception(item.error)
        else:
            future.set_result(None)


class WriterMixin(AppendMixin):
    """``record``/``record_async``: every caller waits until its decision is durable."""

    # -- callers ---------------------------------------------------------------------------

    def record(self, decision: Decision) -> None:
        """Append ``decision`` (or spool it durably); raise StorageError if neither worked."""
        item = _Pending(None, None, released=threading.Lock())
        _prepare(item, decision)
        assert item.released is not None
        item.released.acquire()
        self._enqueue(item)
        item.released.acquire()  # released by the writer once the batch is durable (or failed)
        self._count(item)
        if item.error is not None:
            raise item.error

    async def record_async(self, decision: Decision) -> None:
        """:meth:`record` for a coroutine: awaits durability without a thread-pool hop (the
        writer thread prepares the decision and resolves the future on this loop)."""
        loop = asyncio.get_running_loop()
        item = _Pending(None, None, decision=decision, loop=loop, future=loop.create_future())
        self._enqueue(item)
        assert item.future is not None
        try:
            await item.future
        finally:
            self._count(item)

    def _count(self, item: _Pending) -> None:
        if self._metrics is not None:
            self._metrics.audit_write_outcomes("error" if item.error else "ok").inc()

    def _enqueue(self, item: _Pending) -> None:
        if self._writer_pid not in (0, os.getpid()):
            self._after_fork()
        with self._cond:
            if self._writer is None or not self._writer.is_alive():
                self._start_writer()
            self._queue.append(item)
            if len(self._queue) == 1 or len(self._queue) >= self.settings.batch_size:
                self._cond.notify_all()

    # -- the writer thread -----------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a forked child: the parent's writer thread, lock and queue are not ours."""
        self._cond = threading.Condition()
        self._queue = []
        self._writing = False
        self._writer = None
        self._writer_pid = os.getpid()

    def _start_writer(self) -> None:
        """Start this process's writer thread (called holding ``_cond``)."""
        self._writer_stop = False
        self._writer_pid = os.getpid()
        self._writer = threading.Thread(
            target=self._write_loop, name="gatekeeper-audit-writer", daemon=True
        )
        self._writer.start()

    def _stop_writer(self) -> None:
        """Commit what is queued, then stop the writer thread (``close``)."""
        with self._cond:
            writer = self._writer
            self._writer_stop = True
            self._cond.notify_all()
        if writer is not None and writer.is_alive() and writer is not threading.current_thread():
            writer.join(timeout=30)
        with self._cond:
            if self._writer is writer:
                self._writer = None

    def _next_batch(self) -> list[_Pending] | None:
        """Wait for decisions (and, while callers arrive together, a little for more), then
        take the writer role; None when the writer is told to stop and nothing is queued."""
        limit = self.settings.batch_size
        wait = self.settings.batch_wait_seconds
        with self._cond:
            while not self._queue:
                if self._writer_stop:
                    return None
                self._cond.wait()
            if wait > 0 and (self._last_batch > 1 or len(self._queue) > 1):
                deadline = time.monotonic() + wait
                while len(self._queue) < limit and not self._writer_stop:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            while self._writing:
                self._cond.wait()
            self._writing = True
            batch = self._queue[:limit]
            del self._queue[:limit]
            self._last_batch = len(batch)
            return batch

    def _write_loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                ready = self._prepare_async(batch)
                if ready:
                    self._persist(ready)
                    if self._metrics is not None:
                        self._metrics.audit_batches.observe(len(ready))
            except Exception:  # a bug must not pass for a stored decision (see _answer)
                log.exception("audit writer failed")
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()
                self._answer(batch)

    def _prepare_async(self, batch: list[_Pending]) -> list[_Pending]:
        """Prepare the decisions of async callers; one that cannot be stored fails alone."""
        ready: list[_Pending] = []
        for item in batch:
            if item.prepared is None and item.decision is not None:
                try:
                    _prepare(item, item.decision)
                except StorageError as exc:
                    item.error = exc
                    item.done = True
                    continue
                except Exception as exc:  # a bug in one decision must not fail the others
                    log.exception("audit writer: cannot prepare a decision")
                    item.error = StorageError(
                        f"cannot record decision {item.decision.decision_id}: internal error "
                        f"({type(exc).__name__})"
                    )
                    item.done = True
                    continue
            ready.append(item)
        return ready

    @staticmethod
    def _answer(batch: list[_Pending]) -> None:
        """Wake every caller of ``batch``: threads directly, coroutines once per event loop."""
        loops: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        for item in batch:
            if not item.done:  # the writer failed before an outcome was set: fail closed
                item.error = StorageError(
                    f"cannot record decision {_decision_id(item)}: the audit writer failed "
                    "before it was written"
                )
                item.done = True
            if item.released is not None:
                item.released.release()
            elif item.loop is not None:
                loops.setdefault(item.loop, []).append(item)
        for loop, items in loops.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # the loop was closed: nobody is waiting any more
                log.warning("audit writer: %d callers' event loop is closed", len(items))

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
                    self._append([item.prepared for item in batch if item.prepared], dedupe=False)
            except SQLAlchemyError as exc:
                if self.spool is None or not _is_unreachable(exc):
                    raise StorageError(
                        f"cannot record decision {self._first_id(batch)} in "
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
                f"cannot record decision {self._first_id(batch)}: internal error "
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
            self.spool.append([item.spoolable for item in batch if item.spoolable is not None])
        except StorageError as exc:
            raise StorageError(
                f"cannot record decision {self._first_id(batch)}: {reason}, and "
                f"{exc.message}; failing closed"
            ) from exc

    @staticmethod
    def _first_id(batch: list[_Pending]) -> str:
        return _decision_id(batch[0])
