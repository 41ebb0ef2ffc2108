"""SqlPolicyStore on SQLite and PostgreSQL: the activation stack, the event chain, exceptions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from gatekeeper.audit import create_database_engine
from gatekeeper.errors import IntegrityError, NotFoundError
from gatekeeper.policy.bundle import PolicyFiles
from gatekeeper.policy.checks import CheckProblem, CheckReport
from gatekeeper.policy.exceptions import ExceptionRequest
from gatekeeper.policy.store import PolicyConflictError, SqlPolicyStore, metadata

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PASSED = CheckReport(True, (), (), 1, 1, "1.22.2")
REFUSED = CheckReport(False, (CheckProblem("test", "test data.t.test_a failed"),), ("data.t.test_a",), 1, 0, "1.22.2")


def files(marker: str) -> PolicyFiles:
    return PolicyFiles.from_text({"main.rego": f"package gatekeeper.main\n\n# {marker}\n"})


class SteppedStore(SqlPolicyStore):
    """The store with its clock exposed, so a test can move time on."""

    clock: dict[str, datetime]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SteppedStore]:
    if request.param == "sqlite":
        engine = create_database_engine(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        engine = create_database_engine(request.getfixturevalue("postgres_url"))
        with engine.begin() as connection:
            metadata.drop_all(connection)
            connection.execute(sa.text("DROP TABLE IF EXISTS gatekeeper_policy_migrations"))
    clock = {"now": NOW}
    store = SteppedStore(engine, clock=lambda: clock["now"])
    store.clock = clock
    assert store.migrate() == [1, 2, 3]
    assert store.migrate() == []
    yield store
    engine.dispose()


def test_activation_stack_and_rollback(store: SteppedStore) -> None:
    a, _ = store.save_revision(files("a"), PASSED, actor="alice", source="api")
    b, created = store.save_revision(files("b"), PASSED, actor="alice", source="api")
    assert created and store.save_revision(files("b"), PASSED, actor="bob", source="api")[1] is False
    assert store.active_revision_id() is None
    store.activate(a.revision_id, actor="alice")
    store.activate(b.revision_id, actor="alice")
    assert store.active_revision_id() == b.revision_id
    event = store.rollback(actor="bob", reason="broke CI")
    assert (event.action, event.from_revision, event.to_revision) == ("rollback", b.revision_id, a.revision_id)
    assert store.active_revision_id() == a.revision_id
    with pytest.raises(PolicyConflictError, match="no earlier revision to roll back to"):
        store.rollback(actor="bob")
    with pytest.raises(PolicyConflictError, match="is already active"):
        store.activate(a.revision_id, actor="alice")
    assert store.verify_chain() == 3
    assert store.head() == 3


def test_refused_revision_cannot_be_activated(store: SteppedStore) -> None:
    refused, _ = store.save_revision(files("r"), REFUSED, actor="alice", source="api")
    assert refused.status == "refused"
    with pytest.raises(PolicyConflictError) as caught:
        store.activate(refused.revision_id, actor="alice")
    assert caught.value.message == (
        f"revision {refused.revision_id} was refused by its checks and cannot be activated: "
        "1 failing test: data.t.test_a"
    )
    with pytest.raises(NotFoundError, match="policy revision sha256:nope not found"):
        store.activate("sha256:nope", actor="alice")


def test_tampering_with_an_event_breaks_the_chain(store: SteppedStore) -> None:
    a, _ = store.save_revision(files("a"), PASSED, actor="alice", source="api")
    b, _ = store.save_revision(files("b"), PASSED, actor="alice", source="api")
    store.activate(a.revision_id, actor="alice")
    store.activate(b.revision_id, actor="alice")
    with store._engine.begin() as connection:
        connection.execute(sa.text("UPDATE gatekeeper_policy_events SET actor = 'mallory' WHERE seq = 2"))
    with pytest.raises(IntegrityError, match="policy event chain broken at seq 2"):
        store.verify_chain()


def test_exceptions_numbered_approved_revoked_once_and_audited(store: SteppedStore) -> None:
    request = ExceptionRequest.parse(
        {"images": ["registry.example.com/shop/api:1.4"], "policies": ["registries"],
         "environment": "production", "reason": "r", "ticket_id": "SEC-9",
         "expires_at": "2026-11-25T12:00:00Z"},
        now=NOW,
    )
    first = store.create_exception(request, actor="alice")
    second = store.create_exception(request, actor="alice")
    assert (first.exception_id, second.exception_id) == ("EXC-1", "EXC-2")
    assert (first.status(NOW), first.approved_by, first.as_rego()["digests"]) == (
        "pending", None, {}
    )
    digest = "sha256:" + "ab" * 32
    never = lambda creator, approver: False  # noqa: E731 - the lifecycle passes the real test
    with pytest.raises(PolicyConflictError, match="has no resolved digest"):
        store.approve_exception("EXC-2", actor="carol", digests={}, same_person=never)
    with pytest.raises(PolicyConflictError, match="a second person must approve it"):
        store.approve_exception("EXC-2", actor="alice", digests={}, same_person=lambda a, b: True)
    approved = store.approve_exception(
        "EXC-2", actor="carol", digests={"registry.example.com/shop/api:1.4": digest},
        same_person=never,
    )
    assert (approved.status(NOW), approved.approved_by, approved.as_rego()["digests"]) == (
        "active", "carol", {"registry.example.com/shop/api:1.4": digest}
    )
    with pytest.raises(PolicyConflictError, match="already approved by carol"):
        store.approve_exception("EXC-2", actor="dave", digests={}, same_person=never)
    store.clock["now"] = NOW + timedelta(hours=1)
    revoked = store.revoke_exception("EXC-1", actor="bob", reason="done")
    assert (revoked.revoked_at, revoked.revoked_by, revoked.status(NOW + timedelta(hours=1))) == (
        NOW + timedelta(hours=1), "bob", "revoked"
    )
    with pytest.raises(PolicyConflictError, match="exception EXC-1 is already revoked"):
        store.revoke_exception("EXC-1", actor="bob")
    with pytest.raises(NotFoundError, match="exception EXC-7 not found"):
        store.revoke_exception("EXC-7", actor="bob")
    assert [e.exception_id for e in store.list_exceptions()] == ["EXC-1", "EXC-2"]
    assert [(e.action, e.subject) for e in reversed(store.events())] == [
        ("exception.create", "EXC-1"), ("exception.create", "EXC-2"),
        ("exception.approve", "EXC-2"), ("exception.revoke", "EXC-1"),
    ]
    assert store.verify_chain() == 4
    assert store.active_revision_id() is None  # exception events never move the pointer


def test_v2_adds_the_signatures_column_to_a_v1_store(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'v1.db'}")
    store = SqlPolicyStore(engine)
    store.migrate()
    with engine.begin() as connection:  # back to what a v1 release left behind
        connection.execute(sa.text(
            "ALTER TABLE gatekeeper_policy_revisions DROP COLUMN uploaded_signatures"))
        connection.execute(sa.text("DELETE FROM gatekeeper_policy_migrations WHERE version = 2"))
    assert store.migrate() == [2]
    columns = {c["name"] for c in sa.inspect(engine).get_columns("gatekeeper_policy_revisions")}
    assert "uploaded_signatures" in columns
    engine.dispose()


def test_v1_exceptions_become_pending_after_the_v3_migration(tmp_path: Path) -> None:
    """A v1 store (free-text approver) migrates; its exceptions waive nothing until approved."""
    engine = create_database_engine(f"sqlite:///{tmp_path / 'v1.db'}")
    SqlPolicyStore(engine).migrate()
    with engine.begin() as connection:  # back to the exceptions table a v1 release left behind
        connection.execute(sa.text("DROP TABLE gatekeeper_policy_exceptions"))
        connection.execute(sa.text(
            "CREATE TABLE gatekeeper_policy_exceptions (seq INTEGER PRIMARY KEY, "
            "exception_id VARCHAR(32) UNIQUE, images TEXT NOT NULL, policies TEXT NOT NULL, "
            "environment VARCHAR(128), namespace VARCHAR(253), reason TEXT NOT NULL, "
            "approver VARCHAR(256) NOT NULL, ticket_id VARCHAR(256) NOT NULL, "
            "expires_at DATETIME NOT NULL, created_at DATETIME NOT NULL, "
            "created_by VARCHAR(256) NOT NULL, revoked_at DATETIME, revoked_by VARCHAR(256), "
            "revoke_reason TEXT)"
        ))
        connection.execute(sa.text(
            "INSERT INTO gatekeeper_policy_exceptions (exception_id, images, policies, "
            "environment, reason, approver, ticket_id, expires_at, created_at, created_by) "
            "VALUES ('EXC-1', '[\"docker.io/library/nginx\"]', '[\"registries\"]', "
            "'production', 'r', 'anonymous (auth disabled)', 'SEC-1', "
            "'2026-11-25 12:00:00', '2026-11-24 11:00:00', 'alice')"
        ))
        connection.execute(sa.text("DELETE FROM gatekeeper_policy_migrations WHERE version = 3"))
    store = SqlPolicyStore(engine, clock=lambda: NOW)
    assert store.migrate() == [3]
    legacy = store.get_exception("EXC-1")
    assert (legacy.status(NOW), legacy.approved_by, legacy.any_digest) == ("pending", None, False)
    assert "approved_at" not in legacy.as_rego()
    with pytest.raises(PolicyConflictError, match="without any_digest: true; create a new exception"):
        store.approve_exception("EXC-1", actor="carol", digests={},
                                same_person=lambda a, b: False)
    engine.dispose()
