"""The product against its floors, in one run, so every figure is a ratio (issue 17, item 6).

Run: .venv/bin/python -m benchmarks.bench_floors [--requests 2000] [--concurrency 4]

1. **product**: warm admission reviews (a 3-container Deployment, images pinned) to
   ``/admission/validate`` of the real gatekeeper over HTTPS (embedded OPA with ``policies/``,
   SQLite audit store with fsync), as ``benchmarks/bench_admission.py --webhooks validate``;
2. the floors of :mod:`benchmarks.floors`, each alone, with the same request count and
   concurrency: a bare FastAPI route over TLS (the same review bodies), OPA alone over its unix
   socket (the policy input the product recorded for its last review), and one 4 KiB write +
   fsync.

The product runs first and is stopped before the floors start, so they never share the cores.
Printed: each figure, then the product as a fraction of each floor's throughput and as a
multiple of each floor's median latency, and of their sum (a review that did nothing but one
web round trip, one OPA decision and one fsync, one after the other). Loopback only; every loop
is bounded by its request count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_admission import (  # noqa: E402
    REPOSITORIES,
    deployment_review,
    push_images,
    run_load,
)
from benchmarks.bench_admission import running_gatekeeper as running_product  # noqa: E402
from benchmarks.common import running_registry, summarise  # noqa: E402
from benchmarks.floors import (  # noqa: E402
    fastapi_floor,
    fsync_floor,
    opa_floor,
    recorded_policy_input,
)


def line(label: str, figures: dict[str, Any]) -> None:
    print(f"{label:<30} {figures['requests']:>5} requests, {figures['errors']} errors, "
          f"p50 {figures['p50_ms']:7.3f} ms, p99 {figures['p99_ms']:7.3f} ms, "
          f"{figures['per_second']:7.0f}/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--fsyncs", type=int, default=200)
    args = parser.parse_args()
    opa = os.environ.get("GATEKEEPER_OPA_BINARY") or str(REPO / ".tools/bin/opa")
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}  concurrency "
          f"{args.concurrency}, {args.requests} requests per figure, keep-alive")
    with tempfile.TemporaryDirectory(prefix="bench-floors-") as tmp:
        directory = Path(tmp)
        (directory / "storage").mkdir()
        with running_registry(directory) as registry:
            digest = push_images(registry, 1)
            pinned = [f"{registry}/{repository}:v0@{digest}" for repository in REPOSITORIES]
            bodies = [deployment_review(uid, pinned) for uid in range(args.requests + 300)]
            with running_product(registry, directory, "real", "development") as (port, ctx, _):
                run_load(port, ctx, bodies[args.requests:], args.concurrency, "validate")
                product = run_load(port, ctx, bodies[:args.requests], args.concurrency,
                                   "validate")
        line("product (admission, HTTPS)", product)
        web = fastapi_floor(directory, bodies[:args.requests], concurrency=args.concurrency)
        line("floor: bare FastAPI, TLS", web)
        policy_input = recorded_policy_input(directory / "audit.db")
        engine = opa_floor(directory, opa, policy_input, concurrency=args.concurrency,
                           requests=args.requests)
        line("floor: OPA alone, unix socket", engine)
        source = "the product's last" if policy_input else "a golden"
        print(f"{'':<30} (input: {source} policy input)")
        fsync = summarise(fsync_floor(directory, args.fsyncs))
        print(f"{'floor: one fsync (4 KiB)':<30} {fsync.count:>5} fsyncs, p50 "
              f"{fsync.p50 * 1000:7.3f} ms, p99 {fsync.p99 * 1000:7.3f} ms, "
              f"{1 / fsync.p50:7.0f}/s (one after the other)", flush=True)

    print("product against the floors (same run):")
    for label, floor in (("bare FastAPI over TLS", web), ("OPA alone", engine)):
        print(f"  throughput: product = {product['per_second'] / floor['per_second']:6.1%} of "
              f"{label}; p50: product = {product['p50_ms'] / floor['p50_ms']:5.1f}x {label}")
    print(f"  p50: product = {product['p50_ms'] / (fsync.p50 * 1000):5.1f}x one fsync")
    floor_sum = web["p50_ms"] + engine["p50_ms"] + fsync.p50 * 1000
    print(f"  p50: product = {product['p50_ms'] / floor_sum:5.1f}x (FastAPI + OPA + fsync = "
          f"{floor_sum:.3f} ms)")


if __name__ == "__main__":
    main()
