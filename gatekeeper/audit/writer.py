"""Recording a decision: group commit of concurrent callers, spool fallback, one writer."""

from __future__ import annotations

import logging
import time
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



class WriterMixin(AppendMixin):
    """``record``: every caller waits until its decision is in the chain or the spool."""

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
