"""Pods POSTed with ``?dryRun=All`` through a real kube-apiserver, without and with the webhooks.

Run: .venv/bin/python -m benchmarks.bench_kube [--requests N] [--concurrency 1,8] [--workers 1,2]

Starts its own control plane (``scripts/test-cluster``: etcd, kube-apiserver v1.35,
controller manager, scheduler on 127.0.0.1; unless ``GATEKEEPER_TEST_KUBECONFIG`` names one), a
loopback docker-registry holding the Pod's image, and the real ``gatekeeper serve`` (HTTPS,
embedded OPA with ``policies/``, SQLite audit store, digest resolution, environment
``development``: the image is admitted). Three rounds, each at every concurrency level:

* **no webhook**: the API server alone (authentication, admission chain, validation, dry run);
* **both webhooks**: the chart's mutating and validating configurations, registered with
  ``url:`` pointing at the gatekeeper (``tests/integration/kube_cluster.py`` does the same);
* **validating only**: the mutating configuration removed.

``--workers 1,2`` replaces the last two rounds by one both-webhooks round per worker count
against ``gatekeeper serve --workers N`` (restarted for each), and prints the ratios.

The Pod names its image by tag (the mutating webhook pins it to the digest). Each worker is a
separate process with one keep-alive HTTPS connection (the cluster admin's client certificate),
so the Python client is not the bottleneck. Printed per round and level: p50, p99, Pods/s, and
the ratio to the no-webhook round. Targets (issue 11, 2 cores): at least 300 admissions/s at
concurrency 8 with both webhooks, and the webhooks adding at most 3 ms to the API server's p50
at concurrency 1. Traffic goes to 127.0.0.1 only; every loop is bounded by its request count.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_admission import push_images, tree_cpu_seconds  # noqa: E402
from benchmarks.common import (  # noqa: E402
    free_port,
    http_status,
    running_registry,
    stop,
    wait_until,
)
from benchmarks.kube_profile import Groups, Profile  # noqa: E402

NAMESPACE = "bench"
KUBECTL = REPO / ".tools" / "bin" / "kubectl"


# -- the control plane -----------------------------------------------------------------------

@contextmanager
def control_plane(directory: Path) -> Iterator[Path]:
    """A kubeconfig: the given cluster, or one started (and stopped) with scripts/test-cluster."""
    given = os.environ.get("GATEKEEPER_TEST_KUBECONFIG")
    if given:
        yield Path(given)
        return
    script = str(REPO / "scripts" / "test-cluster")
    started = time.monotonic()
    subprocess.run([script, "start", str(directory)], check=True, capture_output=True,
                   timeout=300)
    print(f"control plane started in {time.monotonic() - started:.1f}s", flush=True)
    try:
        yield directory / "admin.kubeconfig"
    finally:
        subprocess.run([script, "stop", str(directory)], check=False, capture_output=True,
                       timeout=120)


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    binary = os.environ.get("GATEKEEPER_KUBECTL") or str(KUBECTL)
    done = subprocess.run([binary, "--kubeconfig", str(kubeconfig), *args], input=stdin,
                          capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()[:2000]}")
    return done.stdout


def api_endpoint(kubeconfig: Path) -> dict[str, str]:
    """Host, port and credential files of the API server (from the kubeconfig)."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    host, port = cluster["server"].removeprefix("https://").rsplit(":", 1)
    return {"host": host, "port": port, "ca": cluster["certificate-authority"],
            "cert": user["client-certificate"], "key": user["client-key"]}


# -- the gatekeeper (a child process) and its registration ----------------------------------

@contextmanager
def running_gatekeeper(directory: Path, registry: str, workers: int = 1,
                       overrides: dict[str, Any] | None = None,
                       ) -> Iterator[tuple[str, Path, int]]:
    """``gatekeeper serve [--workers N]`` over HTTPS on loopback; yields its URL, the CA file
    and its pid once every worker serves."""
    from tests.unit.webhook.certificates import CertificateAuthority

    ca = CertificateAuthority(directory)
    leaf = ca.issue("gatekeeper", ip_addresses=("127.0.0.1",))
    port = free_port()
    config = {
        "database_url": f"sqlite:///{directory / 'audit.db'}",
        "policy_dir": str(REPO / "policies"),
        "policy_tests_dir": str(REPO / "rego-tests"),
        "policy_state_dir": str(directory / "policy-state"),
        "audit_spool_dir": str(directory / "spool"),
        "host": "127.0.0.1", "port": port, "metrics_port": 0, "log_level": "WARNING",
        "insecure_disable_auth": True, "admission_environment": "development",
        "tls_cert_file": str(leaf.cert_file), "tls_key_file": str(leaf.key_file),
        "ecr_scan_enabled": False,
        "registry": {"hosts": [{"host": registry, "plain_http": True}]},
        "workers": workers,
        **(overrides or {}),
    }
    (directory / "gatekeeper.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env.update(GATEKEEPER_CONFIG=str(directory / "gatekeeper.yaml"), PYTHONPATH=str(REPO),
               GATEKEEPER_OPA_BINARY=os.environ.get("GATEKEEPER_OPA_BINARY",
                                                    str(REPO / ".tools/bin/opa")))
    log = (directory / "gatekeeper.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "gatekeeper", "serve"], env=env,
                               cwd=directory, stdout=log, stderr=subprocess.STDOUT)
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    try:
        wait_until(lambda: http_status("127.0.0.1", port, "/readyz", context=context) == 200
                   and (workers == 1 or f"{workers} workers serving"
                        in (directory / "gatekeeper.log").read_text()),
                   what="gatekeeper", process=process, log=directory / "gatekeeper.log",
                   timeout=60 + 30 * workers)
        yield f"https://127.0.0.1:{port}", ca.cert_file, process.pid
    finally:
        stop(process)
        log.close()


def webhook_configurations(url: str, ca_file: Path) -> list[dict[str, Any]]:
    """The chart's mutating and validating configurations, rendered as manifests with
    ``admission.url`` (``url:`` clientConfigs) and the CA in every ``caBundle``, as
    ``tests/integration/kube_cluster.py`` renders them."""
    from tests.integration.kube_cluster import rendered_webhook_configurations

    return rendered_webhook_configurations(ca_file, url)


# -- load ------------------------------------------------------------------------------------

def pod_body(image: str, index: int) -> bytes:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"bench-{index}", "namespace": NAMESPACE,
                     "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": image}],
                 "automountServiceAccountToken": False},
    }).encode()


def _worker(endpoint: dict[str, str], bodies: list[bytes]) -> tuple[list[float], int, float,
                                                                      float, str]:
    """One process, one keep-alive connection; returns latencies, errors, start, end, image."""
    context = ssl.create_default_context(cafile=endpoint["ca"])
    context.load_cert_chain(endpoint["cert"], endpoint["key"])
    conn = http.client.HTTPSConnection(endpoint["host"], int(endpoint["port"]), context=context,
                                       timeout=60)
    conn.connect()
    path = f"/api/v1/namespaces/{NAMESPACE}/pods?dryRun=All"
    latencies: list[float] = []
    errors = 0
    image = ""
    began = time.perf_counter()
    for body in bodies:
        started = time.perf_counter()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 201:
            errors += 1
            image = payload.decode(errors="replace")[:300]
        else:
            image = json.loads(payload)["spec"]["containers"][0]["image"]
    ended = time.perf_counter()
    conn.close()
    return latencies, errors, began, ended, image


def run_load(pool: Any, endpoint: dict[str, str], image: str, concurrency: int,
             requests: int) -> dict[str, Any]:
    bodies = [pod_body(image, i) for i in range(requests)]
    shares = [bodies[i::concurrency] for i in range(concurrency)]
    results = pool.starmap(_worker, [(endpoint, share) for share in shares])
    latencies = sorted(value for result in results for value in result[0])
    elapsed = max(r[3] for r in results) - min(r[2] for r in results)
    return {
        "requests": len(latencies), "errors": sum(r[1] for r in results),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        "per_second": len(latencies) / elapsed, "stored_image": results[0][4],
    }


def report(label: str, concurrency: int, figures: dict[str, Any],
           baseline: dict[str, Any] | None) -> None:
    line = (f"{label:<16} concurrency {concurrency:>2}: {figures['requests']:>5} Pods, "
            f"{figures['errors']} errors, p50 {figures['p50_ms']:7.2f} ms, "
            f"p99 {figures['p99_ms']:7.2f} ms, {figures['per_second']:7.1f} Pods/s")
    if "cpu_ms" in figures:
        line += f", gatekeeper CPU {figures['cpu_ms']:5.2f} ms/Pod"
    if baseline is not None:
        line += (f"  | vs no webhook: p50 +{figures['p50_ms'] - baseline['p50_ms']:.2f} ms "
                 f"(x{figures['p50_ms'] / baseline['p50_ms']:.1f}), throughput "
                 f"x{figures['per_second'] / baseline['per_second']:.2f}")
    print(line, flush=True)
    for extra in figures.get("profile", []):
        print(extra, flush=True)


def wait_for_webhook(pool: Any, endpoint: dict[str, str], image: str, pinned: str) -> None:
    """The API server picks registrations up asynchronously: wait until a Pod comes back pinned."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if run_load(pool, endpoint, image, 1, 1)["stored_image"] == pinned:
            return
        time.sleep(0.2)
    raise RuntimeError("the mutating webhook was not called within 30s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400, help="Pods per round and level")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--workers", help="e.g. 1,2: the both-webhooks round against "
                        "`gatekeeper serve --workers N` for each N (same run), with ratios")
    parser.add_argument("--profile", action="store_true", help="per round: CPU per process "
                        "group per Pod, machine CPU, API server connections to the gatekeeper, "
                        "the gatekeeper's mean review/OPA/audit timings (its /metrics)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a gatekeeper setting (YAML value), e.g. "
                        "admission_record_dry_run=false; repeatable")
    args = parser.parse_args()
    overrides = {key: yaml.safe_load(value) for key, _, value in
                 (item.partition("=") for item in args.set)}
    if args.profile:
        overrides.setdefault("metrics_port", free_port())
    if overrides:
        print(f"gatekeeper settings: {overrides}", flush=True)
    levels = [int(level) for level in args.concurrency.split(",")]
    worker_counts = [int(n) for n in args.workers.split(",")] if args.workers else [1]
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}  request: POST Pod "
          "?dryRun=All (1 container, image by tag), HTTPS keep-alive, one process per "
          "connection", flush=True)
    with tempfile.TemporaryDirectory() as tmp, multiprocessing.Pool(max(levels)) as pool:
        directory = Path(tmp)
        (directory / "storage").mkdir()
        (directory / "cluster").mkdir()
        (directory / "gatekeeper").mkdir()
        with running_registry(directory) as registry, \
                control_plane(directory / "cluster") as kubeconfig:
            digest = push_images(registry, 1)
            image = f"{registry}/acme/web:v0"
            endpoint = api_endpoint(kubeconfig)
            kubectl(kubeconfig, "create", "namespace", NAMESPACE)
            deadline = time.monotonic() + 30
            while "default" not in kubectl(kubeconfig, "get", "serviceaccounts", "-n",
                                           NAMESPACE, "-o", "name"):
                if time.monotonic() > deadline:
                    raise RuntimeError("no default ServiceAccount after 30s")
                time.sleep(0.2)
            run_load(pool, endpoint, image, max(levels), 100)  # warm-up
            cluster_pids = [int((directory / "cluster" / f"{name}.pid").read_text())
                            for name in ("kube-apiserver", "etcd")
                            if (directory / "cluster" / f"{name}.pid").exists()]

            def profiled(concurrency: int, gatekeeper: int = 0,
                         url: str | None = None) -> dict[str, Any]:
                if not args.profile:
                    return run_load(pool, endpoint, image, concurrency, args.requests)
                clients = [p.pid for p in pool._pool]  # type: ignore[attr-defined]
                groups = Groups({"kube-apiserver": cluster_pids[:1], "etcd": cluster_pids[1:],
                                 "bench clients": clients}, gatekeeper)
                profile = Profile(groups, int(url.rsplit(":", 1)[1]) if url else None,
                                  overrides["metrics_port"] if url else None)
                figures = run_load(pool, endpoint, image, concurrency, args.requests)
                figures["profile"] = profile.finish(figures["requests"],
                                                    figures["requests"] / figures["per_second"])
                return figures

            baseline: dict[int, dict[str, Any]] = {}
            for concurrency in levels:
                baseline[concurrency] = profiled(concurrency)
                report("no webhook", concurrency, baseline[concurrency], None)
            both: dict[tuple[int, int], dict[str, Any]] = {}
            for workers in worker_counts:
                label = f" w={workers}" if args.workers else ""
                home = directory / f"gatekeeper-{workers}"
                home.mkdir()
                with running_gatekeeper(home, registry, workers, overrides) as (url, ca_file,
                                                                                 pid):
                    documents = webhook_configurations(url, ca_file)
                    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(documents))
                    wait_for_webhook(pool, endpoint, image, f"{image}@{digest}")
                    run_load(pool, endpoint, image, max(levels), 100)  # warm-up

                    def measured(concurrency: int, pid: int = pid) -> dict[str, Any]:
                        """The load, and the CPU the gatekeeper (its workers) and OPA spent per
                        Pod (user + system, from /proc): stable where latency is not."""
                        cpu = tree_cpu_seconds(pid)
                        figures = profiled(concurrency, pid, url)
                        figures["cpu_ms"] = ((tree_cpu_seconds(pid) - cpu) * 1000
                                             / figures["requests"])
                        return figures

                    for concurrency in levels:
                        figures = measured(concurrency)
                        both[(workers, concurrency)] = figures
                        report(f"both webhooks{label}", concurrency, figures,
                               baseline[concurrency])
                    kubectl(kubeconfig, "delete", "mutatingwebhookconfiguration", "gatekeeper")
                    time.sleep(2)  # the API server drops the registration asynchronously
                    if not args.workers:
                        for concurrency in levels:
                            report("validating only", concurrency, measured(concurrency),
                                   baseline[concurrency])
                    kubectl(kubeconfig, "delete", "validatingwebhookconfiguration",
                            "gatekeeper")
                    time.sleep(2)
            for workers in worker_counts[1:]:
                for concurrency in levels:
                    base = both[(worker_counts[0], concurrency)]
                    other = both[(workers, concurrency)]
                    speedup = other["per_second"] / base["per_second"]
                    print(f"both webhooks concurrency {concurrency:>2}: w={workers} / "
                          f"w={worker_counts[0]}: Pods/s x{speedup:.2f}, "
                          f"p50 x{other['p50_ms'] / base['p50_ms']:.2f}, "
                          f"p99 x{other['p99_ms'] / base['p99_ms']:.2f}", flush=True)
    print("targets (2 cores): >= 300 Pods/s at concurrency 8 with both webhooks; webhooks add "
          "<= 3 ms to p50 at concurrency 1")


if __name__ == "__main__":
    main()
