"""Reading the trail: one decision by (abbreviated) id, filtered pages, store health."""

from __future__ import annotations

import json
import re

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.audit.core import AuditCore
from gatekeeper.audit.rows import decode_cursor, encode_cursor, filter_conditions
from gatekeeper.audit.schema import chain_head, decisions
from gatekeeper.domain import Decision, DecisionPage, DecisionQuery, decision_from_dict
from gatekeeper.errors import AmbiguousIdError, NotFoundError, StorageError

__all__ = ["MAX_PAGE_SIZE", "QueriesMixin"]

MAX_PAGE_SIZE = 500
_REPLAY_RETRY_SECONDS = 1.0
#: An abbreviated decision id (``gatekeeper decisions show 0193a5``): hex digits and dashes.
_ID_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]{0,35}")
#: How many ids an ambiguous prefix names.
_PREFIX_CANDIDATES = 10


class QueriesMixin(AuditCore):
    """Reads of decisions and the health check of the store."""

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
