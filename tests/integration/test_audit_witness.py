"""History cannot be rewritten by whoever owns the database.

The whole application on the real PostgreSQL (a database of its own), checkpoints signed every 3
records and published to an S3 bucket with Object Lock on ``moto_server``. Then, as the database
superuser: drop the append-only triggers, rewrite a deny into an allow, recompute every hash,
delete every checkpoint. ``gatekeeper audit verify`` must fail (0 checkpoints with a key), ``audit
verify --witness`` must name the witnessed checkpoint the database lost, and the writer must
refuse to extend the rewritten chain (through the REST API and an AdmissionReview, and after a
restart, when it learns the last checkpoint from the witness). The file witness: reordered or
contradicting lines fail; a row beyond the chain head fails verify.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gatekeeper.app import create_app
from gatekeeper.audit.chain import GENESIS_HASH, canonical_json, record_hash, sha256_hex
from gatekeeper.audit.schema import drop_append_only_triggers
from gatekeeper.cli.audit import audit_app
from tests.helpers.postgres import fresh_database
from tests.helpers.types import MakeSettings
from tests.integration.test_admission_signatures import deployment_review

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

DIGEST = "sha256:" + "cd" * 32
ALLOWED = f"registry.example.com/payments/api:1.4@{DIGEST}"
DENIED = f"evil.example.com/payments/api:1.4@{DIGEST}"


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url, prefix="gk_witness") as url:
        yield url


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private, public = tmp_path / "audit.pem", tmp_path / "audit.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def evaluate(client: TestClient, image: str) -> Any:
    return client.post("/v1/evaluations", json={"images": [image], "environment": "development"})


def rewrite_history(url: str) -> None:
    """As the superuser: triggers off, decision 2 (a deny) becomes an allow, every hash is
    recomputed so the database agrees with itself, every checkpoint is deleted."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        drop_append_only_triggers(connection)
        rows = connection.execute(sa.text(
            "SELECT seq, document, policy_input_sha256 FROM gatekeeper_decisions ORDER BY seq"
        )).all()
        previous = GENESIS_HASH
        head = previous
        for row in rows:
            document = json.loads(row.document)
            if row.seq == 2:
                assert document["verdict"] == "deny"
                document.update(verdict="allow", allowed=True, violations=[])
            text = canonical_json(document).decode()
            digest = sha256_hex(text.encode())
            head = record_hash(int(row.seq), previous, digest, row.policy_input_sha256)
            connection.execute(sa.text(
                "UPDATE gatekeeper_decisions SET document = :d, decision_sha256 = :s, "
                "verdict = :v, prev_hash = :p, record_hash = :h WHERE seq = :q"
            ), {"d": text, "s": digest, "v": document["verdict"], "p": previous, "h": head,
                "q": row.seq})
            previous = head
        connection.execute(sa.text("DELETE FROM gatekeeper_audit_checkpoints"))
        connection.execute(sa.text(
            "UPDATE gatekeeper_audit_chain_head SET record_hash = :h, checkpoint_seq = 0"
        ), {"h": head})
    engine.dispose()


def test_a_superuser_rewrite_is_caught_by_the_witness_and_refused_by_the_writer(
    make_settings: MakeSettings, database: str, keys: tuple[Path, Path], moto_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    bucket = f"gk-witness-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    witness = f"s3://{bucket}/checkpoints/"
    settings = make_settings(
        database_url=database, default_environment="development",
        audit_signing_key_file=keys[0], audit_checkpoint_every=3,
        audit_witness=witness, audit_witness_endpoint_url=moto_url,
    )
    with TestClient(create_app(settings)) as client:
        verdicts = [evaluate(client, image).json()["verdict"]
                    for image in (ALLOWED, DENIED, ALLOWED, ALLOWED, ALLOWED, ALLOWED)]
        assert verdicts[1] == "deny"
        # both checkpoints (records 3 and 6) are in the bucket, locked in compliance mode
        objects = s3.list_objects_v2(Bucket=bucket, Prefix="checkpoints/")["Contents"]
        assert [o["Key"].split("/")[1][:20] for o in objects] == [f"{3:020d}", f"{6:020d}"]
        head = s3.head_object(Bucket=bucket, Key=objects[0]["Key"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"].year >= 2027

        env = {"GATEKEEPER_DATABASE_URL": database, "GATEKEEPER_AUDIT_CHECKPOINT_EVERY": "3",
               "GATEKEEPER_AUDIT_WITNESS_ENDPOINT_URL": moto_url}
        runner = CliRunner()
        before = runner.invoke(audit_app, ["verify", "--public-key", str(keys[1]),
                                           "--witness", witness], env=env)
        assert before.exit_code == 0, before.output
        assert "6 records (1..6), 2 signed checkpoints" in before.output

        rewrite_history(database)

        plain = runner.invoke(audit_app, ["verify", "--public-key", str(keys[1])], env=env)
        assert plain.exit_code == 1, plain.output
        assert "0 signed checkpoints for 6 records although a checkpoint key is configured" in (
            plain.output
        )
        witnessed = runner.invoke(audit_app, ["verify", "--public-key", str(keys[1]),
                                              "--witness", witness], env=env)
        assert witnessed.exit_code == 1, witnessed.output
        assert witnessed.output.strip() == (
            "error: audit verification FAILED: the checkpoint at record 3 witnessed by "
            f"{witness} is missing from the database"
        )

        # the writer refuses to extend (and so never signs) the rewritten chain: both doors
        refused = evaluate(client, ALLOWED)
        assert refused.status_code == 503, refused.text
        assert refused.json()["message"].endswith(
            "refusing to extend the audit chain: record 6 no longer matches the signed "
            "checkpoint at record 6 (the trail was rewritten)"
        )
        answer = client.post("/admission/validate",
                             json=deployment_review("uid-rewritten", [ALLOWED])).json()["response"]
        assert answer["allowed"] is False
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["failures"]["audit_store"] == (
            "refusing to extend the audit chain: record 6 no longer matches the signed "
            "checkpoint at record 6 (the trail was rewritten)"
        )

    # a restarted gatekeeper learns the last checkpoint from the witness and refuses as well
    with TestClient(create_app(settings)) as client:
        assert evaluate(client, ALLOWED).status_code == 503


def test_file_witness_fails_on_reordered_and_contradicting_checkpoints(
    make_settings: MakeSettings, database: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    witness_file = tmp_path / "other-volume" / "checkpoints.jsonl"
    witness = f"file://{witness_file}"
    settings = make_settings(database_url=database, default_environment="development",
                             audit_signing_key_file=keys[0], audit_checkpoint_every=2,
                             audit_witness=witness)
    with TestClient(create_app(settings)) as client:
        for _ in range(4):
            evaluate(client, ALLOWED)
    lines = witness_file.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [2, 4]
    assert witness_file.stat().st_mode & 0o777 == 0o600
    env = {"GATEKEEPER_DATABASE_URL": database, "GATEKEEPER_AUDIT_CHECKPOINT_EVERY": "2"}
    runner = CliRunner()

    def verify() -> Any:
        return runner.invoke(audit_app, ["verify", "--public-key", str(keys[1]),
                                         "--witness", witness], env=env)

    assert verify().exit_code == 0
    witness_file.write_text("\n".join(reversed(lines)) + "\n")
    reordered = verify()
    assert reordered.exit_code == 1
    assert (f"the witness {witness} is out of order: the checkpoint at record 2 follows the one "
            "at record 4") in reordered.output
    contradicting = json.loads(lines[0]) | {"record_hash": "sha256:" + "ee" * 32,
                                            "signature": "AAAA"}
    witness_file.write_text(json.dumps(contradicting) + "\n" + lines[1] + "\n")
    assert "record 2 changed: the database's checkpoint at record 2 contradicts the one " \
           f"witnessed by {witness}" in verify().output

    # a row beyond the chain head: invisible to a walk up to the head, so named explicitly
    witness_file.write_text("\n".join(lines) + "\n")
    engine = sa.create_engine(database)
    with engine.begin() as connection:
        drop_append_only_triggers(connection)
        connection.execute(sa.text(
            "INSERT INTO gatekeeper_decisions SELECT seq + 100, decision_id || '-x', created_at, "
            "source, verdict, mode, dry_run, environment, namespace, intent_id, plan_id, "
            "ticket_id, deploy_id, policy_revision, caller, document, policy_input, "
            "decision_sha256, policy_input_sha256, prev_hash, record_hash "
            "FROM gatekeeper_decisions WHERE seq = 4"
        ))
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["failures"]["audit_store"].endswith(
            "record 104 lies beyond the chain head at record 4; no decision can be recorded "
            "(run gatekeeper audit verify)"
        )
    beyond = verify()
    assert beyond.exit_code == 1
    assert "record 104 inserted: it lies beyond the chain head at record 4" in beyond.output
