"""``SqlAuditLog``: the audit store on SQLAlchemy Core (SQLite embedded, PostgreSQL production)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.audit.schema import decision_images, decisions, migrate
from gatekeeper.domain import Decision, DecisionPage, DecisionQuery, decision_from_dict
from gatekeeper.errors import InvalidInputError, NotFoundError, StorageError
from gatekeeper.metrics import Metrics

__all__ = ["SqlAuditLog", "create_database_engine", "describe_url"]

MAX_PAGE_SIZE = 500


def describe_url(url: str) -> str:
    """The database URL without its password, for messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable database URL>"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the writer; synchronous=FULL fsyncs every commit, so a
    # decision that was answered is on disk. busy_timeout makes concurrent writers wait.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_database_engine(url: str) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise InvalidInputError(f"invalid database URL {describe_url(url)}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            from pathlib import Path

            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(
            parsed, pool_size=10, max_overflow=10, pool_pre_ping=True,
            connect_args={"connect_timeout": 5},
        )
    raise InvalidInputError(
        f"unsupported database {describe_url(url)}: use sqlite:///PATH or postgresql://..."
    )


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "seq":
            raise ValueError(prefix)
        return int(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError("invalid cursor", field="cursor") from exc


class SqlAuditLog:
    """Stores every decision with its images, policy input and ticket correlation."""

    def __init__(self, engine: Engine, *, metrics: Metrics | None = None) -> None:
        self._engine = engine
        self._metrics = metrics
        self._where = describe_url(str(engine.url.render_as_string(hide_password=False)))

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self._metrics is not None:
                self._metrics.db_queries.labels(operation).observe(time.perf_counter() - started)

    def migrate(self) -> list[int]:
        try:
            with self._engine.begin() as connection:
                return migrate(connection)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot migrate audit store {self._where}: {exc}") from exc

    def record(self, decision: Decision) -> None:
        document = decision.as_dict()
        row = {
            "decision_id": decision.decision_id,
            "created_at": decision.created_at,
            "source": decision.source.value,
            "verdict": decision.verdict.value,
            "mode": decision.mode.value,
            "dry_run": decision.dry_run,
            "environment": decision.environment,
            "namespace": decision.namespace,
            **decision.ticket.as_dict(),
            "policy_revision": decision.policy_revision,
            "caller": decision.caller,
            "document": json.dumps(document, separators=(",", ":"), sort_keys=True),
            "policy_input": (
                json.dumps(decision.policy_input, separators=(",", ":"), sort_keys=True)
                if decision.policy_input is not None
                else None
            ),
        }
        try:
            with self._timed("record"), self._engine.begin() as connection:
                seq = connection.execute(
                    decisions.insert().values(**row).returning(decisions.c.seq)
                ).scalar_one()
                if decision.images:
                    connection.execute(
                        decision_images.insert(),
                        [
                            {
                                "decision_seq": seq,
                                "position": position,
                                "reference": image.reference.original,
                                "digest": str(image.digest) if image.digest else None,
                            }
                            for position, image in enumerate(decision.images)
                        ],
                    )
        except SQLAlchemyError as exc:
            if self._metrics is not None:
                self._metrics.audit_writes.labels("error").inc()
            raise StorageError(
                f"cannot record decision {decision.decision_id} in {self._where}: "
                f"{type(exc).__name__}"
            ) from exc
        if self._metrics is not None:
            self._metrics.audit_writes.labels("ok").inc()

    def get(self, decision_id: str) -> Decision:
        statement = sa.select(decisions.c.document, decisions.c.policy_input).where(
            decisions.c.decision_id == decision_id
        )
        try:
            with self._timed("get"), self._engine.connect() as connection:
                row = connection.execute(statement).first()
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
        for column in ("intent_id", "plan_id", "ticket_id", "deploy_id", "namespace"):
            value = getattr(query, column)
            if value is not None:
                statement = statement.where(decisions.c[column] == value)
        if query.verdict is not None:
            statement = statement.where(decisions.c.verdict == query.verdict.value)
        if query.since is not None:
            statement = statement.where(decisions.c.created_at >= query.since)
        if query.until is not None:
            statement = statement.where(decisions.c.created_at < query.until)
        if query.image_digest is not None:
            statement = statement.where(
                decisions.c.seq.in_(
                    sa.select(decision_images.c.decision_seq).where(
                        decision_images.c.digest == query.image_digest
                    )
                )
            )
        if query.cursor is not None:
            statement = statement.where(decisions.c.seq < _decode_cursor(query.cursor))
        statement = statement.order_by(decisions.c.seq.desc()).limit(limit + 1)
        try:
            with self._timed("query"), self._engine.connect() as connection:
                rows = connection.execute(statement).all()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot query audit store {self._where}") from exc
        page = rows[:limit]
        next_cursor = _encode_cursor(page[-1].seq) if len(rows) > limit else None
        items = tuple(decision_from_dict(json.loads(row.document)) for row in page)
        return DecisionPage(items, next_cursor)

    def check_health(self) -> None:
        try:
            with self._engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StorageError(f"audit store {self._where} unreachable") from exc

    def close(self) -> None:
        self._engine.dispose()
