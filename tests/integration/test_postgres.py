"""The audit store on a real PostgreSQL (started by scripts/test), through the API and the CLI."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from gatekeeper.audit import SqlAuditLog, create_database_engine
from gatekeeper.domain import SCHEMA_VERSION
from gatekeeper.errors import StorageError
from tests.helpers.cli import outside_environment
from tests.helpers.postgres import fresh_database
from tests.helpers.types import MakeSettings

pytestmark = pytest.mark.postgres

DIGEST = "sha256:" + "ef" * 32


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A fresh database per test, dropped afterwards."""
    with fresh_database(postgres_url) as url:
        yield url


def test_decisions_are_stored_and_read_back_by_id_and_ticket(make_settings: MakeSettings, database_url: str) -> None:
    settings = make_settings(database_url=database_url)
    with TestClient(create_app(settings)) as client:
        body = client.post(
            "/v1/evaluations",
            json={
                "images": [f"registry.example.com/pay/api:2@{DIGEST}", "nginx"],
                "environment": "production",
                "namespace": "pay",
                "ticket": {"intent_id": "I-9", "plan_id": "P-9", "ticket_id": "T-9", "deploy_id": "D-9"},
            },
        ).json()
        assert body["verdict"] == "deny"
        assert client.get(f"/v1/decisions/{body['decision_id']}").json() == body
        for key, value in {"ticket_id": "T-9", "plan_id": "P-9", "intent_id": "I-9", "deploy_id": "D-9", "image_digest": DIGEST}.items():
            items = client.get("/v1/decisions", params={key: value}).json()["items"]
            assert [i["decision_id"] for i in items] == [body["decision_id"]], key

    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT verdict, environment, namespace, ticket_id, policy_revision, policy_input "
                    "FROM gatekeeper_decisions")
        ).one()
        images = connection.execute(
            sa.text("SELECT reference, digest FROM gatekeeper_decision_images ORDER BY position")
        ).all()
    engine.dispose()
    assert row.verdict == "deny" and row.environment == "production" and row.namespace == "pay"
    assert row.ticket_id == "T-9" and row.policy_revision == body["policy_revision"]
    assert f'"schema_version":"{SCHEMA_VERSION}"' in row.policy_input
    assert [tuple(i) for i in images] == [(f"registry.example.com/pay/api:2@{DIGEST}", DIGEST), ("nginx", None)]


def test_migrations_are_idempotent_and_versioned(database_url: str) -> None:
    audit = SqlAuditLog(create_database_engine(database_url))
    assert audit.migrate() == [1, 2]
    assert audit.migrate() == []
    with audit.engine.connect() as connection:
        versions = connection.execute(sa.text("SELECT version FROM gatekeeper_schema_migrations")).scalars().all()
    assert versions == [1, 2]
    audit.close()


def test_unreachable_database_names_itself_without_password() -> None:
    audit = SqlAuditLog(create_database_engine("postgresql://gk:s3cret@127.0.0.1:9/none"))
    with pytest.raises(StorageError) as caught:
        audit.check_health()
    assert caught.value.message == "audit store postgresql+psycopg://gk:***@127.0.0.1:9/none unreachable"
    assert "s3cret" not in caught.value.render()


def test_cli_evaluate_records_in_postgres(database_url: str, opa_binary: str, policy_dir: Path, tmp_path: Path) -> None:
    env = outside_environment(keep_test_servers=False)
    env.update(GATEKEEPER_DATABASE_URL=database_url, GATEKEEPER_OPA_BINARY=opa_binary,
               GATEKEEPER_POLICY_DIR=str(policy_dir))
    result = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "evaluate", f"registry.example.com/x@{DIGEST}",
         "--environment", "development", "--ticket-id", "T-CLI", "--output", "json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    import json

    decision_id = json.loads(result.stdout)["decision_id"]
    shown = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "decisions", "show", decision_id],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["ticket"]["ticket_id"] == "T-CLI"
