"""PostgreSQL goes away in the middle of a load and comes back: nothing answered is lost.

Starts its OWN throwaway PostgreSQL cluster (initdb + pg_ctl, like scripts/test-servers) on a
free port, because this test stops and restarts it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from gatekeeper.audit import open_audit_log, verify_database
from gatekeeper.audit.chain import load_public_key
from gatekeeper.service import EvaluationService
from gatekeeper.wiring import build_container
from tests.helpers.postgres import ThrowawayPostgres
from tests.helpers.types import MakeSettings

pytestmark = [pytest.mark.postgres, pytest.mark.integration]

DIGEST = "sha256:" + "cd" * 32


def test_database_outage_in_the_middle_of_a_load_loses_nothing(
    make_settings: MakeSettings, throwaway_postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "audit.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    settings = make_settings(database_url=throwaway_postgres.url)
    container = build_container(settings)
    container.audit_log.close()
    audit = open_audit_log(settings.database_url, signing_key_file=key_file, spool_dir=tmp_path / "spool",
                           checkpoint_every=50, metrics=container.metrics)
    audit.settings.maintenance_interval_seconds = 0.2
    container.audit_log = audit
    container.service = EvaluationService(policy_engine=container.policy_engine, audit_log=audit)
    app = create_app(settings, container=container)

    answered: list[str] = []
    refused: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(client: TestClient, worker: int) -> None:
        number = 0
        while not stop.is_set():
            number += 1
            response = client.post("/v1/evaluations", json={
                "images": [f"registry.example.com/payments/api:{worker}.{number}@{DIGEST}"],
                "environment": "production", "ticket": {"ticket_id": f"CHG-{worker}"}})
            with lock:
                if response.status_code == 200:
                    answered.append(response.json()["decision_id"])
                else:
                    refused.append(response.status_code)

    with TestClient(app) as client:
        audit.start()
        workers = [threading.Thread(target=load, args=(client, w)) for w in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(1.5)
        throwaway_postgres.stop("immediate")  # the database dies under load
        time.sleep(2.0)
        spooled_during_outage = audit.spool_depth
        throwaway_postgres.start()
        time.sleep(2.0)
        stop.set()
        for worker in workers:
            worker.join()
        deadline = time.monotonic() + 30
        while audit.spool_depth and time.monotonic() < deadline:
            time.sleep(0.2)
        assert audit.spool_depth == 0
        assert container.metrics.registry.get_sample_value("gatekeeper_audit_spool_depth") == 0

    print(f"answered {len(answered)}, spooled during the outage {spooled_during_outage}")
    assert spooled_during_outage > 0, "the outage did not reach the spool"
    assert refused == []  # the spool took every decision while the database was down
    engine = sa.create_engine(throwaway_postgres.url)
    with engine.connect() as connection:
        stored = set(connection.execute(sa.text("SELECT decision_id FROM gatekeeper_decisions")).scalars())
    missing = set(answered) - stored
    assert not missing, f"{len(missing)} answered decisions are not in the trail"
    report = verify_database(engine, load_public_key(key_file))
    assert report.records == len(stored) >= len(answered)
    engine.dispose()
