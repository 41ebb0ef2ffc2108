"""AdmissionReviews for a 3-container Deployment over HTTPS, at rising concurrency.

Run: .venv/bin/python -m benchmarks.bench_admission [--requests N] [--cold-requests N]
     [--workers 1,2]

The gatekeeper runs as a child process (uvicorn, TLS from a throwaway CA) serving the admission
router over the real service: embedded OPA with ``policies/``, SQLite audit store, and the real
``OciRegistryClient`` against Debian's ``docker-registry`` on loopback.

* **warm**: the Deployment as the mutating webhook left it, every image pinned to its digest
  (what the ReplicaSet and its Pods carry): no registry round trip, policy + audit only.
* **cold**: every review names 3 tags never seen before, each resolved against the registry.

``--webhooks both`` sends each admission as the API server does with both webhooks registered:
``/admission/mutate``, the patch applied, then ``/admission/validate`` with a uid of its own
(the API server's uid names one call, not the admission); the
latency is that of the pair. ``--service real`` serves ``create_app(settings)`` (the production
application: middlewares, wiring, the admission settings) on uvicorn as ``gatekeeper serve``
does. ``--workers 1,2`` runs the real ``gatekeeper serve --workers N`` (supervisor, N workers
on one listener, each with its embedded OPA) for each N in turn in the same run and prints the
throughput and latency ratios.

Each level prints the server's CPU per review (the gatekeeper process tree, from /proc) and,
in parentheses, the embedded OPA's own share of it.

Targets (2 cores): warm p99 under 10 ms and over 500 reviews/s; cold p99 under 100 ms.
Traffic goes to 127.0.0.1 only; every loop is bounded by its request count.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    free_port,
    http_status,
    proc_cpu,
    run_workers,
    running_registry,
    stop,
    summarise,
    wait_until,
)

NAMESPACE = "shop"
REPOSITORIES = ("acme/web", "acme/api", "acme/worker")


# -- a loopback registry with images to resolve ----------------------------------------------

def _put(conn: http.client.HTTPConnection, path: str, body: bytes, content_type: str) -> None:
    conn.request("PUT", path, body=body, headers={"Content-Type": content_type})
    response = conn.getresponse()
    response.read()
    if response.status not in (201, 202):
        raise RuntimeError(f"registry refused PUT {path}: {response.status}")


def push_images(host: str, tags: int, repositories: tuple[str, ...] = REPOSITORIES) -> str:
    """Push one small image to each repository under ``tags`` tags; return its digest."""
    conn = http.client.HTTPConnection(host, timeout=10)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [],
    }).encode()
    for repository in repositories:
        conn.request("POST", f"/v2/{repository}/blobs/uploads/")
        response = conn.getresponse()
        response.read()
        location = response.getheader("Location") or ""
        location = location.split(host, 1)[-1]
        separator = "&" if "?" in location else "?"
        _put(conn, f"{location}{separator}digest={config_digest}", config,
             "application/octet-stream")
        for index in range(tags):
            _put(conn, f"/v2/{repository}/manifests/v{index}", manifest,
                 "application/vnd.oci.image.manifest.v1+json")
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


# -- the gatekeeper under test (child process) -------------------------------------------------

def serve(port: int, registry: str, tls_dir: Path, database: Path, service_kind: str,
          environment: str) -> None:
    """Child: the admission router over the real service (or fakes), on HTTPS."""
    import logging

    import uvicorn

    from gatekeeper.api.server import header_deadline_protocol
    from gatekeeper.config import load_settings
    from gatekeeper.registry.client import OciRegistryClient
    from gatekeeper.registry.settings import RegistryClientSettings, RegistryHostSettings
    from gatekeeper.service import EvaluationService
    from gatekeeper.webhook import AdmissionHandler, AdmissionSettings, build_admission_router
    from gatekeeper.webhook.tls import ReloadingServerContext
    from gatekeeper.wiring import build_container

    logging.basicConfig(level=logging.ERROR)
    container = None
    if service_kind == "fakes":
        resolver = OciRegistryClient(RegistryClientSettings(
            hosts=(RegistryHostSettings(registry, plain_http=True),)))
        # Transport ceiling: in-memory policy and audit fakes, the real registry client.
        from tests.unit.webhook.fakes import MemoryAuditLog, RulePolicyEngine

        service = EvaluationService(policy_engine=RulePolicyEngine(),
                                    audit_log=MemoryAuditLog(), digest_resolver=resolver)
    else:
        settings = load_settings(
            database_url=f"sqlite:///{database}", policy_dir=REPO / "policies", metrics_port=0,
            registry={"hosts": [{"host": registry, "plain_http": True}]},
            admission_environment=environment, insecure_disable_auth=True,
            audit_spool_dir=tls_dir / "spool", policy_state_dir=tls_dir / "policy-state",
            policy_watch_interval_seconds=0)
        container = build_container(settings)
        service = container.service

    if container is not None:
        from gatekeeper.app import create_app
        from gatekeeper.webhook.tls import ClientCertificateProtocol

        app = create_app(container.settings, container=container)
        # as ``gatekeeper serve`` runs it
        protocol: Any = header_deadline_protocol(
            container.settings.http_header_timeout_seconds, ClientCertificateProtocol)
    else:
        # the production transport (the lean admission path in front of the routes)
        from gatekeeper.app import GatekeeperAPI
        from gatekeeper.webhook.asgi import AdmissionPath
        from gatekeeper.webhook.routes import AdmissionEndpoint

        handler = AdmissionHandler(service, AdmissionSettings(environment=environment))
        app = GatekeeperAPI()
        app.include_router(build_admission_router(handler))
        lean = AdmissionPath(
            AdmissionEndpoint(handler), observe=lambda *_observed: None,
            error_answer=lambda error: (500, {"error": error.kind, "message": error.message}),
            client_certificate_required=False, body_limit=handler.settings.max_review_bytes,
            read_timeout=30.0)
        app.install_admission_path(lean, lean)
        protocol = header_deadline_protocol(10.0)
    tls = ReloadingServerContext(tls_dir / "gatekeeper.crt", tls_dir / "gatekeeper.key")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False,
                http=protocol, loop="uvloop",  # as ``gatekeeper serve`` runs it
                ssl_context_factory=lambda _config, _default: tls.context)


def _cli_command(port: int, registry: str, directory: Path, environment: str, workers: int,
                 env: dict[str, str]) -> list[str]:
    """``gatekeeper serve --workers N`` itself (the supervisor and its workers), configured
    as :func:`serve` configures the in-process app."""
    state = directory / f"workers-{workers}"
    env.update(
        GATEKEEPER_DATABASE_URL=f"sqlite:///{state / 'audit.db'}",
        GATEKEEPER_POLICY_DIR=str(REPO / "policies"), GATEKEEPER_METRICS_PORT="0",
        GATEKEEPER_REGISTRY=json.dumps({"hosts": [{"host": registry, "plain_http": True}]}),
        GATEKEEPER_ADMISSION_ENVIRONMENT=environment, GATEKEEPER_INSECURE_DISABLE_AUTH="true",
        GATEKEEPER_AUDIT_SPOOL_DIR=str(state / "spool"),
        GATEKEEPER_POLICY_STATE_DIR=str(state / "policy-state"),
        GATEKEEPER_POLICY_WATCH_INTERVAL_SECONDS="0",
        GATEKEEPER_TLS_CERT_FILE=str(directory / "gatekeeper.crt"),
        GATEKEEPER_TLS_KEY_FILE=str(directory / "gatekeeper.key"),
        PYTHONPATH=str(REPO), GATEKEEPER_SKIP_VENV="1",
    )
    return [sys.executable, "-m", "gatekeeper", "serve", "--host", "127.0.0.1", "--port",
            str(port), "--workers", str(workers)]


@contextmanager
def running_gatekeeper(
    registry: str, directory: Path, service_kind: str, environment: str,
    workers: int | None = None,
) -> Iterator[tuple[int, ssl.SSLContext, int]]:
    """The gatekeeper under test: this module's ``--serve`` child, or with ``workers`` the
    real ``gatekeeper serve --workers N``."""
    from tests.unit.webhook.certificates import CertificateAuthority

    ca = CertificateAuthority(directory)
    ca.issue("gatekeeper", ip_addresses=("127.0.0.1",))
    port = free_port()
    env = dict(os.environ)
    env.setdefault("GATEKEEPER_OPA_BINARY", str(REPO / ".tools/bin/opa"))
    log_path = directory / f"gatekeeper-{workers or 'app'}.log"
    log_file = log_path.open("wb")
    if workers is not None:
        command = _cli_command(port, registry, directory, environment, workers, env)
    else:
        command = [sys.executable, "-m", "benchmarks.bench_admission", "--serve", str(port),
                   "--registry", registry, "--directory", str(directory), "--service",
                   service_kind, "--environment", environment]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file,
                               stderr=subprocess.STDOUT)
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    try:
        wait_until(lambda: http_status("127.0.0.1", port, "/admission/validate", method="POST",
                                       context=context) == 400 and (
                       (workers or 1) == 1
                       or f"{workers} workers serving" in log_path.read_text()),
                   what="gatekeeper", process=process, log=log_path,
                   timeout=60 + 30 * (workers or 0))
        yield port, context, process.pid
    finally:
        stop(process)
        log_file.close()


# -- reviews and load ------------------------------------------------------------------------

def deployment_review(uid: int, images: list[str]) -> bytes:
    containers = [{"name": f"c{i}", "image": image, "resources": {},
                   "terminationMessagePath": "/dev/termination-log",
                   "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}
                  for i, image in enumerate(images)]
    labels = {"app": "shop"}
    obj = {
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "shop", "namespace": NAMESPACE, "labels": labels,
                     "annotations": {"gatekeeper.forge.dev/ticket-id": "TCK-1"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": containers, "restartPolicy": "Always",
                                       "dnsPolicy": "ClusterFirst"}}},
    }
    gvk = {"group": "apps", "version": "v1", "kind": "Deployment"}
    gvr = {"group": "apps", "version": "v1", "resource": "deployments"}
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": f"00000000-0000-4000-8000-{uid:012d}", "kind": gvk,
                                   "resource": gvr, "requestKind": gvk, "requestResource": gvr,
                                   "name": "shop", "namespace": NAMESPACE,
                                   "operation": "CREATE",
                                   "userInfo": {"username": "bench"}, "object": obj,
                                   "oldObject": None, "dryRun": False}}).encode()


def _patched(body: bytes, answer: dict[str, Any]) -> bytes:
    """The review the API server sends the validating webhook: the mutating patch applied, and
    a uid of its own (one per call)."""
    review = json.loads(body)
    uid = review["request"]["uid"]
    review["request"]["uid"] = uid[:14] + "9" + uid[15:]
    for op in json.loads(base64.b64decode(answer["patch"])) if answer.get("patch") else []:
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = review["request"]["object"]
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = op["value"]
    return json.dumps(review).encode()


def run_load(port: int, context: ssl.SSLContext, bodies: list[bytes], concurrency: int,
             webhooks: str = "validate") -> dict[str, Any]:
    """Send every body once over ``concurrency`` keep-alive HTTPS connections (``both``: to the
    mutating webhook, then its patched object to the validating webhook)."""
    latencies: list[float] = []
    verdicts: dict[str, int] = {}
    errors = 0
    lock = threading.Lock()
    shares = [bodies[i::concurrency] for i in range(concurrency)]

    def worker(share: list[bytes]) -> None:
        nonlocal errors
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        conn.connect()  # the handshake is not part of a review's latency (keep-alive)
        mine: list[float] = []
        seen: dict[str, int] = {}
        failed = 0
        for body in share:
            started = time.perf_counter()
            if webhooks == "both":
                conn.request("POST", "/admission/mutate", body=body,
                             headers={"Content-Type": "application/json"})
                first = conn.getresponse()
                mutated = json.loads(first.read())["response"] if first.status == 200 else {}
                if not mutated.get("allowed"):
                    mine.append(time.perf_counter() - started)
                    failed += first.status != 200
                    continue
                body = _patched(body, mutated)
            conn.request("POST", "/admission/validate", body=body,
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                failed += 1
                continue
            answer = json.loads(payload)["response"]
            key = "allowed" if answer["allowed"] else f"denied {answer['status']['code']}"
            seen[key] = seen.get(key, 0) + 1
        conn.close()
        with lock:
            latencies.extend(mine)
            errors += failed
            for key, count in seen.items():
                verdicts[key] = verdicts.get(key, 0) + count

    elapsed = run_workers(worker, [share for share in shares if share])
    summary = summarise(latencies)
    return {
        "requests": len(latencies), "errors": errors, "verdicts": verdicts,
        "p50_ms": summary.p50 * 1000, "p99_ms": summary.p99 * 1000,
        "per_second": len(latencies) / elapsed,
    }


def tree_cpu_seconds(pid: int, command: str | None = None) -> float:
    """User + system CPU of ``pid`` and its descendants (the gatekeeper, its workers, their
    OPA), from /proc: a figure the other load on a shared machine does not inflate. With
    ``command`` (e.g. ``opa``): only the descendants running that program."""
    parents: dict[int, int] = {}
    spent: dict[int, float] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        if (cpu := proc_cpu(stat)) is None:
            continue
        found = int(stat.parent.name)
        parents[found], names[found], spent[found] = cpu

    def descends(candidate: int) -> bool:
        while candidate > 1:
            if candidate == pid:
                return True
            candidate = parents.get(candidate, 0)
        return False

    return sum(seconds for found, seconds in spent.items()
               if descends(found) and (command is None or names[found] == command))


def report(label: str, concurrency: int, figures: dict[str, Any]) -> None:
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(figures["verdicts"].items()))
    print(f"{label} concurrency {concurrency:>2}: {figures['requests']:>5} reviews, "
          f"{figures['errors']} errors, p50 {figures['p50_ms']:6.2f} ms, "
          f"p99 {figures['p99_ms']:6.2f} ms, {figures['per_second']:6.0f} reviews/s, "
          f"server CPU {figures.get('cpu_ms', 0):5.2f} ms/review (OPA "
          f"{figures.get('opa_cpu_ms', 0):4.2f})  [{verdicts}]", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="warm reviews per level")
    parser.add_argument("--cold-requests", type=int, default=300, help="cold reviews per level")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--service", choices=["real", "fakes"], default="real",
                        help="real: embedded OPA + SQLite audit; fakes: in-memory (ceiling)")
    parser.add_argument("--webhooks", choices=["validate", "both"], default="both",
                        help="both: mutate, then validate the patched object (as the API "
                        "server does with both webhooks registered)")
    parser.add_argument("--environment", default="development",
                        help="environment of the decisions (development admits the images)")
    parser.add_argument("--workers", help="e.g. 1,2: run the real `gatekeeper serve --workers N` "
                        "for each N in turn (same run) and print the ratios")
    parser.add_argument("--images", help="e.g. 1,10,50: a warm sweep of images per review "
                        "(distinct pinned repositories) at the highest concurrency, with the "
                        "ratios to the first")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--registry", help=argparse.SUPPRESS)
    parser.add_argument("--directory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        directory = Path(args.directory)
        serve(args.serve, args.registry, directory, directory / "audit.db", args.service,
              args.environment)
        return

    levels = [int(level) for level in args.concurrency.split(",")]
    engine = ("embedded OPA + SQLite audit" if args.service == "real"
              else "in-memory policy + audit fakes")
    worker_counts: list[int | None] = (
        [int(count) for count in args.workers.split(",")] if args.workers else [None])
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}  review: Deployment, "
          f"3 containers, HTTPS keep-alive, {engine}, loopback docker-registry, environment "
          f"{args.environment}, webhooks: {args.webhooks}"
          + (f", gatekeeper serve --workers {args.workers}" if args.workers else ""))
    warm_figures: dict[tuple[int | None, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "storage").mkdir()
        cold_total = (args.cold_requests * len(levels) + 20) * len(worker_counts)
        sweep = [int(count) for count in args.images.split(",")] if args.images else []
        sweep_repositories = tuple(f"acme/sweep-{i}" for i in range(max(sweep, default=0)))
        with running_registry(directory) as registry:
            digest = push_images(registry, cold_total)
            if sweep_repositories:
                push_images(registry, 1, sweep_repositories)
            uids = iter(range(10**9))  # every admission has its own uid, as in a cluster
            tag = 20  # v0..v19 are left unused; every cold review names new tags
            for workers in worker_counts:
                label = "" if workers is None else f" w={workers}"
                with running_gatekeeper(registry, directory, args.service, args.environment,
                                        workers) as (port, context, pid):

                    def measured(bodies: list[bytes], concurrency: int) -> dict[str, Any]:
                        cpu, opa = tree_cpu_seconds(pid), tree_cpu_seconds(pid, "opa")
                        figures = run_load(port, context, bodies, concurrency, args.webhooks)
                        figures["cpu_ms"] = (tree_cpu_seconds(pid) - cpu) * 1000 / len(bodies)
                        figures["opa_cpu_ms"] = (
                            (tree_cpu_seconds(pid, "opa") - opa) * 1000 / len(bodies))
                        return figures

                    pinned = [f"{registry}/{repo}:v0@{digest}" for repo in REPOSITORIES]
                    run_load(port, context, [deployment_review(next(uids), pinned)
                                             for _ in range(300)], 4, args.webhooks)  # warm-up
                    for concurrency in levels:
                        warm = [deployment_review(next(uids), pinned)
                                for _ in range(args.requests)]
                        figures = measured(warm, concurrency)
                        warm_figures[(workers, concurrency)] = figures
                        report(f"warm{label}", concurrency, figures)
                    for concurrency in levels:
                        bodies = []
                        for _ in range(args.cold_requests):
                            bodies.append(deployment_review(
                                next(uids),
                                [f"{registry}/{repo}:v{tag}" for repo in REPOSITORIES]))
                            tag += 1
                        report(f"cold{label}", concurrency, measured(bodies, concurrency))
                    by_images: dict[int, dict[str, Any]] = {}
                    for count in sweep:
                        images = [f"{registry}/{repo}:v0@{digest}"
                                  for repo in sweep_repositories[:count]]
                        run_load(port, context, [deployment_review(next(uids), images)
                                                 for _ in range(20)], 4, args.webhooks)
                        by_images[count] = measured(
                            [deployment_review(next(uids), images)
                             for _ in range(args.requests)], max(levels))
                        report(f"warm{label} {count:>2} images", max(levels), by_images[count])
                    for count in sweep[1:]:
                        base, other = by_images[sweep[0]], by_images[count]
                        print(f"warm{label} {count} images / {sweep[0]}: throughput "
                              f"x{other['per_second'] / base['per_second']:.2f}, server CPU "
                              f"x{other['cpu_ms'] / base['cpu_ms']:.2f}", flush=True)
    if len(worker_counts) > 1:
        first = worker_counts[0]
        for workers in worker_counts[1:]:
            for concurrency in levels:
                base = warm_figures[(first, concurrency)]
                other = warm_figures[(workers, concurrency)]
                print(f"warm concurrency {concurrency:>2}: w={workers} / w={first}: throughput "
                      f"x{other['per_second'] / base['per_second']:.2f}, p50 "
                      f"x{other['p50_ms'] / base['p50_ms']:.2f}, p99 "
                      f"x{other['p99_ms'] / base['p99_ms']:.2f}")
    print("targets (2 cores): warm p99 < 10 ms and > 500 reviews/s; cold p99 < 100 ms")


if __name__ == "__main__":
    main()
