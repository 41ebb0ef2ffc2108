"""Where one cold ``POST /v1/evaluations`` spends its time: a timeline of its steps.

Run::

    .venv/bin/python -m benchmarks.profile_cold [--images 5] [--rounds 4] [--timeline 1]

Builds the images of ``bench_cold`` (cosign key signature, CycloneDX and SLSA v1 attestations,
by tag) in its own loopback ``docker-registry``, serves the production app in this process
(``create_app`` under uvicorn, every cache off as in ``bench_cold``), and wraps the steps of an
evaluation with ``time.perf_counter`` (thread, start, end): the route, the prefilter, digest
resolution, each registry round trip, the discovery rounds, the signature verification, each
collector and source, the policy query, the audit write. Printed: the median per step over the
timed evaluations (wall time of the step; steps on other threads overlap), the client's
latency beside the service's, and the timeline of the median evaluation (one line per step,
by thread, with its offset from the request's start).

A measurement aid, not a benchmark with a target: the wrappers cost a few microseconds each.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_cold import bench_world, evaluate  # noqa: E402
from benchmarks.common import (  # noqa: E402
    serving_in_process,
)


@dataclass(frozen=True, slots=True)
class Event:
    label: str
    thread: str
    start: float
    end: float
    cpu: float  # CPU seconds of the thread during the step


_EVENTS: list[Event] = []
_LOCK = threading.Lock()


def _record(label: str, start: float, end: float, cpu: float) -> None:
    event = Event(label, threading.current_thread().name, start, end, cpu)
    with _LOCK:
        _EVENTS.append(event)


def wrap(owner: Any, name: str, label: str | Callable[..., str]) -> None:
    """Replace ``owner.name`` by a timed call (the label may depend on the arguments)."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            text = label(*args, **kwargs) if callable(label) else label
            _record(text, started, time.perf_counter(), time.thread_time() - cpu)

    setattr(owner, name, timed)


def _request_label(_self: Any, method: str, _registry: str, path: str, **_: Any) -> str:
    if "/blobs/" in path:
        kind = "blob"
    elif "/referrers/" in path:
        kind = "referrers"
    else:
        target = path.rsplit("/", 1)[-1]
        kind = ("manifest " + ("." + target.rsplit(".", 1)[-1] if "." in target
                               and target.startswith("sha256-") else
                               "sha256-tag" if target.startswith("sha256-") else
                               "digest" if target.startswith("sha256:") else "tag"))
    return f"registry {method} {kind}"


def instrument() -> None:
    """Wrap the steps of an evaluation (imports here: the wrappers must precede the app)."""
    from gatekeeper import bridges
    from gatekeeper.audit import writer
    from gatekeeper.evaluation import gathering, recording
    from gatekeeper.policy import opa
    from gatekeeper.registry import client, session
    from gatekeeper.sbom import collector as sbom_collector
    from gatekeeper.service import EvaluationService
    from gatekeeper.verify import collector as signature_collector
    from gatekeeper.verify import cosign, discovery
    from gatekeeper.vex import collector as vex_collector

    wrap(EvaluationService, "evaluate", "service.evaluate")
    wrap(gathering.Gathering, "_prefilter_violations", "prefilter (OPA)")
    wrap(gathering.Gathering, "_gather", "gather image")
    wrap(gathering.Gathering, "_input", "policy input + externalise")
    wrap(client.OciRegistryClient, "resolve", "resolve digest")
    wrap(session.RegistrySession, "_request", _request_label)
    wrap(discovery, "find_material", "discovery (find_material)")
    wrap(signature_collector, "find_material", "discovery (find_material)")
    wrap(cosign.CosignVerifier, "verify", "cosign verify (authority)")
    wrap(signature_collector.SignatureEvidenceCollector, "collect", "collector signatures")
    wrap(sbom_collector.SbomEvidenceCollector, "collect", "collector sbom")
    wrap(sbom_collector.SbomEvidenceCollector, "_normalised", "sbom parse+validate+normalise")
    wrap(sbom_collector.StoredSbomSource, "find", "sbom source upload (DB)")
    wrap(bridges.AttestedSbomSource, "find", "sbom source attestation")
    wrap(bridges.ReferrerSbomSource, "find", "sbom source referrer")
    wrap(bridges.AttestedVexSource, "find", "vex source attestation")
    wrap(vex_collector.StoredVexSource, "find", "vex source upload (DB)")
    wrap(vex_collector.VexEvidenceCollector, "collect", "collector vex")
    wrap(opa.OpaPolicyEngine, "evaluate", "policy query (OPA)")
    wrap(recording.Recording, "_record", "audit write (durable)")
    wrap(writer.WriterMixin, "record", "audit record (queue + commit)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--timeline", type=int, default=1, help="timelines to print")
    arguments = parser.parse_args()
    instrument()
    with tempfile.TemporaryDirectory(prefix="profile-cold-") as tmp:
        workdir = Path(tmp)
        with bench_world(workdir, arguments.images, cold=True) as (images, unsigned, config):
            with serving_in_process(config, workdir) as (port, _app):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                evaluate(conn, unsigned, expect="deny")
                for image in images:
                    evaluate(conn, image)
                windows: list[tuple[float, float]] = []
                cpu_started = time.process_time()
                for _ in range(arguments.rounds):
                    for image in images:
                        started = time.perf_counter()
                        evaluate(conn, image)
                        windows.append((started, time.perf_counter()))
                cpu_used = (time.process_time() - cpu_started) / len(windows)
                conn.close()
    report(windows, arguments.timeline, cpu_used)
    return 0


def report(windows: list[tuple[float, float]], timelines: int, cpu_per_evaluation: float) -> None:
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, list[int]] = defaultdict(list)
    evaluations: list[tuple[float, list[Event], float]] = []
    for start, end in windows:
        events = sorted((e for e in _EVENTS if start <= e.start and e.end <= end),
                        key=lambda e: e.start)
        totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
        for event in events:
            total = totals[event.label]
            total[0] += event.end - event.start
            total[1] += event.cpu
            total[2] += 1
        for label, (seconds, used, number) in totals.items():
            wall[label].append(seconds * 1000)
            cpu[label].append(used * 1000)
            counts[label].append(int(number))
        evaluations.append((end - start, events, start))
    client = [seconds * 1000 for seconds, _, _ in evaluations]
    print(f"{len(windows)} cold evaluations; client latency median "
          f"{statistics.median(client):.2f} ms (min {min(client):.2f}); this process's CPU per "
          f"evaluation (server and client threads) {cpu_per_evaluation * 1000:.2f} ms")
    print(f"{'step (per evaluation; steps on other threads overlap)':<52} {'wall p50':>9} "
          f"{'wall min':>9} {'CPU p50':>8} {'calls':>6}")
    for label in sorted(wall, key=lambda label: -statistics.median(wall[label])):
        print(f"  {label:<50} {statistics.median(wall[label]):>9.2f} {min(wall[label]):>9.2f} "
              f"{statistics.median(cpu[label]):>8.2f} {statistics.median(counts[label]):>6.0f}")
    ranked = sorted(evaluations, key=lambda item: item[0])
    for seconds, events, start in ranked[len(ranked) // 2: len(ranked) // 2 + timelines]:
        print(f"\ntimeline of a median evaluation ({seconds * 1000:.2f} ms at the client; "
              "ms from the request's start, CPU ms of the step):")
        names: dict[str, str] = {}
        for event in events:
            names.setdefault(event.thread, f"T{len(names)}")
        for event in events:
            print(f"  {(event.start - start) * 1000:7.2f} -> {(event.end - start) * 1000:7.2f}"
                  f"  cpu {event.cpu * 1000:5.2f}  {names[event.thread]:<4} {event.label}")
        print("  threads: " + ", ".join(f"{short}={name}" for name, short in names.items()))


if __name__ == "__main__":
    raise SystemExit(main())
