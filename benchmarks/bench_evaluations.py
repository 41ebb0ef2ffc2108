"""POST /v1/evaluations, 3 images, policy + audit path (embedded OPA, SQLite with fsync).

Run: .venv/bin/python -m benchmarks.bench_evaluations [--requests N]
Targets (2 cores): p99 under 10 ms, over 300 evaluations/s.
"""

from __future__ import annotations

import argparse
import os

from benchmarks.common import load, running_gatekeeper

DIGEST = "sha256:" + "ab" * 32
BODY: dict[str, object] = {
    "images": [
        f"registry.example.com/payments/api:1.4@{DIGEST}",
        f"registry.example.com/payments/worker:1.4@{DIGEST}",
        f"registry.example.com/payments/migrate:1.4@{DIGEST}",
    ],
    "environment": "production",
    "namespace": "payments",
    "ticket": {"intent_id": "I-1", "plan_id": "P-1", "ticket_id": "T-1", "deploy_id": "D-1"},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}  request: 3 images, environment production")
    with running_gatekeeper() as port:
        load(port, "/v1/evaluations", BODY, concurrency=4, requests=400)  # warm-up
        for concurrency in (1, 4, 8):
            figures = load(port, "/v1/evaluations", BODY, concurrency=concurrency,
                           requests=args.requests)
            print(
                f"concurrency {concurrency:>2}: {figures['requests']} requests, "
                f"{figures['errors']} errors, p50 {figures['p50_ms']:.2f} ms, "
                f"p99 {figures['p99_ms']:.2f} ms, {figures['per_second']:.0f} evaluations/s"
            )


if __name__ == "__main__":
    main()
