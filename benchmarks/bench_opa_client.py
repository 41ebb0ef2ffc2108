"""The blocking OPA client alone: the lean kept-alive pool against the ``httpx.Client``.

Run::

    .venv/bin/python -m benchmarks.bench_opa_client [--queries 400] [--rounds 3]

Starts the embedded OPA on the shipped policies (``EmbeddedOpa``, its unix socket) and asks
the two queries of a ``POST /v1/evaluations`` (``data.gatekeeper.main.prefilter`` and
``data.gatekeeper.main.decision``) on the golden input ``pipeline_production_pinned``, through
two engines on the same OPA in alternating rounds: the engine as wired (the lean
``OpaConnectionPool``) and one whose queries go through its ``httpx.Client`` (the path before
it). Printed per path and query: wall time per query (p50/p90/p99) and this thread's CPU per
query (``time.thread_time``: what the query costs the gatekeeper, without OPA's own CPU), and
the ratios. Answers are compared first: the two paths must agree.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import ratio, report  # noqa: E402
from gatekeeper.policy import EmbeddedOpa, OpaPolicyEngine  # noqa: E402


def _input() -> dict[str, Any]:
    path = REPO / "rego-tests/golden/pipeline_production_pinned/data.json"
    document: dict[str, Any] = json.loads(path.read_text())
    return document.get("input", document)  # type: ignore[no-any-return]


def _measure(step: Callable[[], object], queries: int) -> tuple[list[float], float]:
    """Wall seconds of each of ``queries`` calls, and the thread's CPU seconds per call."""
    samples: list[float] = []
    cpu = time.thread_time()
    for _ in range(queries):
        started = time.perf_counter()
        step()
        samples.append(time.perf_counter() - started)
    return samples, (time.thread_time() - cpu) / queries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=400, help="queries per path and round")
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    policy_input = _input()
    with tempfile.TemporaryDirectory(prefix="bench-opa-client-") as tmp:
        policies = Path(tmp) / "policies"
        shutil.copytree(REPO / "policies", policies)
        opa = EmbeddedOpa(opa_binary=str(REPO / ".tools/bin/opa"), policy_dir=policies)
        opa.start()
        try:
            lean = opa.engine
            old = OpaPolicyEngine(opa.engine._client, describe="embedded OPA",
                                  local_revision=opa.served_revision.current)
            assert lean.evaluate(policy_input) == old.evaluate(policy_input)
            assert lean.prefilter(policy_input) == old.prefilter(policy_input)
            paths = {"lean pool": lean, "httpx": old}
            wall: dict[str, list[float]] = {}
            cpu: dict[str, list[float]] = {}
            for _ in range(arguments.rounds):
                for name, engine in paths.items():
                    for query, step in (("prefilter", lambda e=engine: e.prefilter(policy_input)),
                                        ("decision", lambda e=engine: e.evaluate(policy_input))):
                        samples, per_query = _measure(step, arguments.queries)
                        wall.setdefault(f"{name} {query}", []).extend(samples)
                        cpu.setdefault(f"{name} {query}", []).append(per_query)
        finally:
            opa.stop()
    medians: dict[str, float] = {}
    for label in wall:
        medians[label] = report(label, wall[label], width=22)
        best = min(cpu[label])
        print(f"{'':<22} CPU of this thread per query: best round {best * 1000:.3f} ms, "
              f"rounds {', '.join(f'{c * 1000:.3f}' for c in cpu[label])} ms")
    print("ratios (httpx / lean pool, same run):")
    for query in ("prefilter", "decision"):
        old_label, new_label = f"httpx {query}", f"lean pool {query}"
        print(f"  {query:<10} wall p50 {ratio(medians[old_label], medians[new_label])}"
              f"   CPU {ratio(min(cpu[old_label]), min(cpu[new_label]))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
