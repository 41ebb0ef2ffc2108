"""The cold path against its peer: one signed and attested image, four ways, in one run.

Run (the peer is built by ``scripts/install-tools --bench``)::

    .venv/bin/python -m benchmarks.bench_cold [--images 5] [--rounds 4] [--process-runs 10]

Starts its own loopback ``docker-registry`` (with its access log, to count requests), pushes
``--images`` images, signs each with ``cosign sign --key`` and attests a CycloneDX SBOM and SLSA
v1 provenance with the same key (so each ``.att`` holds two layers), then times, by tag:

* **gatekeeper cold**: ``POST /v1/evaluations`` (environment production) on a ``gatekeeper
  serve`` whose caches are off (``signatures.cache_ttl_seconds`` and
  ``negative_cache_ttl_seconds`` 0, ``EVIDENCE_CACHE_TTL_SECONDS`` 0), one request at a time;
* **gatekeeper warm**: the same requests on a second ``gatekeeper serve`` with the default
  caches, after one pass that filled them;
* **gatekeeper verify**: the command as a process (``python -m gatekeeper verify IMAGE``), which
  includes the interpreter's start and the imports;
* **policy-controller tester**: sigstore policy-controller's ``tester`` (a one-shot Go process)
  with equivalent ClusterImagePolicies: a signature by the same key, and both attestation
  types.

and, first, the floor those server paths stand on (:mod:`benchmarks.registry_floor`):

* **registry alone**: the same registry requests a cold evaluation makes, by a minimal client
  in the most parallel order the protocol allows, so ``cold - floor`` is what the gatekeeper
  adds; with the registry's CPU per lookup (Debian's ``docker-registry`` spends milliseconds
  per blob GET), and, per server path, the CPU the registry and the gatekeeper (with its OPA)
  spent per evaluation: their sum over the cores is the machine's floor for one cold
  evaluation.

Every answer is checked (allow / exit 0), and an unsigned image is refused by each of them
once, so no path is timed that does not verify. Printed: p50/p90/p99 per path (for the
processes also their CPU time, which a busy machine inflates less than wall time), the registry
requests each makes (counted in the registry's access log, by User-Agent) by kind, and the
ratios. Targets (issue 18, 2 cores): cold p50 <= 15 ms with <= 7 registry requests, at least
3x faster than the tester; ``gatekeeper verify`` <= 0.3 s. Loopback only; every loop bounded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    AccessLog,
    children_cpu_seconds,
    describe_requests,
    post_json,
    ratio,
    report,
    run_process,
    running_gatekeeper,
    running_registry,
    time_process,
    timed,
)
from benchmarks.registry_floor import (  # noqa: E402
    FloorClient,
    pid_with_argument,
    process_cpu_seconds,
    tree_cpu_seconds,
)
from tests.integration.cosign_fixtures import (  # noqa: E402
    CYCLONEDX_PREDICATE,
    KeyPair,
    cosign_attest,
    cosign_sign,
    generate_key_pair,
    push_image,
)

BUILDER = "https://github.com/acme/builder/.github/workflows/build.yml@refs/tags/v1"
PROVENANCE = {
    "buildDefinition": {"buildType": "https://example.com/bench/v1", "externalParameters": {}},
    "runDetails": {"builder": {"id": BUILDER}},
}
TESTER = REPO / ".tools" / "bin" / "policy-tester"
GATEKEEPER_AGENT = "forge-gatekeeper"


def gatekeeper_config(registry: str, keys: KeyPair, *, cold: bool) -> dict[str, Any]:
    signatures: dict[str, Any] = {
        "authorities": [{"name": "release", "keys": [keys.public_pem], "tlog": False}],
        "images": [{"glob": f"{registry}/**", "authorities": ["release"]}],
        "version": 2,
    }
    if cold:
        signatures |= {"cache_ttl_seconds": 0, "negative_cache_ttl_seconds": 0}
    return {
        "registry": {"hosts": [{"host": registry, "plain_http": True}]},
        "signatures": signatures,
        "trusted_root": "none",
        "ecr_auth": False,
        "ecr_scan_enabled": False,
        "evidence_cache_ttl_seconds": 0 if cold else 60,
    }


def cluster_image_policies(registry: str, keys: KeyPair) -> list[dict[str, Any]]:
    """The same check for policy-controller: a signature by the key and both attestations.

    Two policies, because an authority that lists attestations checks only those, and every
    policy that matches an image must pass. No transparency log: without ``ctlog`` a key
    authority skips it, as ``tlog: false`` does here."""
    def policy(name: str, attestations: list[dict[str, str]]) -> dict[str, Any]:
        authority: dict[str, Any] = {"name": "release", "key": {"data": keys.public_pem}}
        if attestations:
            authority["attestations"] = attestations
        return {
            "apiVersion": "policy.sigstore.dev/v1beta1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": name},
            "spec": {"images": [{"glob": f"{registry}/**"}], "authorities": [authority]},
        }

    return [
        policy("bench-signature", []),
        policy("bench-attestations", [
            {"name": "sbom", "predicateType": "https://cyclonedx.org/bom"},
            {"name": "provenance", "predicateType": "https://slsa.dev/provenance/v1"},
        ]),
    ]


def build_images(registry: str, cosign: str, keys: KeyPair, count: int,
                 workdir: Path) -> tuple[list[str], str]:
    """``count`` signed + attested images and one unsigned one, by tag."""
    images = []
    for number in range(count):
        repository = f"bench-cold/app{number}"
        digest = push_image(registry, f"{repository}:1.0", f"bench-cold image {number}", workdir)
        pinned = f"{registry}/{repository}@{digest}"
        cosign_sign(cosign, keys, pinned, workdir)
        cosign_attest(cosign, keys, pinned, workdir, predicate_type="cyclonedx",
                      predicate=CYCLONEDX_PREDICATE)
        cosign_attest(cosign, keys, pinned, workdir, predicate_type="slsaprovenance1",
                      predicate=PROVENANCE)
        images.append(f"{registry}/{repository}:1.0")
    push_image(registry, "bench-cold/unsigned:1.0", "bench-cold unsigned", workdir)
    return images, f"{registry}/bench-cold/unsigned:1.0"


@contextmanager
def bench_world(workdir: Path, count: int, *, cold: bool) -> Iterator[tuple[list[str], str, Path]]:
    """A loopback registry (storage in ``workdir``) holding :func:`build_images`' ``count``
    images and the unsigned one, and the gatekeeper configuration for it (every cache off when
    ``cold``): the images by tag, the unsigned one, the configuration file."""
    cosign = os.environ.get("GATEKEEPER_COSIGN_V2") or str(REPO / ".tools/bin/cosign-v2")
    (workdir / "storage").mkdir()
    with running_registry(workdir) as registry:
        keys = generate_key_pair(cosign, workdir / "keys")
        images, unsigned = build_images(registry, cosign, keys, count, workdir)
        config = workdir / f"gatekeeper-{'cold' if cold else 'warm'}.yaml"
        config.write_text(yaml.safe_dump(gatekeeper_config(registry, keys, cold=cold)))
        yield images, unsigned, config


def evaluation_body(image: str) -> bytes:
    return json.dumps({
        "images": [image], "environment": "production", "namespace": "shop",
        "ticket": {"intent_id": "I-1", "plan_id": "P-1", "ticket_id": "T-1", "deploy_id": "D-1"},
    }).encode()


def evaluate(conn: http.client.HTTPConnection, image: str, expect: str = "allow") -> None:
    status, body = post_json(conn, "/v1/evaluations", evaluation_body(image))
    answer = json.loads(body) if status == 200 else {}
    if answer.get("verdict") != expect:
        raise RuntimeError(f"{image}: expected {expect}, got HTTP {status}: {body[:1500]!r}")


@dataclass(frozen=True)
class ServerRun:
    median: float  # seconds per evaluation, p50
    requests: float  # registry requests per evaluation
    registry_cpu: float  # seconds of the registry's CPU per evaluation
    server_cpu: float  # seconds of the gatekeeper's and its OPA's CPU per evaluation


def bench_server(config_file: Path, images: list[str], unsigned: str, rounds: int,
                 log: AccessLog, registry_pid: int, *, label: str) -> ServerRun:
    """Times one evaluation at a time; prints also the CPU the registry and the gatekeeper
    (with its OPA) spent per evaluation."""
    with running_gatekeeper({"GATEKEEPER_CONFIG": str(config_file)}) as port:
        server = pid_with_argument(str(port))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        evaluate(conn, unsigned, expect="deny")
        for image in images:  # untimed: connections, OPA, the warm server's caches
            evaluate(conn, image)
        mark = log.mark()
        order = [image for _ in range(rounds) for image in images]
        position = iter(order)
        registry_before, server_before = (process_cpu_seconds(registry_pid),
                                          tree_cpu_seconds(server))
        samples = timed(lambda: evaluate(conn, next(position)), len(order))
        registry_cpu = (process_cpu_seconds(registry_pid) - registry_before) / len(order)
        server_cpu = (tree_cpu_seconds(server) - server_before) / len(order)
        requests = log.since(mark, agent=GATEKEEPER_AGENT)
        conn.close()
    median = report(label, samples, width=26)
    print(f"{'':<26} registry requests per evaluation: {describe_requests(requests, len(order))}")
    print(f"{'':<26} CPU per evaluation: registry {registry_cpu * 1000:.1f} ms, gatekeeper "
          f"and its OPA {server_cpu * 1000:.1f} ms")
    return ServerRun(median, len(requests) / len(order), registry_cpu, server_cpu)


def bench_floor(registry: str, images: list[str], rounds: int, log: AccessLog,
                registry_pid: int) -> float:
    """The same registry requests made by :class:`FloorClient`: the registry's floor."""
    client = FloorClient(registry)
    try:
        for image in images:  # untimed: connections and threads
            client.lookup(image)
        mark = log.mark()
        order = [image for _ in range(rounds) for image in images]
        position = iter(order)
        before = process_cpu_seconds(registry_pid)
        samples = timed(lambda: client.lookup(next(position)), len(order))
        registry_cpu = (process_cpu_seconds(registry_pid) - before) / len(order)
        requests = log.since(mark, agent="registry-floor")
    finally:
        client.close()
    median = report("registry alone (floor)", samples, width=26)
    print(f"{'':<26} the same requests by a minimal client: "
          f"{describe_requests(requests, len(order))}")
    print(f"{'':<26} registry CPU per lookup: {registry_cpu * 1000:.1f} ms")
    return median


def bench_processes(label: str, argv_for: Any, images: list[str], unsigned: str, runs: int,
                    log: AccessLog, agent: str, env: dict[str, str]) -> tuple[float, float]:
    run_process(argv_for(unsigned), env=env, expect=1)
    for image in images:
        run_process(argv_for(image), env=env)
    mark = log.mark()
    samples: list[float] = []
    cpu: list[float] = []
    for run in range(runs):
        before = children_cpu_seconds()
        samples.append(run_process(argv_for(images[run % len(images)]), env=env)[0])
        cpu.append(children_cpu_seconds() - before)
    requests = log.since(mark, agent=agent)
    median = report(label, samples, width=26)
    print(f"{'':<26} CPU (user+system) per run: median {statistics.median(cpu) * 1000:.0f} ms, "
          f"best {min(cpu) * 1000:.0f} ms")
    print(f"{'':<26} registry requests per run: {describe_requests(requests, runs)}")
    return median, statistics.median(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4, help="server passes over the images")
    parser.add_argument("--process-runs", type=int, default=10)
    parser.add_argument("--tester", type=Path, default=TESTER)
    arguments = parser.parse_args()
    cosign = os.environ.get("GATEKEEPER_COSIGN_V2") or str(REPO / ".tools/bin/cosign-v2")
    tester = arguments.tester if arguments.tester.is_file() else None
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}  images: "
          f"{arguments.images} (cosign key signature + CycloneDX and SLSA v1 attestations), "
          f"by tag, environment production")

    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        workdir = Path(tmp)
        (workdir / "storage").mkdir()
        with running_registry(workdir, access_log=True) as registry:
            log = AccessLog(workdir / "access.log")
            keys = generate_key_pair(cosign, workdir / "keys")
            images, unsigned = build_images(registry, cosign, keys, arguments.images, workdir)
            configs = {}
            for kind in ("cold", "warm"):
                configs[kind] = workdir / f"gatekeeper-{kind}.yaml"
                configs[kind].write_text(yaml.safe_dump(
                    gatekeeper_config(registry, keys, cold=kind == "cold")))
            registry_pid = pid_with_argument(str(workdir / "registry.yml"))
            floor_lookup = bench_floor(registry, images, arguments.rounds, log, registry_pid)
            cold_run = bench_server(configs["cold"], images, unsigned, arguments.rounds, log,
                                    registry_pid, label="gatekeeper cold")
            cold, cold_requests = cold_run.median, cold_run.requests
            warm = bench_server(configs["warm"], images, unsigned, arguments.rounds * 5, log,
                                registry_pid, label="gatekeeper warm").median

            env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
            env.update(GATEKEEPER_CONFIG=str(configs["cold"]), PYTHONPATH=str(REPO),
                       GATEKEEPER_DATABASE_URL=f"sqlite:///{workdir / 'cli.db'}")
            floor = report("python -c pass", time_process(
                [sys.executable, "-c", "pass"], arguments.process_runs, env=env), width=26)
            verify, verify_cpu = bench_processes(
                "gatekeeper verify", lambda image: [sys.executable, "-m", "gatekeeper", "verify",
                                                    image],
                images, unsigned, arguments.process_runs, log, GATEKEEPER_AGENT, env)
            peer = None
            if tester is None:
                print(f"policy-controller tester: {arguments.tester} not built "
                      "(scripts/install-tools --bench); skipped")
            else:
                policy = workdir / "cip.yaml"
                policy.write_text(yaml.safe_dump_all(cluster_image_policies(registry, keys)))
                peer, peer_cpu = bench_processes(
                    "policy-controller tester",
                    lambda image: [str(tester), "--policy", str(policy), "--image", image,
                                   "--log-level", "error"],
                    images, unsigned, arguments.process_runs, log, "go-containerregistry",
                    {**env, "HOME": str(workdir)})

    print("ratios (medians, same run):")
    print(f"  cold / warm                         {ratio(cold, warm)}")
    print(f"  cold / registry floor               {ratio(cold, floor_lookup)}   (the gatekeeper "
          f"adds {(cold - floor_lookup) * 1000:.1f} ms)")
    cores = os.cpu_count() or 1
    machine_floor = (cold_run.registry_cpu + cold_run.server_cpu) / cores
    print(f"  cold / machine floor                {ratio(cold, machine_floor)}   (one cold "
          f"evaluation's CPU, registry {cold_run.registry_cpu * 1000:.1f} + gatekeeper "
          f"{cold_run.server_cpu * 1000:.1f} ms, spread over {cores} cores: "
          f"{machine_floor * 1000:.1f} ms)")
    print(f"  gatekeeper verify / python -c pass  {ratio(verify, floor)}")
    if peer is not None:
        print(f"  tester / gatekeeper cold            {ratio(peer, cold)}   target >= 3x")
        print(f"  gatekeeper verify / tester          {ratio(verify, peer)}   (CPU: "
              f"{ratio(verify_cpu, peer_cpu)})")
    print(f"targets: cold p50 <= 15 ms ({cold * 1000:.1f} ms), <= 7 registry requests per cold "
          f"evaluation ({cold_requests:.1f}), gatekeeper verify <= 0.3 s ({verify:.3f} s wall, "
          f"{verify_cpu:.3f} s CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
