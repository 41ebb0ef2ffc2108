"""The audit spool can never be poisoned.

1. At the edge: control characters and over-long fields are refused with the same limits by the
   REST API (422) and the admission webhook (400), naming the field; nothing is recorded.
2. A spooled record that the real PostgreSQL refuses anyway (a NUL byte, as spooled by a
   version without the edge checks) is quarantined: kept, counted in a metric, named in
   ``/readyz`` and by ``gatekeeper audit verify``; the records behind it are stored.
3. ``/readyz`` fails while the spool cannot drain, and says why.
Spool files stay mode 0600 after replay. PostgreSQL is stopped and restarted for real
(``ThrowawayPostgres`` of ``test_audit_outage``).
"""

from __future__ import annotations

import json
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from typer.testing import CliRunner

from gatekeeper.app import create_app
from gatekeeper.cli.audit import audit_app
from gatekeeper.config import Settings
from tests.helpers.app import container_of
from tests.helpers.postgres import ThrowawayPostgres
from tests.helpers.types import MakeSettings
from tests.integration.test_admission_signatures import deployment_review

DIGEST = "sha256:" + "cd" * 32
IMAGE = f"registry.example.com/payments/api:1.4@{DIGEST}"


def evaluate(client: TestClient, **body: Any) -> Any:
    return client.post(
        "/v1/evaluations",
        json={"images": [IMAGE], "environment": "staging", **body},
    )


def review(namespace: str = "shop", username: str = "alice") -> dict[str, Any]:
    document = deployment_review("uid-edge", [IMAGE])
    document["request"]["namespace"] = namespace
    document["request"]["object"]["metadata"]["namespace"] = namespace
    document["request"]["userInfo"]["username"] = username
    return document


@pytest.fixture
def gate(make_settings: MakeSettings) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(default_environment="staging"))) as client:
        yield client


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"ticket": {"ticket_id": "CHG-1\x00; DROP"}}, "ticket.ticket_id",
         "ticket.ticket_id contains the control character U+0000 at position 5"),
        ({"ticket": {"plan_id": "P\x1b[31m"}}, "ticket.plan_id",
         "ticket.plan_id contains the control character U+001B at position 1"),
        ({"namespace": "shop\nevil"}, "namespace",
         "namespace contains the control character U+000A at position 4"),
        ({"environment": "staging\x00"}, "environment",
         "environment contains the control character U+0000 at position 7"),
    ],
)
def test_rest_refuses_control_characters_naming_the_field(
    gate: TestClient, body: dict[str, Any], field: str, message: str
) -> None:
    before = gate.get("/v1/decisions").json()["items"]
    response = evaluate(gate, **body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert response.json()["message"] == f"{field}: {message}"
    assert gate.get("/v1/decisions").json()["items"] == before


def test_rest_refuses_over_long_fields(gate: TestClient) -> None:
    for body, field in (({"namespace": "n" * 254}, "namespace"),
                        ({"ticket": {"ticket_id": "T" * 257}}, "ticket.ticket_id"),
                        ({"environment": "e" * 129}, "environment")):
        response = evaluate(gate, **body)
        assert (response.status_code, response.json()["field"]) == (422, field), response.text


@pytest.mark.parametrize(
    ("namespace", "username", "message"),
    [
        ("n" * 254, "alice", "namespace is 254 characters long; at most 253 are allowed"),
        ("shop", "alice\x00", "caller contains the control character U+0000 at position 5"),
        ("shop", "u" * 257, "caller is 257 characters long; at most 256 are allowed"),
    ],
)
def test_admission_refuses_the_same_values_with_400_naming_the_field(
    gate: TestClient, namespace: str, username: str, message: str
) -> None:
    before = gate.get("/v1/decisions").json()["items"]
    response = gate.post("/admission/validate", json=review(namespace, username))
    assert response.status_code == 200, response.text
    answer = response.json()["response"]
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 400
    assert answer["status"]["message"] == f"invalid request: {message}"
    assert gate.get("/v1/decisions").json()["items"] == before


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pg_gate(
    make_settings: MakeSettings, throwaway_postgres: ThrowawayPostgres, tmp_path: Path
) -> Iterator[tuple[TestClient, Settings]]:
    settings = make_settings(
        database_url=throwaway_postgres.url, default_environment="staging",
        audit_spool_dir=tmp_path / "spool",
    )
    with TestClient(create_app(settings)) as client:
        container_of(client).audit_log.settings.maintenance_interval_seconds = 0.2
        yield client, settings


def test_a_spooled_record_the_store_refuses_is_quarantined_and_blocks_nothing(
    pg_gate: tuple[TestClient, Settings], throwaway_postgres: ThrowawayPostgres,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, settings = pg_gate
    audit = container_of(client).audit_log
    assert audit.spool is not None  # pg_gate configures a spool directory
    first = evaluate(client).json()["decision_id"]

    throwaway_postgres.stop()
    spooled = [evaluate(client, ticket={"ticket_id": f"CHG-{n}"}) for n in (1, 2)]
    assert [r.status_code for r in spooled] == [200, 200]
    assert audit.spool_depth == 2
    # a record as a version without the edge checks spooled it: NUL in the ticket id
    line = json.loads(audit.spool.path.read_text().splitlines()[0])
    poisoned = dict(line["decision"], decision_id=str(uuid.uuid4()))
    poisoned["ticket"] = dict(poisoned["ticket"], ticket_id="CHG-\x00-poison")
    audit.spool.append([(poisoned, line["policy_input"])])
    behind = evaluate(client, ticket={"ticket_id": "CHG-3"})
    assert behind.status_code == 200 and audit.spool_depth == 4

    throwaway_postgres.start()
    wait_for(lambda: audit.spool_depth == 0, "the spool to drain past the poisoned record")

    for decision_id in [first] + [r.json()["decision_id"] for r in (*spooled, behind)]:
        assert client.get(f"/v1/decisions/{decision_id}").status_code == 200, decision_id
    assert client.get(f"/v1/decisions/{poisoned['decision_id']}").status_code == 404
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    quarantine = settings.audit_spool_dir / "decisions.quarantine.jsonl"
    assert ready.json()["audit_spool_quarantined"] == 1
    assert ready.json()["audit_spool_quarantine"] == (
        f"1 spooled decisions refused by the audit store are kept in {quarantine} "
        "(see gatekeeper audit verify)"
    )
    kept = json.loads(quarantine.read_text())
    assert json.loads(kept["line"])["decision"]["decision_id"] == poisoned["decision_id"]
    assert kept["reason"].startswith("refused by ") and "DataError" in kept["reason"]
    assert "NUL" in kept["reason"]
    assert mode(quarantine) == 0o600
    assert mode(audit.spool.path) == 0o600
    assert "gatekeeper_audit_spool_quarantined 1.0" in generate_latest(
        container_of(client).metrics.registry
    ).decode()

    monkeypatch.setenv("GATEKEEPER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("GATEKEEPER_AUDIT_SPOOL_DIR", str(settings.audit_spool_dir))
    verified = CliRunner().invoke(audit_app, ["verify"])
    assert verified.exit_code == 1, verified.output
    assert (
        "audit verification FAILED: 1 spooled decisions were refused by the audit store and "
        f"are kept in {quarantine}"
    ) in verified.output


def test_readyz_fails_while_the_spool_cannot_drain(
    pg_gate: tuple[TestClient, Settings], throwaway_postgres: ThrowawayPostgres
) -> None:
    client, settings = pg_gate
    audit = container_of(client).audit_log
    assert audit.spool is not None  # pg_gate configures a spool directory
    evaluate(client)
    throwaway_postgres.stop()
    assert evaluate(client).status_code == 200
    assert audit.spool_depth == 1
    throwaway_postgres.start()
    engine = sa.create_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'writes suspended'; END $$"
        ))
        connection.execute(sa.text(
            "CREATE TRIGGER refuse BEFORE INSERT ON gatekeeper_decisions "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
        ))

    def not_ready() -> bool:
        status: int = client.get("/readyz").status_code
        return status == 503

    wait_for(not_ready, "/readyz to fail")
    body = client.get("/readyz").json()
    assert body["failures"]["audit_spool"].startswith(
        "audit spool cannot drain: 1 decisions waiting (ProgrammingError from postgresql"
    )
    assert audit.spool_depth == 1 and audit.spool_quarantined == 0  # kept, not quarantined

    with engine.begin() as connection:
        connection.execute(sa.text("DROP TRIGGER refuse ON gatekeeper_decisions"))
    engine.dispose()
    wait_for(lambda: client.get("/readyz").status_code == 200, "/readyz to recover")
    assert audit.spool_depth == 0
    assert mode(audit.spool.path) == 0o600
