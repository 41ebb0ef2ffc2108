"""``SqlVexStore`` on the PostgreSQL started by scripts/test (skipped when it is not running)."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa

from gatekeeper.usecases.vex_upload import VexUploads
from gatekeeper.vex import SqlVexStore, VexJsonInspector
from tests.helpers.postgres import psycopg_url
from tests.helpers.threads import failures_of_concurrent_calls

pytestmark = pytest.mark.postgres


@pytest.fixture()
def engine(postgres_url: str) -> sa.Engine:
    return sa.create_engine(psycopg_url(postgres_url))


def test_concurrent_replicas_create_the_tables_and_a_document_is_stored_once(
    engine: sa.Engine,
) -> None:
    errors = failures_of_concurrent_calls(lambda: SqlVexStore(engine).create_tables(), count=4)
    assert errors == []

    digest = "sha256:" + uuid.uuid4().hex * 2
    document = {
        "@context": "https://openvex.dev/ns/v0.2.0", "@id": f"https://example.com/{uuid.uuid4()}",
        "author": "sec", "timestamp": "2026-11-20T00:00:00Z", "version": 1,
        "statements": [{"vulnerability": {"name": "CVE-2024-3094"}, "products": [{"@id": digest}],
                        "status": "fixed"}],
    }  # fmt: skip
    store = SqlVexStore(engine)
    uploader = VexUploads(store=store, inspector=VexJsonInspector())
    first = uploader.upload(json.dumps(document).encode(), uploaded_by="sec-team")
    second = uploader.upload(json.dumps(document).encode(), uploaded_by="other")
    assert first.stored.id == second.stored.id
    [found] = store.find_for_digest(digest)
    assert (found.id, found.uploaded_by, found.statement_count) == (first.stored.id, "sec-team", 1)
