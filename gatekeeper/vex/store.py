"""``SqlVexStore``: VEX documents uploaded by a role that may publish them (``POST /v1/vex``).

Two tables on their own ``MetaData``: ``gatekeeper_vex_documents`` (the document, zlib
compressed, with its sha256 and who uploaded it) and ``gatekeeper_vex_products`` (one row per
image digest a statement of the document names), so the ``vex`` collector finds the documents
of a digest with one indexed query.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gatekeeper.domain.ports.vex import StoredVex, VexUpload
from gatekeeper.errors import StorageError

__all__ = ["SqlVexStore", "StoredVex", "VexUpload", "create_vex_tables"]

vex_metadata = sa.MetaData()

vex_documents = sa.Table(
    "gatekeeper_vex_documents",
    vex_metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("statement_count", sa.Integer, nullable=False),
    sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("uploaded_by", sa.String(256)),
    sa.Column("ticket_id", sa.String(256)),
    sa.Column("content_zlib", sa.LargeBinary, nullable=False),
)

vex_products = sa.Table(
    "gatekeeper_vex_products",
    vex_metadata,
    sa.Column("document_id", sa.String(36), sa.ForeignKey(vex_documents.c.id), nullable=False),
    sa.Column("image_digest", sa.String(160), nullable=False),
    sa.PrimaryKeyConstraint("image_digest", "document_id"),
)


def create_vex_tables(connection: Connection) -> None:
    """Create both tables (idempotent, safe for concurrent replicas)."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(7366203)"))
    vex_metadata.create_all(connection, checkfirst=True)


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class SqlVexStore:
    def __init__(
        self, engine: Engine, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._engine = engine
        self._clock = clock

    def _context(self) -> dict[str, Any]:
        return {"database": self._engine.url.render_as_string(hide_password=True)}

    def create_tables(self) -> None:
        try:
            with self._engine.begin() as connection:
                create_vex_tables(connection)
        except SQLAlchemyError as exc:
            raise StorageError("cannot create the VEX tables", context=self._context()) from exc

    @staticmethod
    def _stored(row: Any) -> StoredVex:
        return StoredVex(
            id=row.id, sha256=row.sha256, format=row.format,
            statement_count=row.statement_count, uploaded_at=_as_utc(row.uploaded_at),
            uploaded_by=row.uploaded_by, ticket_id=row.ticket_id,
            content=zlib.decompress(row.content_zlib),
        )  # fmt: skip

    def _find_same(self, connection: Connection, sha256: str) -> StoredVex | None:
        row = connection.execute(
            sa.select(vex_documents).where(vex_documents.c.sha256 == sha256)
        ).first()
        return self._stored(row) if row is not None else None

    def save(self, upload: VexUpload) -> StoredVex:
        """Store ``upload``; the same document again returns the stored one."""
        document_id, uploaded_at = str(uuid.uuid4()), self._clock()
        try:
            with self._engine.begin() as connection:
                existing = self._find_same(connection, upload.sha256)
                if existing is not None:
                    return existing
                connection.execute(
                    vex_documents.insert().values(
                        id=document_id, sha256=upload.sha256, format=upload.format,
                        statement_count=upload.statement_count, uploaded_at=uploaded_at,
                        uploaded_by=upload.uploaded_by, ticket_id=upload.ticket_id,
                        content_zlib=zlib.compress(upload.content, 6),
                    )
                )  # fmt: skip
                if upload.product_digests:
                    connection.execute(
                        vex_products.insert(),
                        [{"document_id": document_id, "image_digest": digest}
                         for digest in upload.product_digests],
                    )  # fmt: skip
        except IntegrityError:
            with self._engine.connect() as connection:
                existing = self._find_same(connection, upload.sha256)
            if existing is not None:
                return existing
            raise StorageError("cannot store the VEX document", context=self._context()) from None
        except SQLAlchemyError as exc:
            raise StorageError("cannot store the VEX document", context=self._context()) from exc
        return StoredVex(
            document_id, upload.sha256, upload.format, upload.statement_count, uploaded_at,
            upload.uploaded_by, upload.ticket_id, upload.content,
        )  # fmt: skip

    def find_for_digest(self, image_digest: str, *, limit: int = 32) -> Sequence[StoredVex]:
        """Documents naming ``image_digest``, newest first."""
        query = (
            sa.select(vex_documents)
            .join(vex_products, vex_products.c.document_id == vex_documents.c.id)
            .where(vex_products.c.image_digest == image_digest)
            .order_by(vex_documents.c.uploaded_at.desc(), vex_documents.c.id.desc())
            .limit(limit)
        )
        try:
            with self._engine.connect() as connection:
                rows = connection.execute(query).all()
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot read VEX documents for {image_digest}", context=self._context()
            ) from exc
        return [self._stored(row) for row in rows]
