"""The audit trail on PostgreSQL: batched appends, streamed export, verify of 1,000,000 records.

Run: GATEKEEPER_TEST_POSTGRES_URL=postgresql+psycopg://... \\
     .venv/bin/python -m benchmarks.bench_audit [--appends N] [--threads T] [--verify-records N]

Targets (2 cores): appends over 2,000 decisions/s, export over 50,000 records/s, verify of
1,000,000 records under 60 s. A fresh database is created and dropped.

* appends: T threads call ``SqlAuditLog.record`` (the path every decision takes: canonical
  JSON, digests, chain-head lock, one transaction per group-committed batch, checkpoints).
* export: ``iter_export`` over every record, JSON lines, bytes counted.
* verify: the chain is bulk-loaded with COPY (the same rows ``record`` writes, computed here
  so the load takes seconds, not minutes), then ``verify_database`` recomputes all of it:
  document digests, chain hashes, checkpoint signatures, query columns and image rows.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatekeeper.audit import AuditSettings, CheckpointSigner, SqlAuditLog, create_database_engine
from gatekeeper.audit.chain import canonical_json, record_hash, sha256_hex
from gatekeeper.audit.export import iter_export, plan_export
from gatekeeper.audit.verify import verify_database
from gatekeeper.domain import (
    Decision,
    DecisionQuery,
    EnforcementMode,
    ImageResult,
    Source,
    Ticket,
    Verdict,
    parse_digest,
    parse_image_reference,
)

DIGEST = "sha256:" + "ab" * 32
START = datetime(2026, 1, 1, tzinfo=UTC)


def decision(number: int) -> Decision:
    images = tuple(
        ImageResult(
            parse_image_reference(f"registry.example.com/payments/{name}:1.{number}@{DIGEST}"),
            parse_digest(DIGEST),
            {"signature": {"status": "verified", "bundle_sha256": "cd" * 32},
             "sbom": {"sha256": "ef" * 32, "components": 412}},
        )
        for name in ("api", "worker", "migrate")
    )
    return Decision(
        decision_id=str(uuid.uuid4()), created_at=START + timedelta(milliseconds=number),
        source=Source.PIPELINE, verdict=Verdict.ALLOW, mode=EnforcementMode.ENFORCE,
        environment="production", namespace="payments",
        ticket=Ticket("INT-1", "PLAN-1", f"CHG-{number % 1000}", None), images=images,
        violations=(), warnings=(), policy_revision="sha256:" + "12" * 32, caller="ci-bot",
        latency_ms=4.25, policy_input={"schema_version": "1", "n": number},
        context={},
    )


def bench_appends(url: str, signer: CheckpointSigner, count: int, threads: int) -> None:
    audit = SqlAuditLog(create_database_engine(url), signer=signer,
                        settings=AuditSettings(checkpoint_every=1000, batch_size=256))
    audit.migrate()
    # Every decision is built beforehand: what is measured is the trail, not the factory.
    work = [decision(i) for i in range(count)]
    per_thread = [work[i::threads] for i in range(threads)]

    def run(items: list[Decision]) -> None:
        for item in items:
            audit.record(item)

    started = time.perf_counter()
    workers = [threading.Thread(target=run, args=(part,)) for part in per_thread]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    with audit.engine.connect() as connection:
        transactions = connection.execute(sa.text(
            "SELECT count(DISTINCT xmin::text) FROM gatekeeper_decisions")).scalar()
    print(f"appends:  {count} decisions from {threads} threads in {elapsed:.2f} s = "
          f"{count / elapsed:,.0f} decisions/s ({transactions} transactions, "
          f"{count / max(1, transactions or 1):.1f} decisions per commit)   target > 2,000/s")
    audit.close()


def bench_export(url: str, signer: CheckpointSigner) -> None:
    audit = SqlAuditLog(create_database_engine(url), signer=signer)
    plan = plan_export(audit, DecisionQuery())
    started = time.perf_counter()
    size = 0
    for chunk in iter_export(audit, plan, "jsonl", batch_size=2000):
        size += len(chunk)
    elapsed = time.perf_counter() - started
    print(f"export:   {plan.entries:,} records ({size / 1e6:,.0f} MB JSON lines) "
          f"in {elapsed:.2f} s "
          f"= {plan.entries / elapsed:,.0f} records/s   target > 50,000/s")
    audit.close()


def bulk_load(url: str, signer: CheckpointSigner, count: int) -> None:
    """COPY ``count`` chained records (one image each) with a checkpoint every 1000."""
    template = decision(0).as_dict()
    template["images"] = template["images"][:1]
    policy_text = canonical_json({"schema_version": "1"}).decode()
    policy_sha = sha256_hex(policy_text.encode())
    marker = "00000000-0000-4000-8000-000000000000"
    template["decision_id"] = marker
    canonical = canonical_json(template).decode()
    audit = SqlAuditLog(create_database_engine(url), signer=signer)
    audit.migrate()
    engine = audit.engine
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        prev = "0" * 64
        checkpoints: list[tuple[int, str]] = []
        chunk = 50_000
        for start in range(1, count + 1, chunk):
            rows, images = io.StringIO(), io.StringIO()
            for seq in range(start, min(count, start + chunk - 1) + 1):
                decision_id = f"00000000-0000-4000-8000-{seq:012d}"
                document = canonical.replace(marker, decision_id)
                document_sha = sha256_hex(document.encode())
                digest = record_hash(seq, prev, document_sha, policy_sha)
                escaped = document.replace("\\", "\\\\")
                rows.write(
                    f"{seq}\t{decision_id}\t{template['created_at']}\tpipeline\tallow\tenforce\tf\t"
                    f"production\tpayments\tINT-1\tPLAN-1\tCHG-0\t\\N\t{template['policy_revision']}\t"
                    f"ci-bot\t{escaped}\t{policy_text}\t{document_sha}\t{policy_sha}\t{prev}\t{digest}\n"
                )
                image = template["images"][0]
                images.write(f"{seq}\t0\t{image['reference']}\t{image['digest']}\n")
                prev = digest
                if seq % 1000 == 0:
                    checkpoints.append((seq, digest))
            with cursor.copy(
                "COPY gatekeeper_decisions (seq, decision_id, created_at, source, verdict, mode, "
                "dry_run, environment, namespace, intent_id, plan_id, ticket_id, deploy_id, "
                "policy_revision, caller, document, policy_input, decision_sha256, "
                "policy_input_sha256, prev_hash, record_hash) FROM STDIN"
            ) as copy:
                copy.write(rows.getvalue())
            with cursor.copy(
                "COPY gatekeeper_decision_images (decision_seq, position, reference, digest) "
                "FROM STDIN"
            ) as copy:
                copy.write(images.getvalue())
        for seq, digest in checkpoints:
            checkpoint = signer.sign(seq, digest)
            cursor.execute(
                "INSERT INTO gatekeeper_audit_checkpoints (seq, record_hash, created_at, key_id, "
                "signature) VALUES (%s, %s, %s, %s, %s)",
                (seq, digest, checkpoint.created_at, checkpoint.key_id, checkpoint.signature),
            )
        cursor.execute("UPDATE gatekeeper_audit_chain_head SET seq = %s, record_hash = %s",
                       (count, prev))
        raw.commit()
    finally:
        raw.close()
    audit.close()


def bench_verify(url: str, signer: CheckpointSigner, count: int) -> None:
    started = time.perf_counter()
    bulk_load(url, signer, count)
    loaded = time.perf_counter() - started
    engine = create_database_engine(url)
    with engine.connect() as connection:
        connection.execute(sa.text("ANALYZE"))
    started = time.perf_counter()
    report = verify_database(engine, signer.public_key)
    elapsed = time.perf_counter() - started
    print(f"verify:   {report.records:,} records, {report.checkpoints:,} checkpoints in "
          f"{elapsed:.1f} s = {report.records / elapsed:,.0f} records/s   target < 60 s "
          f"(bulk load took {loaded:.0f} s)")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=os.environ.get("GATEKEEPER_TEST_POSTGRES_URL"))
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--verify-records", type=int, default=1_000_000)
    args = parser.parse_args()
    if not args.database_url:
        sys.exit("error: pass --database-url or set GATEKEEPER_TEST_POSTGRES_URL (a PostgreSQL)")
    print(f"cores: {os.cpu_count()}  database: {sa.engine.make_url(args.database_url).host}")
    admin = sa.create_engine(args.database_url, isolation_level="AUTOCOMMIT")
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    names = []
    try:
        for purpose in ("appends", "verify"):
            name = f"gk_bench_{purpose}_{uuid.uuid4().hex[:8]}"
            with admin.connect() as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
            names.append(name)
        url = sa.engine.make_url(args.database_url)
        appends_url = url.set(database=names[0]).render_as_string(hide_password=False)
        verify_url = url.set(database=names[1]).render_as_string(hide_password=False)
        bench_appends(appends_url, signer, args.appends, args.threads)
        bench_export(appends_url, signer)
        bench_verify(verify_url, signer, args.verify_records)
        bench_export(verify_url, signer)
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
