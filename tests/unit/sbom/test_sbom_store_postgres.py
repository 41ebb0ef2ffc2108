"""``SqlSbomStore`` on the PostgreSQL started by scripts/test (skipped when it is not running)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from gatekeeper.domain.reference import parse_digest
from gatekeeper.sbom import SbomUpload, SqlSbomStore
from tests.helpers.postgres import psycopg_url
from tests.helpers.threads import failures_of_concurrent_calls

pytestmark = pytest.mark.postgres


@pytest.fixture()
def engine(postgres_url: str) -> sa.Engine:
    return sa.create_engine(psycopg_url(postgres_url))


def _upload(digest: str, content: bytes) -> SbomUpload:
    import hashlib

    return SbomUpload(
        image_digest=parse_digest(digest), content=content,
        sha256=hashlib.sha256(content).hexdigest(), format="cyclonedx", spec_version="1.6",
        component_count=1, ticket_id="CHG-1",
    )


def test_concurrent_replicas_create_the_table_and_store_once(engine: sa.Engine) -> None:
    errors = failures_of_concurrent_calls(lambda: SqlSbomStore(engine).create_tables(), count=4)
    assert errors == []

    store = SqlSbomStore(engine)
    digest = "sha256:" + uuid.uuid4().hex * 2
    content = b'{"bomFormat": "CycloneDX", "specVersion": "1.6"}' + uuid.uuid4().bytes.hex().encode()
    first = store.save(_upload(digest, content))
    second = store.save(_upload(digest, content))
    assert first.id == second.id
    found = store.find_for_digest(parse_digest(digest))
    assert [item.id for item in found] == [first.id]
    assert found[0].content == content
    assert found[0].uploaded_at.tzinfo is not None
    store.check_health()
