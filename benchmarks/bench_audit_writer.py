"""The single audit writer: commits per second against decisions per second, and the fsync floor.

Run (SQLite in a temporary directory, the embedded default):
    .venv/bin/python -m benchmarks.bench_audit_writer [--decisions N] [--concurrency 1,8]
On PostgreSQL (a fresh database is created and dropped):
    scripts/test-servers run .venv/bin/python -m benchmarks.bench_audit_writer --postgres
Through the product (``gatekeeper serve``, POST /v1/evaluations of bench_evaluations, SQLite):
    .venv/bin/python -m benchmarks.bench_audit_writer --product

For each concurrency C, C threads (and, separately, C coroutines on one event loop through
``record_async``) record their share of N pre-built decisions through ``SqlAuditLog`` - the
path every decision takes (canonical JSON, digests, head lock, one transaction per batch,
checkpoints) - once with the default bounded wait and once with the wait disabled (0). Commits
are the writer's batches (``forge_gatekeeper_audit_batch_decisions_count``). The floor, measured
in the same run and directory: a bare ``write`` + ``fsync`` of 1 KB, one per commit.

Target (issue 17.3): at concurrency 8, commits/s <= decisions/s / 5.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.bench_audit import decision
from gatekeeper.audit import AuditSettings, CheckpointSigner, SqlAuditLog, create_database_engine
from gatekeeper.domain import Decision
from gatekeeper.metrics import Metrics

DEFAULT_WAIT = AuditSettings().batch_wait_seconds


def fsync_floor(directory: Path, rounds: int) -> float:
    """Bare ``write`` + ``fsync`` calls per second in ``directory`` (the floor of a commit)."""
    path = directory / "fsync-floor.bin"
    block = os.urandom(1024)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        started = time.perf_counter()
        for _ in range(rounds):
            os.write(descriptor, block)
            os.fsync(descriptor)
        return rounds / (time.perf_counter() - started)
    finally:
        os.close(descriptor)
        path.unlink()


@contextmanager
def fresh_database(postgres: str | None, directory: Path) -> Iterator[str]:
    if postgres is None:
        yield f"sqlite:///{directory / f'writer-{uuid.uuid4().hex[:8]}.db'}"
        return
    name = f"gk_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(postgres).set(database=name).render_as_string(
            hide_password=False
        )
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def run_threads(audit: SqlAuditLog, parts: list[list[Decision]]) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def run(items: list[Decision]) -> None:
        mine = []
        for item in items:
            started = time.perf_counter()
            audit.record(item)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=run, args=(part,)) for part in parts]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies


def run_coroutines(audit: SqlAuditLog, parts: list[list[Decision]]) -> list[float]:
    latencies: list[float] = []

    async def run(items: list[Decision]) -> None:
        for item in items:
            started = time.perf_counter()
            await audit.record_async(item)
            latencies.append(time.perf_counter() - started)

    async def main() -> None:
        await asyncio.gather(*(run(part) for part in parts))

    asyncio.run(main())
    return latencies


def measure(url: str, signer: CheckpointSigner, *, count: int, concurrency: int, wait: float,
            mode: str) -> tuple[float, float, float, float]:
    """(decisions/s, commits/s, p50 ms, p99 ms) of one run."""
    metrics = Metrics()
    audit = SqlAuditLog(
        create_database_engine(url), signer=signer, metrics=metrics,
        settings=AuditSettings(checkpoint_every=1000, batch_wait_seconds=wait),
    )
    audit.migrate()
    work = [decision(i) for i in range(count)]
    parts = [work[i::concurrency] for i in range(concurrency)]
    audit.record(decision(count))  # connection pool and writer thread warm
    before = metrics.registry.get_sample_value(
        "forge_gatekeeper_audit_batch_decisions_count") or 0.0
    started = time.perf_counter()
    latencies = (run_threads if mode == "threads" else run_coroutines)(audit, parts)
    elapsed = time.perf_counter() - started
    commits = (metrics.registry.get_sample_value(
        "forge_gatekeeper_audit_batch_decisions_count") or 0.0) - before
    audit.close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return count / elapsed, commits / elapsed, statistics.median(latencies) * 1e3, p99 * 1e3


def product(levels: list[int], requests: int) -> None:
    """Decisions per commit of a real ``gatekeeper serve`` (from its /metrics), per wait."""
    import re
    import urllib.request

    from benchmarks.bench_evaluations import BODY
    from benchmarks.common import free_port, load, running_gatekeeper

    def scrape(port: int) -> tuple[float, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        found = dict(re.findall(
            r"^forge_gatekeeper_audit_batch_decisions_(count|sum) (\S+)$", text, re.M))
        return float(found["count"]), float(found["sum"])

    for wait in (DEFAULT_WAIT, 0.0):
        metrics_port = free_port()
        with running_gatekeeper({"GATEKEEPER_METRICS_PORT": str(metrics_port),
                                 "GATEKEEPER_AUDIT_BATCH_WAIT_SECONDS": str(wait)}) as port:
            load(port, "/v1/evaluations", BODY, concurrency=4, requests=200)  # warm-up
            for concurrency in levels:
                commits_before, before = scrape(metrics_port)
                figures = load(port, "/v1/evaluations", BODY, concurrency=concurrency,
                               requests=requests)
                commits_after, after = scrape(metrics_port)
                commits, decisions = commits_after - commits_before, after - before
                print(f"product    {concurrency:>3} {wait * 1e3:>7g} "
                      f"{figures['per_second']:>12,.0f} "
                      f"{figures['per_second'] * commits / max(decisions, 1):>10,.0f} "
                      f"{decisions / max(commits, 1):>10.1f} {commits / max(decisions, 1):>17.3f} "
                      f"{figures['p50_ms']:>7.2f} {figures['p99_ms']:>7.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=800)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--product", action="store_true",
                        help="measure a real gatekeeper serve (POST /v1/evaluations) instead")
    parser.add_argument("--postgres", action="store_true",
                        help="use GATEKEEPER_TEST_POSTGRES_URL instead of SQLite")
    args = parser.parse_args()
    postgres = os.environ.get("GATEKEEPER_TEST_POSTGRES_URL") if args.postgres else None
    if args.postgres and not postgres:
        print("--postgres needs GATEKEEPER_TEST_POSTGRES_URL (scripts/test-servers run ...)",
              file=sys.stderr)
        return 2
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    levels = [int(level) for level in args.concurrency.split(",")]
    if args.product:
        print(f"{'mode':<10} {'C':>3} {'wait ms':>7} {'decisions/s':>12} {'commits/s':>10} "
              f"{'per commit':>10} {'commits/decisions':>17} {'p50 ms':>7} {'p99 ms':>7}")
        product(levels, args.decisions)
        return 0
    with tempfile.TemporaryDirectory(prefix="gk-bench-writer-") as tmp:
        directory = Path(tmp)
        floor = fsync_floor(directory, 200)
        print(f"store: {'PostgreSQL' if postgres else 'SQLite (WAL, synchronous=FULL)'}; "
              f"{args.decisions} decisions per run; default wait {DEFAULT_WAIT * 1e3:g} ms")
        print(f"floor: bare write+fsync of 1 KB in the same directory: {floor:,.0f} fsyncs/s "
              f"({1e3 / floor:.2f} ms each)")
        print(f"{'mode':<10} {'C':>3} {'wait ms':>7} {'decisions/s':>12} {'commits/s':>10} "
              f"{'per commit':>10} {'commits/decisions':>17} {'p50 ms':>7} {'p99 ms':>7}")
        for concurrency in levels:
            for mode in ("threads", "asyncio"):
                for wait in (DEFAULT_WAIT, 0.0):
                    with fresh_database(postgres, directory) as url:
                        rate, commits, p50, p99 = measure(
                            url, signer, count=args.decisions, concurrency=concurrency,
                            wait=wait, mode=mode,
                        )
                    print(f"{mode:<10} {concurrency:>3} {wait * 1e3:>7g} {rate:>12,.0f} "
                          f"{commits:>10,.0f} {rate / max(commits, 1e-9):>10.1f} "
                          f"{commits / rate:>17.3f} {p50:>7.2f} {p99:>7.2f}")
        print("target: at C=8, commits/decisions <= 0.200 (one fsync per five decisions or "
              "fewer); decisions/s / fsync floor shows how far batching lifts the fsync limit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
