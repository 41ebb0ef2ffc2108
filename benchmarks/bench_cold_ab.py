"""Two checkouts' cold path side by side, requests alternated: a paired comparison.

Run (each TREE a checkout of this repository, e.g. ``git worktree add /tmp/old <commit>`` or
``git archive <commit> | tar -x -C /tmp/old``)::

    .venv/bin/python -m benchmarks.bench_cold_ab OLD_TREE NEW_TREE [--rounds 30] [--images 5]

Builds the ``bench_cold`` images (cosign key signature, CycloneDX and SLSA v1 attestations, by
tag) in one loopback ``docker-registry``, starts one ``gatekeeper serve`` per tree with the
cold configuration of ``bench_cold`` (every cache off), and sends each cold evaluation to both
servers, in alternating order, so both see the same machine load at the same moment: on a
shared machine a difference of a few percent is visible this way, not across two runs.
Printed per tree: p10/p25/p50 latency and the server's CPU per evaluation (the gatekeeper
process, and its children: the embedded OPA), then the median of the paired ratios NEW/OLD.
The servers run with the tree as working directory, so each imports its own package.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_cold import bench_world, evaluate  # noqa: E402
from benchmarks.common import running_gatekeeper  # noqa: E402


def cpu_seconds(pid: str) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(port: int) -> tuple[float, float]:
    """CPU seconds of the ``gatekeeper serve`` on ``port`` and of its children."""
    found = subprocess.run(["pgrep", "-f", f"gatekeeper serve --port {port}"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    pid = found.stdout.split()[0]
    children = subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True)
    return cpu_seconds(pid), sum(cpu_seconds(child) for child in children.stdout.split())


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--images", type=int, default=5)
    arguments = parser.parse_args()
    trees = [arguments.old.resolve(), arguments.new.resolve()]
    for tree in trees:
        if not (tree / "gatekeeper" / "__init__.py").is_file():
            parser.error(f"{tree} is not a checkout of the gatekeeper")
    samples: list[list[float]] = [[], []]
    with tempfile.TemporaryDirectory(prefix="bench-cold-ab-") as tmp:
        with bench_world(Path(tmp), arguments.images, cold=True) as (images, unsigned, config), \
                contextlib.ExitStack() as servers:
            ports = []
            for tree in trees:
                with working_directory(tree):  # ``python -m`` puts the cwd first on sys.path
                    ports.append(servers.enter_context(running_gatekeeper(
                        {"GATEKEEPER_CONFIG": str(config), "PYTHONPATH": str(tree)})))
            connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                           for port in ports]  # fmt: skip
            for connection in connections:  # untimed: connections, OPA, the referrer cache
                evaluate(connection, unsigned, expect="deny")
                for image in images:
                    evaluate(connection, image)
            before = [server_cpu(port) for port in ports]
            for number in range(arguments.rounds):
                for image in images:
                    for side in ((0, 1) if number % 2 == 0 else (1, 0)):
                        started = time.perf_counter()
                        evaluate(connections[side], image)
                        samples[side].append((time.perf_counter() - started) * 1000)
            after = [server_cpu(port) for port in ports]
    count = len(samples[0])
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}  "
          f"{count} cold evaluations per tree, alternated")  # fmt: skip
    for name, tree, values, (cpu0, kids0), (cpu1, kids1) in zip(
        ("old", "new"), trees, samples, before, after, strict=True
    ):
        ordered = sorted(values)
        print(f"{name} {tree}: p10 {ordered[count // 10]:.2f} ms  p25 {ordered[count // 4]:.2f} ms"
              f"  p50 {statistics.median(ordered):.2f} ms;  CPU per evaluation: gatekeeper "
              f"{(cpu1 - cpu0) / count * 1000:.2f} ms, OPA {(kids1 - kids0) / count * 1000:.2f} ms")
    paired = [new / old for old, new in zip(samples[0], samples[1], strict=True)]
    print(f"new / old, median of the paired ratios: {statistics.median(paired):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
