"""The hash-chained trail on real SQLite and PostgreSQL: complete records, append-only
triggers, checkpoints, verification naming the tampered record, retention, spool."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatekeeper.audit import (
    AuditSettings,
    ChainBrokenError,
    CheckpointSigner,
    DurableSpool,
    SqlAuditLog,
    create_database_engine,
    verify_database,
)
from gatekeeper.audit.schema import drop_append_only_triggers
from gatekeeper.audit.sql import prepare
from gatekeeper.domain import Decision, DecisionQuery, Verdict
from gatekeeper.errors import StorageError
from gatekeeper.metrics import Metrics
from tests.helpers.postgres import fresh_database
from tests.unit.audit.factory import BASE_TIME, make_decision

MakeLog = Callable[..., SqlAuditLog]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def make_log(database_url: str, signer: CheckpointSigner, tmp_path: Path) -> Iterator[MakeLog]:
    logs: list[SqlAuditLog] = []

    def _make(**kwargs: Any) -> SqlAuditLog:
        kwargs.setdefault("signer", signer)
        kwargs.setdefault("settings", AuditSettings(checkpoint_every=4, checkpoint_interval_seconds=3600))
        log = SqlAuditLog(create_database_engine(database_url), **kwargs)
        log.migrate()
        logs.append(log)
        return log

    yield _make
    for log in logs:
        log.close()


def fill(log: SqlAuditLog, count: int, **kwargs: Any) -> list[Decision]:
    decisions = [make_decision(index=i, **kwargs) for i in range(1, count + 1)]
    for decision in decisions:
        log.record(decision)
    return decisions


def attack(log: SqlAuditLog, *statements: tuple[str, dict[str, Any]]) -> None:
    """An attacker with database access: drop the triggers, then change rows directly."""
    with log.engine.begin() as connection:
        drop_append_only_triggers(connection)
        for statement, params in statements:
            connection.execute(sa.text(statement), params)


def failure(log: SqlAuditLog, signer: CheckpointSigner) -> str:
    with pytest.raises(ChainBrokenError) as caught:
        verify_database(log.engine, signer.public_key)
    return caught.value.message


def test_record_is_complete_and_canonical(make_log: MakeLog) -> None:
    log = make_log()
    decision = make_decision(index=1)
    log.record(decision)
    with log.engine.connect() as connection:
        row = connection.execute(sa.text("SELECT * FROM gatekeeper_decisions")).one()
    document = json.loads(row.document)
    assert document == decision.as_dict()
    assert document["caller"] == "ci-bot" and document["latency_ms"] == 12.5
    assert document["context"] == {"kind": "Deployment", "name": "api", "user": "system:serviceaccount:ci"}
    assert document["images"][0]["evidence"]["sbom"] == {"sha256": "ef" * 32}
    assert row.policy_input == '{"images":[{"reference":"' + decision.images[0].reference.original + '"}],"schema_version":"1"}'
    assert (row.seq, row.prev_hash) == (1, "0" * 64)
    assert row.record_hash == prepare(decision.as_dict(), decision.policy_input).row["decision_sha256"] or len(row.record_hash) == 64
    assert log.get(decision.decision_id) == decision


def test_update_delete_truncate_are_refused(make_log: MakeLog, database_url: str) -> None:
    log = make_log()
    fill(log, 4)  # a checkpoint at 4
    statements = {
        "UPDATE gatekeeper_decisions SET verdict = 'allow'": "UPDATE of gatekeeper_decisions refused",
        "DELETE FROM gatekeeper_decisions WHERE seq = 2": "DELETE of gatekeeper_decisions refused",
        "DELETE FROM gatekeeper_decision_images": "DELETE of gatekeeper_decision_images refused",
        "UPDATE gatekeeper_audit_checkpoints SET seq = 9": "UPDATE of gatekeeper_audit_checkpoints refused",
    }
    if database_url.startswith("postgresql"):
        statements["TRUNCATE gatekeeper_decisions CASCADE"] = "TRUNCATE of gatekeeper_decisions refused"
    for statement, message in statements.items():
        with pytest.raises(sa.exc.DatabaseError) as caught, log.engine.begin() as connection:
            connection.execute(sa.text(statement))
        assert f"gatekeeper audit records are append-only: {message}" in str(caught.value), statement
    assert verify_database(log.engine, None).records == 4


def test_intact_trail_verifies_with_periodic_checkpoints(make_log: MakeLog, signer: CheckpointSigner) -> None:
    log = make_log()
    fill(log, 10)
    report = verify_database(log.engine, signer.public_key)
    assert (report.records, report.checkpoints, report.last_checkpoint_seq) == (10, 2, 8)
    assert report.summary() == (
        "audit trail verified: 10 records (1..10), 2 signed checkpoints, last at record 8; "
        "2 records after it are chained but not yet signed"
    )
    assert log.write_checkpoint().seq == 10  # type: ignore[union-attr]  # None fails the test
    assert verify_database(log.engine, signer.public_key).uncovered == 0


def test_edited_document_is_named(make_log: MakeLog, signer: CheckpointSigner) -> None:
    log = make_log()
    fill(log, 6)
    attack(log, ("UPDATE gatekeeper_decisions SET document = replace(document, '\"allow\"', '\"deny\"') "
                 "WHERE seq = 3", {}))
    assert failure(log, signer) == "record 3 changed: its content does not match its hash"


def test_edited_query_column_is_named(make_log: MakeLog, signer: CheckpointSigner) -> None:
    log = make_log()
    fill(log, 6)
    attack(log, ("UPDATE gatekeeper_decisions SET ticket_id = 'CHG-OTHER' WHERE seq = 5", {}))
    assert failure(log, signer) == "record 5 changed: column ticket_id differs from its hashed document"


def test_deleted_record_is_named(make_log: MakeLog, signer: CheckpointSigner) -> None:
    log = make_log()
    fill(log, 6)
    attack(log, ("DELETE FROM gatekeeper_decision_images WHERE decision_seq = 3", {}),
           ("DELETE FROM gatekeeper_decisions WHERE seq = 3", {}))
    assert failure(log, signer) == "record 3 removed: the trail goes from record 2 to record 4"


def test_deleted_last_records_are_named(make_log: MakeLog, signer: CheckpointSigner) -> None:
    log = make_log()
    fill(log, 8)  # checkpoint at 8
    attack(log, ("DELETE FROM gatekeeper_decision_images WHERE decision_seq >= 7", {}),
           ("DELETE FROM gatekeeper_decisions WHERE seq >= 7", {}),
           ("UPDATE gatekeeper_audit_chain_head SET seq = 6", {}))
    assert failure(log, signer) == "record 7 removed: the signed checkpoint at record 8 covers it"


def test_inserted_record_is_named(make_log: MakeLog, signer: CheckpointSigner) -> None:
    log = make_log()
    fill(log, 6)
    from gatekeeper.audit.chain import record_hash
    from gatekeeper.audit.schema import decision_images, decisions

    with log.engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(
            sa.select(decisions).where(decisions.c.seq >= 3).order_by(decisions.c.seq))]
        images = [dict(r._mapping) for r in connection.execute(
            sa.select(decision_images).where(decision_images.c.decision_seq >= 3))]
        prev = connection.execute(sa.text("SELECT record_hash FROM gatekeeper_decisions WHERE seq = 2")).scalar_one()

    forged = prepare(make_decision(index=99, verdict=Verdict.ALLOW).as_dict(), None)
    forged_row = {**forged.row, "seq": 3, "prev_hash": prev,
                  "record_hash": record_hash(3, prev, forged.row["decision_sha256"], None)}
    with log.engine.begin() as connection:
        drop_append_only_triggers(connection)
        connection.execute(decision_images.delete().where(decision_images.c.decision_seq >= 3))
        connection.execute(decisions.delete().where(decisions.c.seq >= 3))
        connection.execute(decisions.insert(), [forged_row] + [{**r, "seq": r["seq"] + 1} for r in rows])
        connection.execute(decision_images.insert(),
                           [{**i, "decision_seq": i["decision_seq"] + 1} for i in images]
                           + [{**image, "decision_seq": 3} for image in forged.images])
        connection.execute(sa.text("UPDATE gatekeeper_audit_chain_head SET seq = 7"))
    assert failure(log, signer) == (
        "record 3 inserted: the records after it were renumbered (record 4 was recorded as 3)"
    )


def test_rehashed_rewrite_is_caught_by_signed_checkpoint(make_log: MakeLog, signer: CheckpointSigner) -> None:
    log = make_log()
    fill(log, 8)  # checkpoints at 4 and 8
    from gatekeeper.audit.chain import record_hash

    with log.engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT seq, prev_hash, decision_sha256, policy_input_sha256 FROM gatekeeper_decisions "
            "WHERE seq >= 6 ORDER BY seq")).all()
    statements = []
    prev = rows[0].prev_hash
    for row in rows:
        forged = "00" * 32 if row.seq == 6 else row.decision_sha256
        digest = record_hash(row.seq, prev, forged, row.policy_input_sha256)
        statements.append((
            "UPDATE gatekeeper_decisions SET decision_sha256 = :d, prev_hash = :p, record_hash = :h WHERE seq = :s",
            {"d": forged, "p": prev, "h": digest, "s": row.seq},
        ))
        prev = digest
    attack(log, *statements)
    # the stored digests are consistent now, but record 6's content is not what they say
    assert failure(log, signer) == "record 6 changed: its content does not match its hash"


def test_since_starts_at_a_checkpoint(make_log: MakeLog, signer: CheckpointSigner) -> None:
    log = make_log()
    fill(log, 10)
    report = verify_database(log.engine, signer.public_key, since=BASE_TIME + timedelta(seconds=7))
    assert (report.first_seq, report.records) == (5, 6)


def test_retention_prunes_behind_a_checkpoint_and_the_rest_verifies(make_log: MakeLog, signer: CheckpointSigner) -> None:
    log = make_log()
    fill(log, 10)  # created 1..10 s after BASE_TIME; checkpoints at 4 and 8
    deleted = log.prune(timedelta(days=1), now=BASE_TIME + timedelta(days=1, seconds=9, milliseconds=500))
    assert deleted == 8
    report = verify_database(log.engine, signer.public_key)
    assert (report.first_seq, report.records, report.pruned_through) == (9, 2, 8)
    assert report.summary().endswith("; records 1..8 pruned by retention")
    # a record younger than the cutoff below the checkpoint keeps the checkpoint range
    assert log.prune(timedelta(days=1), now=BASE_TIME + timedelta(days=1)) == 0
    # still append-only outside of pruning
    with pytest.raises(sa.exc.DatabaseError), log.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM gatekeeper_decisions WHERE seq = 9"))


def test_prune_without_key_refuses(make_log: MakeLog) -> None:
    log = make_log(signer=None)
    with pytest.raises(StorageError, match="retention needs the audit signing key: nothing was pruned"):
        log.prune(timedelta(days=1))


def test_two_writers_share_one_chain_without_gaps_or_forks(make_log: MakeLog, signer: CheckpointSigner) -> None:
    import threading

    logs = [make_log(), make_log()]  # two "replicas": separate engines, one database
    decisions = [make_decision(index=i) for i in range(1, 81)]

    def write(log: SqlAuditLog, part: list[Decision]) -> None:
        for decision in part:
            log.record(decision)

    threads = [threading.Thread(target=write, args=(logs[i % 2], decisions[i::4])) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = verify_database(logs[0].engine, signer.public_key)
    assert (report.first_seq, report.last_seq, report.records) == (1, 80, 80)


def test_queries_and_ticket_filter(make_log: MakeLog) -> None:
    log = make_log()
    fill(log, 3, ticket_id="CHG-7")
    log.record(make_decision(index=4, ticket_id="CHG-8", verdict=Verdict.DENY))
    page = log.query(DecisionQuery(ticket_id="CHG-7", limit=2))
    assert [d.decision_id[-1] for d in page.items] == ["3", "2"] and page.next_cursor
    assert [d.verdict for d in log.query(DecisionQuery(verdict=Verdict.DENY)).items] == [Verdict.DENY]


def test_unreachable_database_spools_and_replays_in_order(tmp_path: Path, signer: CheckpointSigner) -> None:
    spool = DurableSpool(tmp_path / "spool")
    metrics = Metrics()
    good = f"sqlite:///{tmp_path / 'audit.db'}"
    log = SqlAuditLog(create_database_engine(good), spool=spool, signer=signer, metrics=metrics)
    log.migrate()
    fill(log, 2)
    log.close()
    # the same store, but unreachable: a directory where the file should be
    broken_engine = create_database_engine(f"sqlite:///{tmp_path / 'missing' / 'nodir' / 'x.db'}")
    import shutil
    shutil.rmtree(tmp_path / "missing")
    down = SqlAuditLog(broken_engine, spool=spool, signer=signer, metrics=metrics)
    later = [make_decision(index=i) for i in range(3, 6)]
    for decision in later:
        down.record(decision)  # answered: spooled and fsynced
    assert spool.depth == 3
    assert metrics.registry.get_sample_value("gatekeeper_audit_spool_depth") == 3
    # restart on the reachable store: the spool is replayed in order at migrate()
    again = SqlAuditLog(create_database_engine(good), spool=DurableSpool(tmp_path / "spool"),
                        signer=signer, metrics=metrics)
    again.migrate()
    assert again.spool_depth == 0
    assert metrics.registry.get_sample_value("gatekeeper_audit_spool_depth") == 0
    with again.engine.connect() as connection:
        ids = connection.execute(sa.text("SELECT decision_id FROM gatekeeper_decisions ORDER BY seq")).scalars().all()
    assert [i[-1] for i in ids] == ["1", "2", "3", "4", "5"]
    assert verify_database(again.engine, signer.public_key).records == 5
    again.close()


def test_replay_is_idempotent(tmp_path: Path, signer: CheckpointSigner) -> None:
    spool = DurableSpool(tmp_path / "spool")
    decision = make_decision(index=1)
    spool.append([(decision.as_dict(), None)] * 2)  # e.g. committed, but the ack was lost
    log = SqlAuditLog(create_database_engine(f"sqlite:///{tmp_path / 'a.db'}"), spool=spool, signer=signer)
    log.migrate()
    assert verify_database(log.engine, signer.public_key).records == 1
    log.close()


def test_spool_unwritable_fails_closed_saying_why(tmp_path: Path, signer: CheckpointSigner) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    engine = create_database_engine(f"sqlite:///{tmp_path / 'gone' / 'x.db'}")
    import shutil
    shutil.rmtree(tmp_path / "gone")
    log = SqlAuditLog(engine, spool=DurableSpool(blocker / "spool"), signer=signer)
    decision = make_decision(index=1)
    with pytest.raises(StorageError) as caught:
        log.record(decision)
    assert caught.value.message == (
        f"cannot record decision {decision.decision_id}: audit store sqlite:///{tmp_path}/gone/x.db "
        f"unreachable, and the audit spool {blocker}/spool/decisions.spool.jsonl cannot be written: "
        f"Not a directory; failing closed"
    )


def test_torn_spool_tail_is_dropped(tmp_path: Path, signer: CheckpointSigner) -> None:
    spool_dir = tmp_path / "spool"
    spool = DurableSpool(spool_dir)
    spool.append([(make_decision(index=1).as_dict(), None)])
    with spool.path.open("ab") as handle:
        handle.write(b'{"decision": {"decision_id": "torn')
    reopened = DurableSpool(spool_dir)  # cuts the torn tail, so the next append starts clean
    assert reopened.depth == 1 and len(reopened.read_all()) == 1
    reopened.append([(make_decision(index=2).as_dict(), None)])
    assert [d["decision_id"][-1] for d, _ in DurableSpool(spool_dir).read_all()] == ["1", "2"]


def test_maintenance_thread_signs_on_time_and_prunes(make_log: MakeLog, signer: CheckpointSigner) -> None:
    import time as clock

    log = make_log(settings=AuditSettings(checkpoint_every=1000, checkpoint_interval_seconds=0.0,
                                          maintenance_interval_seconds=0.05, retention_days=1,
                                          retention_interval_seconds=0.0))
    fill(log, 3)  # created in November 2026 relative to BASE_TIME: long before "now"
    log.start()
    deadline = clock.monotonic() + 10
    report = None
    while clock.monotonic() < deadline:
        report = verify_database(log.engine, signer.public_key)
        if report.pruned_through:
            break
        clock.sleep(0.05)
    assert report is not None and report.pruned_through == 3 and report.records == 0


def test_cli_verify_exit_codes_name_the_record(make_log: MakeLog, database_url: str, signer: CheckpointSigner, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gatekeeper.cli.audit import audit_app

    log = make_log()
    fill(log, 5)
    public = tmp_path / "public.pem"
    from cryptography.hazmat.primitives import serialization

    public.write_bytes(signer.public_key.public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    env = {"GATEKEEPER_DATABASE_URL": database_url, "GATEKEEPER_CONFIG": ""}
    runner = CliRunner()
    ok = runner.invoke(audit_app, ["verify", "--public-key", str(public)], env=env)
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.strip() == (
        "audit trail verified: 5 records (1..5), 1 signed checkpoint, last at record 4; "
        "1 record after it is chained but not yet signed"
    )
    attack(log, ("UPDATE gatekeeper_decisions SET document = replace(document, 'CHG-1', 'CHG-2') "
                 "WHERE seq = 2", {}))
    broken = runner.invoke(audit_app, ["verify", "--public-key", str(public)], env=env)
    assert broken.exit_code == 1
    assert broken.output.strip() == (
        "error: audit verification FAILED: record 2 changed: its content does not match its hash"
    )
    unsigned = runner.invoke(audit_app, ["verify"], env=env)  # no key: chain only, and says so
    assert unsigned.exit_code == 1


def test_deleted_prefix_up_to_a_checkpoint_is_not_retention(make_log: MakeLog, signer: CheckpointSigner) -> None:
    log = make_log()
    fill(log, 6)  # checkpoint at 4, but no signed retention statement
    attack(log, ("DELETE FROM gatekeeper_decision_images WHERE decision_seq <= 4", {}),
           ("DELETE FROM gatekeeper_decisions WHERE seq <= 4", {}))
    assert failure(log, signer) == (
        "record 1 removed: the trail starts at record 5 and no signed retention checkpoint "
        "covers the records before it"
    )


def test_unexpected_write_failure_fails_closed(make_log: MakeLog, monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_log()

    def broken(*_args: object, **_kwargs: object) -> None:
        raise TypeError("bug")

    monkeypatch.setattr(log, "_append", broken)
    decision = make_decision(index=1)
    with pytest.raises(StorageError) as caught:
        log.record(decision)
    assert caught.value.message == f"cannot record decision {decision.decision_id}: internal error (TypeError)"


def test_export_streams_in_batches_and_filters_by_time(make_log: MakeLog, signer: CheckpointSigner, tmp_path: Path) -> None:
    from gatekeeper.audit.export import iter_export, plan_export, verify_export_file

    log = make_log()
    fill(log, 9)  # created BASE_TIME + 1..9 s; checkpoints at 4 and 8
    query = DecisionQuery(since=BASE_TIME + timedelta(seconds=3), until=BASE_TIME + timedelta(seconds=6))
    plan = plan_export(log, query)
    assert (plan.first_seq, plan.end_seq, plan.entries, plan.checkpoint.seq) == (3, 8, 6, 8)
    chunks = list(iter_export(log, plan, "jsonl", batch_size=2))
    assert len(chunks) == 1 + 3  # the header, then one chunk per batch of two rows
    lines = [json.loads(line) for line in "".join(chunks).splitlines()]
    assert [(line["type"], line.get("seq")) for line in lines[1:]] == [
        ("record", 3), ("record", 4), ("checkpoint", 4), ("record", 5), ("link", 6), ("link", 7),
        ("link", 8), ("checkpoint", 8)]
    path = tmp_path / "export.jsonl"
    path.write_text("".join(chunks))
    report = verify_export_file(path, signer.public_key)
    assert (report.records, report.links, report.chain.checkpoints) == (3, 3, 2)


def test_spool_stays_0600_after_replay_and_a_corrupt_line_is_quarantined(tmp_path: Path, signer: CheckpointSigner) -> None:
    import os
    import stat

    os.umask(0o022)
    spool_dir = tmp_path / "spool"
    spool = DurableSpool(spool_dir)
    spool.append([(make_decision(index=1).as_dict(), None)])
    with spool.path.open("ab") as handle:
        handle.write(b'{"not a spooled decision"}\n')
    spool = DurableSpool(spool_dir)
    spool.append([(make_decision(index=2).as_dict(), None)])
    spool.clear(0)  # rewritten as replay does
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600
    log = SqlAuditLog(create_database_engine(f"sqlite:///{tmp_path / 'a.db'}"), spool=spool,
                      signer=signer)
    log.migrate()  # replays: the corrupt line goes to the quarantine, the one behind is stored
    assert (log.spool_depth, log.spool_quarantined) == (0, 1)
    assert verify_database(log.engine, signer.public_key).records == 2
    assert stat.S_IMODE(spool.quarantine_path.stat().st_mode) == 0o600
    assert json.loads(spool.quarantine_path.read_text())["reason"] == "corrupt spool line"
    log.close()
