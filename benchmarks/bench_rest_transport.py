"""The REST transport of ``POST /v1/evaluations``: the lean path against FastAPI's route, paired.

Run::

    .venv/bin/python -m benchmarks.bench_rest_transport [--rounds 60] [--images 3] [--cold]

Builds the images of ``bench_cold`` (cosign key signature, CycloneDX and SLSA v1 attestations,
by tag) in its own loopback ``docker-registry``, serves the production app in this process
(``create_app`` under uvicorn with the options of ``gatekeeper serve``; the warm configuration
of ``bench_cold``, or with ``--cold`` every cache off) and sends every evaluation twice in a
row over one kept-alive connection: once answered by the lean path (gatekeeper/api/lean.py),
once with it switched off (FastAPI's middlewares, router and route), alternating which goes
first. Both see the same machine at the same moment, so a difference of a fraction of a
millisecond shows on a shared machine. Printed per path: p25/p50 of the client's latency and
this process's CPU per request (server and client threads), then the median of the paired
differences and ratios. Loopback only; every loop bounded.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_cold import bench_world, evaluate  # noqa: E402
from benchmarks.common import (  # noqa: E402
    serving_in_process,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=60, help="passes over the images")
    parser.add_argument("--cold", action="store_true", help="every cache off (bench_cold's "
                        "cold configuration)")
    arguments = parser.parse_args()
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}  images: "
          f"{arguments.images}, {'cold' if arguments.cold else 'warm'} configuration")
    latency: dict[str, list[float]] = {"lean": [], "framework": []}
    cpu: dict[str, list[float]] = {"lean": [], "framework": []}
    with tempfile.TemporaryDirectory(prefix="bench-rest-") as tmp:
        workdir = Path(tmp)
        with bench_world(workdir, arguments.images, cold=arguments.cold) as (images, unsigned,
                                                                           config):
            with serving_in_process(config, workdir) as (port, app):
                lean = (app._evaluation_path, app._evaluation_app)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                evaluate(conn, unsigned, expect="deny")
                for image in images:  # untimed: connections, OPA, the warm caches
                    evaluate(conn, image)
                for round_ in range(arguments.rounds):
                    for index, image in enumerate(images):
                        order = ("lean", "framework")
                        if (round_ + index) % 2:
                            order = ("framework", "lean")
                        for path in order:
                            app.install_evaluation_path(*(lean if path == "lean"
                                                          else (None, None)))
                            started, used = time.perf_counter(), time.process_time()
                            evaluate(conn, image)
                            latency[path].append(time.perf_counter() - started)
                            cpu[path].append(time.process_time() - used)
                app.install_evaluation_path(*lean)
                conn.close()
    for path in ("lean", "framework"):
        samples = sorted(latency[path])
        print(f"{path:<10} n={len(samples)}  p25={samples[len(samples) // 4] * 1000:7.2f} ms  "
              f"p50={statistics.median(samples) * 1000:7.2f} ms  CPU per request (this "
              f"process) p50={statistics.median(cpu[path]) * 1000:6.2f} ms")
    differences = [(f - n) * 1000 for n, f in zip(latency["lean"], latency["framework"],
                                                  strict=True)]
    ratios = [n / f for n, f in zip(latency["lean"], latency["framework"], strict=True)]
    saved_cpu = [(f - n) * 1000 for n, f in zip(cpu["lean"], cpu["framework"], strict=True)]
    print(f"paired (same image, back to back): framework - lean latency median "
          f"{statistics.median(differences):.3f} ms, lean/framework "
          f"{statistics.median(ratios):.3f}; CPU framework - lean median "
          f"{statistics.median(saved_cpu):.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
