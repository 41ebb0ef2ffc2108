"""Content-addressed evidence in the audit trail (issue 17.1), on real SQLite and PostgreSQL:
each document stored once and shared, covered by the chain, verified by re-hashing, exported
once, replayed, and kept exactly as long as a retained decision references it."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gatekeeper.audit import ChainBrokenError, CheckpointSigner, SqlAuditLog, verify_database
from gatekeeper.audit.export import iter_export, plan_export, verify_export_file
from gatekeeper.audit.schema import decision_evidence, decisions, evidence_documents
from gatekeeper.domain import Decision, DecisionQuery, ImageResult
from gatekeeper.domain.evidence_documents import EvidenceExternaliser
from gatekeeper.policy.bundle import PolicyFiles
from gatekeeper.policy.replay import SqlDecisionHistory, replay_decisions
from tests.integration import test_audit_trail as trail
from tests.integration.test_audit_trail import MakeLog
from tests.unit.audit.factory import BASE_TIME, make_decision

REPO = Path(__file__).resolve().parents[2]
# the trail's fixtures: each test runs on SQLite and on PostgreSQL
database_url, signer, make_log, attack = (
    trail.database_url, trail.signer, trail.make_log, trail.attack)


def components(count: int, *, extra: str | None = None) -> list[dict[str, Any]]:
    listed = [{"purl": f"pkg:npm/pkg-{i}@1.0.{i % 7}", "name": f"pkg-{i}", "version": f"1.0.{i % 7}",
               "type": "library", "licenses": ["MIT"], "license_ids": ["MIT"], "hashes": {}}
              for i in range(count)]
    if extra is not None:
        listed.append({"purl": extra, "name": "x", "version": "1", "type": "library",
                       "licenses": [], "license_ids": [], "hashes": {}})
    return listed


def with_sbom(decision: Decision, listed: list[dict[str, Any]]) -> Decision:
    """``decision`` as the service records it when its image carries an attested SBOM."""
    image = decision.images[0]
    sbom = {"present": True, "state": "bound", "reason": "bound by attestation",
            "document_count": 1, "documents_truncated": False, "documents": [{
                "source": "attestation", "authority": "release", "supplied_by": None,
                "state": "bound", "bound": True, "valid": True, "present": True,
                "reason": "bound by attestation", "format": "cyclonedx", "spec_version": "1.6",
                "sha256": "00" * 32, "origin": "attestation", "truncated": False,
                "binding": {"method": "attestation", "named_digests": [str(image.digest)]},
                "component_count": len(listed), "components": listed}]}
    policy_input = {
        "schema_version": "4", "source": "pipeline", "environment": "production",
        "namespace": "payments", "mode": "enforce", "dry_run": False,
        "evaluated_at": decision.created_at.isoformat().replace("+00:00", "Z"),
        "ticket": decision.ticket.as_dict(), "context": {}, "review": None,
        "images": [{"reference": image.reference.original, "registry": "registry.example.com",
                    "repository": "payments/api", "tag": image.reference.tag,
                    "digest": str(image.digest), "evidence": {"sbom": sbom}}],
    }
    externalised = EvidenceExternaliser().externalise(policy_input)
    compact = externalised.policy_input
    return dataclasses.replace(
        decision,
        images=(ImageResult(image.reference, image.digest, compact["images"][0]["evidence"]),),
        policy_input=compact,
        evidence_documents=externalised.documents,
    )


def stored(log: SqlAuditLog) -> dict[str, Any]:
    with log.engine.connect() as connection:
        docs = connection.execute(
            sa.select(evidence_documents.c.sha256, evidence_documents.c.size_bytes)).all()
        links = connection.execute(
            sa.select(decision_evidence.c.decision_seq, decision_evidence.c.sha256)
            .order_by(decision_evidence.c.decision_seq)).all()
        rows = connection.execute(
            sa.select(decisions.c.seq, sa.func.length(decisions.c.document)
                      + sa.func.coalesce(sa.func.length(decisions.c.policy_input), 0))).all()
    return {"documents": {d.sha256: d.size_bytes for d in docs},
            "links": [(int(seq), digest) for seq, digest in links],
            "row_bytes": [int(size) for _, size in rows]}


def test_a_document_is_stored_once_and_shared_by_every_decision(
    make_log: MakeLog, signer: CheckpointSigner
) -> None:
    log = make_log()
    listed = components(1000)
    first = with_sbom(make_decision(index=1), listed)
    second = with_sbom(make_decision(index=2), listed)
    [digest] = first.evidence_documents
    log.record(first)
    log.record(second)

    state = stored(log)
    assert list(state["documents"]) == [digest]
    assert state["documents"][digest] > 100_000  # the 1,000 components, once
    assert state["links"] == [(1, digest), (2, digest)]
    assert all(size < 8192 for size in state["row_bytes"]), state["row_bytes"]
    assert verify_database(log.engine, signer.public_key).records == 2
    got = log.get(first.decision_id)
    assert got.policy_input == first.policy_input  # the references, as the policy got them


def test_old_rows_with_the_full_input_inline_stay_readable_and_verifiable(
    make_log: MakeLog, signer: CheckpointSigner
) -> None:
    log = make_log()
    inline = with_sbom(make_decision(index=1), components(3))  # under the threshold: inline
    assert inline.evidence_documents == {}
    log.record(inline)
    log.record(with_sbom(make_decision(index=2), components(500)))
    assert log.get(inline.decision_id).policy_input == inline.policy_input
    assert verify_database(log.engine, signer.public_key).records == 2


def test_a_changed_document_is_named_by_verify(make_log: MakeLog, signer: CheckpointSigner) -> None:
    log = make_log()
    decision = with_sbom(make_decision(index=1), components(200))
    [digest] = decision.evidence_documents
    log.record(decision)
    forged = json.dumps(components(199), sort_keys=True, separators=(",", ":"))
    attack(log, ("UPDATE gatekeeper_evidence_documents SET document = :d", {"d": forged}))
    with pytest.raises(ChainBrokenError) as caught:
        verify_database(log.engine, signer.public_key)
    assert caught.value.message == (
        f"record 1: evidence document {digest} changed: its content does not match its hash")


def test_a_removed_document_or_link_is_named_by_verify(
    make_log: MakeLog, signer: CheckpointSigner
) -> None:
    log = make_log()
    decision = with_sbom(make_decision(index=1), components(200))
    [digest] = decision.evidence_documents
    log.record(decision)
    attack(log, ("DELETE FROM gatekeeper_decision_evidence", {}))
    with pytest.raises(ChainBrokenError) as caught:
        verify_database(log.engine, signer.public_key)
    assert caught.value.message == ("record 1 changed: its evidence links differ from the "
                                    "evidence documents its policy input references")
    attack(log, ("INSERT INTO gatekeeper_decision_evidence VALUES (1, :d)", {"d": digest}),
           ("DELETE FROM gatekeeper_evidence_documents", {}))
    with pytest.raises(ChainBrokenError) as caught:
        verify_database(log.engine, signer.public_key)
    assert caught.value.message == (
        f"record 1: evidence document {digest} is missing from the audit store")


def test_documents_are_append_only(make_log: MakeLog) -> None:
    log = make_log()
    log.record(with_sbom(make_decision(index=1), components(200)))
    for statement in ("UPDATE gatekeeper_evidence_documents SET size_bytes = 1",
                      "DELETE FROM gatekeeper_evidence_documents",
                      "DELETE FROM gatekeeper_decision_evidence"):
        with pytest.raises(sa.exc.DatabaseError) as caught, log.engine.begin() as connection:
            connection.execute(sa.text(statement))
        assert "gatekeeper audit records are append-only" in str(caught.value)


def test_retention_keeps_every_referenced_document_and_drops_the_others(
    make_log: MakeLog, signer: CheckpointSigner
) -> None:
    log = make_log()  # a checkpoint every 4 records
    old, shared, young = components(300), components(301), components(302)
    made = [with_sbom(make_decision(index=1), old), with_sbom(make_decision(index=2), old),
            with_sbom(make_decision(index=3), shared), with_sbom(make_decision(index=4), shared),
            with_sbom(make_decision(index=5, created_at=BASE_TIME + timedelta(days=30)), shared),
            with_sbom(make_decision(index=6, created_at=BASE_TIME + timedelta(days=30)), young)]
    for decision in made:
        log.record(decision)
    [old_digest], [shared_digest], [young_digest] = (
        made[0].evidence_documents, made[2].evidence_documents, made[5].evidence_documents)

    pruned = log.prune(timedelta(days=10), now=BASE_TIME + timedelta(days=31))

    assert pruned == 4
    state = stored(log)
    assert set(state["documents"]) == {shared_digest, young_digest}
    assert old_digest not in state["documents"]
    assert state["links"] == [(5, shared_digest), (6, young_digest)]
    assert verify_database(log.engine, signer.public_key).records == 2


def test_export_carries_each_document_once_and_verifies_offline(
    make_log: MakeLog, signer: CheckpointSigner, tmp_path: Path
) -> None:
    log = make_log()
    listed = components(400, extra="pkg:npm/event-stream@3.3.6")
    for index in range(1, 5):
        log.record(with_sbom(make_decision(index=index), listed))
    [digest] = with_sbom(make_decision(index=9), listed).evidence_documents
    plan = plan_export(log, DecisionQuery())
    text = "".join(iter_export(log, plan, "jsonl", batch_size=2))
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["format"] == "gatekeeper-audit-export/v2"
    assert [(line["type"], line.get("seq") or line.get("sha256")) for line in lines[1:]] == [
        ("evidence", digest), ("record", 1), ("record", 2), ("record", 3), ("record", 4),
        ("checkpoint", 4)]
    assert lines[1]["document"] == listed
    path = tmp_path / "export.jsonl"
    path.write_text(text)
    report = verify_export_file(path, signer.public_key)
    assert report.evidence_documents == 1
    assert report.summary().startswith(
        "export verified: 4 records and 0 chain links (1..4), 1 evidence document, ")

    path.write_text(text.replace("pkg:npm/event-stream@3.3.6", "pkg:npm/left-pad@1.3.0", 1))
    with pytest.raises(ChainBrokenError) as caught:
        verify_export_file(path, signer.public_key)
    assert caught.value.user_message() == (
        f"export verification FAILED: {path} line 2: evidence document {digest} changed: its "
        "content does not match its hash")

    path.write_text("".join(line + "\n" for line in text.splitlines() if '"type":"evidence"' not in line))
    with pytest.raises(ChainBrokenError) as caught:
        verify_export_file(path, signer.public_key)
    assert caught.value.message == (
        f"record 1 references evidence document {digest}, which the export does not carry "
        "before it")

    csv_path = tmp_path / "export.csv"
    csv_path.write_text("".join(iter_export(log, plan, "csv")))
    assert verify_export_file(csv_path, signer.public_key).evidence_documents == 1


def test_replay_rebuilds_the_exact_input_from_the_stored_documents(
    make_log: MakeLog, opa_binary: str, tmp_path: Path
) -> None:
    log = make_log()
    listed = components(600, extra="pkg:npm/event-stream@3.3.6")
    recorded = with_sbom(make_decision(index=1), listed)
    log.record(recorded)
    [history] = list(SqlDecisionHistory(log.engine).decisions(None, None))
    assert history.policy_input == recorded.policy_input
    assert history.evidence == recorded.evidence_documents

    policies = tmp_path / "policies"
    policies.mkdir()
    for source in (REPO / "policies").iterdir():
        (policies / source.name).write_bytes(source.read_bytes())
    data = json.loads((policies / "data.json").read_text())
    data["gatekeeper"]["config"]["sbom"]["banned_components"] = [
        {"purl": "pkg:npm/event-stream@*", "reason": "malicious release"}]
    (policies / "data.json").write_text(json.dumps(data))
    report = replay_decisions(PolicyFiles.from_directory(policies),
                              SqlDecisionHistory(log.engine).decisions(None, None),
                              opa_binary=opa_binary)
    [change] = report.changes
    assert [v.message for v in change.violations_added if v.policy == "sbom"] == [
        "banned component pkg:npm/event-stream@3.3.6: malicious release "
        "(listed by attestation by release)"]


def test_a_spooled_decision_carries_its_documents_into_the_store(
    tmp_path: Path, signer: CheckpointSigner
) -> None:
    from gatekeeper.audit import DurableSpool, SqlAuditLog, create_database_engine

    spool = DurableSpool(tmp_path / "spool")
    broken = create_database_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    down = SqlAuditLog(broken, spool=spool, signer=signer)
    decision = with_sbom(make_decision(index=1), components(300))
    [digest] = decision.evidence_documents
    down.record(decision)  # the store is unreachable: answered from the spool
    down.close()
    assert spool.depth == 1
    spool.append([(make_decision(index=2).as_dict(), None)])  # a line of an older version

    log = SqlAuditLog(create_database_engine(f"sqlite:///{tmp_path / 'audit.db'}"),
                      spool=DurableSpool(tmp_path / "spool"), signer=signer)
    log.migrate()  # replays the spool
    try:
        assert log.spool_depth == 0
        assert list(stored(log)["documents"]) == [digest]
        assert stored(log)["links"] == [(1, digest)]
        assert verify_database(log.engine, signer.public_key).records == 2
    finally:
        log.close()
