"""``SqlSbomStore``: uploaded SBOMs in the gatekeeper database (SQLite or PostgreSQL).

One table, ``gatekeeper_sboms``, defined with SQLAlchemy Core on its own ``MetaData`` so the
audit store's migrations can adopt it as one step (:func:`create_sbom_tables`). Documents are
kept zlib-compressed (CycloneDX JSON compresses about 10:1); ``sha256`` is the hash of the
document as uploaded, the value the audit trail and the evidence carry.
"""

from __future__ import annotations

import threading
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gatekeeper.domain.ports.sbom import SbomUpload, StoredSbom
from gatekeeper.domain.reference import Digest
from gatekeeper.errors import NotFoundError, StorageError

__all__ = ["SqlSbomStore", "create_sbom_tables", "sbom_metadata", "sboms"]

#: Decompressed documents kept in memory across requests (least recently used go first).
_MEMO_BYTES = 64 << 20

sbom_metadata = sa.MetaData()

sboms = sa.Table(
    "gatekeeper_sboms",
    sbom_metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("image_digest", sa.String(160), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("spec_version", sa.String(16), nullable=False),
    sa.Column("component_count", sa.Integer, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ticket_id", sa.String(256)),
    sa.Column("uploaded_by", sa.String(256)),
    sa.Column("content_zlib", sa.LargeBinary, nullable=False),
    # ``upload`` or ``inline``; NULL in rows written before the column existed (uploads).
    sa.Column("source", sa.String(16)),
    sa.UniqueConstraint("image_digest", "sha256", name="uq_gatekeeper_sboms_digest_sha256"),
    sa.Index("ix_gatekeeper_sboms_image_digest_uploaded_at", "image_digest", "uploaded_at"),
)


def create_sbom_tables(connection: Connection) -> None:
    """Migration step: create ``gatekeeper_sboms`` (idempotent, safe for concurrent replicas)."""
    if connection.dialect.name == "postgresql":
        # Several replicas may start at once: serialise on a transaction-scoped lock (the
        # audit store's migrations use 7366201; this key is the SBOM table's own).
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(7366202)"))
    sboms.create(connection, checkfirst=True)
    # A table created before the ``source`` column: add it (NULL reads as ``upload``).
    columns = {column["name"] for column in sa.inspect(connection).get_columns(sboms.name)}
    if "source" not in columns:
        connection.execute(sa.text(f"ALTER TABLE {sboms.name} ADD COLUMN source VARCHAR(16)"))


def _as_utc(value: datetime) -> datetime:
    # SQLite hands timezone-aware columns back naive; they were written in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class SqlSbomStore:
    """Implements :class:`~gatekeeper.domain.ports.sbom.SbomStore` on a SQLAlchemy ``Engine``."""

    def __init__(
        self, engine: Engine, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._memo: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._memo_bytes = 0
        self._memo_lock = threading.Lock()

    def create_tables(self) -> None:
        """For a stand-alone store; with the audit store, use its migrations instead."""
        try:
            with self._engine.begin() as connection:
                create_sbom_tables(connection)
        except SQLAlchemyError as exc:
            raise StorageError("cannot create the SBOM table", context=self._context()) from exc

    def _context(self) -> dict[str, Any]:
        return {"database": self._engine.url.render_as_string(hide_password=True)}

    def _content(self, row: Any) -> bytes:
        """The decompressed document of ``row``, kept for the next request: a stored upload
        never changes (there is no update path), and decompressing a 10,000-component SBOM
        on every evaluation cost more than the whole decision."""
        key = (str(row.id), str(row.sha256))
        with self._memo_lock:
            cached = self._memo.get(key)
            if cached is not None:
                self._memo.move_to_end(key)
                return cached
        content = zlib.decompress(row.content_zlib)
        with self._memo_lock:
            self._memo[key] = content
            self._memo_bytes += len(content)
            while self._memo_bytes > _MEMO_BYTES and len(self._memo) > 1:
                self._memo_bytes -= len(self._memo.popitem(last=False)[1])
        return content

    def _row_to_stored(self, row: Any) -> StoredSbom:
        return StoredSbom(
            id=row.id,
            image_digest=row.image_digest,
            sha256=row.sha256,
            format=row.format,
            spec_version=row.spec_version,
            component_count=row.component_count,
            size=row.size,
            uploaded_at=_as_utc(row.uploaded_at),
            ticket_id=row.ticket_id,
            uploaded_by=row.uploaded_by,
            content=self._content(row),
            source=row.source or "upload",
        )

    def _find_same(self, connection: Connection, upload: SbomUpload) -> StoredSbom | None:
        row = connection.execute(
            sa.select(sboms).where(
                sboms.c.image_digest == str(upload.image_digest), sboms.c.sha256 == upload.sha256
            )
        ).first()
        return self._row_to_stored(row) if row is not None else None

    def save(self, upload: SbomUpload) -> StoredSbom:
        sbom_id, uploaded_at = str(uuid.uuid4()), self._clock()
        values: dict[str, Any] = {
            "id": sbom_id,
            "image_digest": str(upload.image_digest),
            "sha256": upload.sha256,
            "format": upload.format,
            "spec_version": upload.spec_version,
            "component_count": upload.component_count,
            "size": len(upload.content),
            "uploaded_at": uploaded_at,
            "ticket_id": upload.ticket_id,
            "uploaded_by": upload.uploaded_by,
            "content_zlib": zlib.compress(upload.content, 6),
            "source": upload.source,
        }
        try:
            with self._engine.begin() as connection:
                existing = self._find_same(connection, upload)
                if existing is not None:
                    return existing
                connection.execute(sboms.insert().values(**values))
        except IntegrityError:
            # A concurrent upload of the same document for the same digest won the race.
            with self._engine.connect() as connection:
                existing = self._find_same(connection, upload)
            if existing is not None:
                return existing
            raise StorageError("cannot store the SBOM", context=self._context()) from None
        except SQLAlchemyError as exc:
            raise StorageError("cannot store the SBOM", context=self._context()) from exc
        return StoredSbom(
            id=sbom_id, image_digest=str(upload.image_digest), sha256=upload.sha256,
            format=upload.format, spec_version=upload.spec_version,
            component_count=upload.component_count, size=len(upload.content),
            uploaded_at=uploaded_at, ticket_id=upload.ticket_id,
            uploaded_by=upload.uploaded_by, content=upload.content, source=upload.source,
        )

    def find_for_digest(self, image_digest: Digest, *, limit: int = 5) -> Sequence[StoredSbom]:
        query = (
            sa.select(sboms)
            .where(sboms.c.image_digest == str(image_digest))
            .order_by(sboms.c.uploaded_at.desc(), sboms.c.id.desc())
            .limit(limit)
        )
        try:
            with self._engine.connect() as connection:
                rows = connection.execute(query).all()
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot read SBOMs for {image_digest}", context=self._context()
            ) from exc
        return [self._row_to_stored(row) for row in rows]

    def get(self, sbom_id: str) -> StoredSbom:
        try:
            with self._engine.connect() as connection:
                row = connection.execute(sa.select(sboms).where(sboms.c.id == sbom_id)).first()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read SBOM {sbom_id}", context=self._context()) from exc
        if row is None:
            raise NotFoundError(f"no SBOM with id {sbom_id}")
        return self._row_to_stored(row)

    def check_health(self) -> None:
        try:
            with self._engine.connect() as connection:
                connection.execute(sa.select(sa.func.count()).select_from(sboms).limit(1))
        except SQLAlchemyError as exc:
            raise StorageError("SBOM store is not reachable", context=self._context()) from exc
