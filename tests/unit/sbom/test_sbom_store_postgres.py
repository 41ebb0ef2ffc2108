"""``SqlSbomStore`` on the PostgreSQL started by scripts/test (skipped when it is not running)."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
import sqlalchemy as sa

from gatekeeper.domain.reference import parse_digest
from gatekeeper.sbom import SbomUpload, SqlSbomStore

pytestmark = pytest.mark.postgres


@pytest.fixture()
def engine() -> sa.Engine:
    url = os.environ.get("GATEKEEPER_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("GATEKEEPER_TEST_POSTGRES_URL is not set (scripts/test-servers starts it)")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(url)


def _upload(digest: str, content: bytes) -> SbomUpload:
    import hashlib

    return SbomUpload(
        image_digest=parse_digest(digest), content=content,
        sha256=hashlib.sha256(content).hexdigest(), format="cyclonedx", spec_version="1.6",
        component_count=1, ticket_id="CHG-1",
    )


def test_concurrent_replicas_create_the_table_and_store_once(engine: sa.Engine) -> None:
    errors: list[BaseException] = []

    def start_replica() -> None:
        try:
            SqlSbomStore(engine).create_tables()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=start_replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
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
