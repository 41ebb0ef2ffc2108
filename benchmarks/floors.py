"""The floors under the product, each measured alone on this machine (issue 17, item 6):

* **bare FastAPI over TLS**: uvicorn serving one FastAPI route that parses the JSON body and
  answers a fixed AdmissionReview response, with the same TLS set-up as the gatekeeper (a
  throwaway CA), loaded like the product (keep-alive connections, the same review bodies);
* **OPA alone over its unix socket**: ``opa run --server`` on ``policies/`` (as the embedded OPA
  runs), ``POST /v1/data/gatekeeper/main/decision`` with the policy input the product recorded
  (else a golden one), keep-alive;
* **one fsync**: a 4 KiB append and ``os.fsync`` in the directory the benchmark's SQLite lives in.

Used by ``benchmarks/bench_floors.py``; the FastAPI floor runs as a child process
(``python -m benchmarks.floors --serve-fastapi PORT --cert FILE --key FILE``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
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
    run_workers,
    stop,
    summarise,
    wait_until,
)

GOLDEN_INPUT = REPO / "rego-tests" / "golden" / "admission_production_deployment" / "data.json"
DECISION_PATH = "/v1/data/gatekeeper/main/decision"


# -- one fsync -------------------------------------------------------------------------------

def fsync_floor(directory: Path, runs: int = 200, size: int = 4096) -> list[float]:
    """Seconds per ``write`` of ``size`` bytes + ``os.fsync`` on one file in ``directory``."""
    block = os.urandom(size)
    samples = []
    path = directory / "fsync-floor.bin"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(runs):
            started = time.perf_counter()
            os.write(descriptor, block)
            os.fsync(descriptor)
            samples.append(time.perf_counter() - started)
    finally:
        os.close(descriptor)
        path.unlink(missing_ok=True)
    return samples


# -- OPA alone over its unix socket ----------------------------------------------------------

class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 keep-alive over a unix socket (what the embedded OPA's client speaks)."""

    def __init__(self, path: Path, timeout: float = 30) -> None:
        super().__init__("opa", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


@contextmanager
def running_opa(directory: Path, opa_binary: str) -> Iterator[Path]:
    """``opa run --server`` on ``policies/`` over a unix socket in ``directory``."""
    path = directory / "opa.sock"
    log = directory / "opa.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [opa_binary, "run", "--server", "--addr", f"unix://{path}", "--skip-version-check",
             "--log-level", "error", str(REPO / "policies")],
            stdout=output, stderr=output)

    def ready() -> bool:
        conn = UnixHTTPConnection(path, timeout=1)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    try:
        wait_until(ready, what="opa", process=process, log=log)
        yield path
    finally:
        stop(process)


def recorded_policy_input(database: Path) -> dict[str, Any] | None:
    """The policy input of the last decision in a SQLite audit store (what the product sent
    OPA), or None when the store has none in that shape."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            row = connection.execute("SELECT policy_input FROM gatekeeper_decisions "
                                     "ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    document = json.loads(row[0]) if row and row[0] else None
    return document if isinstance(document, dict) else None


def opa_floor(directory: Path, opa_binary: str, policy_input: dict[str, Any] | None, *,
              concurrency: int, requests: int) -> dict[str, Any]:
    """Decisions of ``policy_input`` (default: the golden admission input), ``concurrency``
    keep-alive connections."""
    document = policy_input or json.loads(GOLDEN_INPUT.read_text())
    body = json.dumps({"input": document}).encode()
    with running_opa(directory, opa_binary) as path:

        def connect() -> http.client.HTTPConnection:
            return UnixHTTPConnection(path)

        return parallel_posts(connect, DECISION_PATH, [body] * requests, concurrency,
                              check=lambda answer: "result" in answer, warm_up=100)


# -- bare FastAPI over TLS -------------------------------------------------------------------

def serve_fastapi(port: int, cert: Path, key: Path) -> None:
    """Child: uvicorn + one FastAPI route, TLS with ``cert`` and ``key``."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/admission/validate")
    def validate(review: dict[str, Any]) -> dict[str, Any]:
        uid = review.get("request", {}).get("uid", "")
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": uid, "allowed": True}}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False,
                ssl_certfile=str(cert), ssl_keyfile=str(key))


@contextmanager
def running_fastapi(directory: Path) -> Iterator[tuple[int, ssl.SSLContext]]:
    from tests.unit.webhook.certificates import CertificateAuthority

    ca = CertificateAuthority(directory, name="floor-ca")
    leaf = ca.issue("floor", ip_addresses=("127.0.0.1",))
    port = free_port()
    log = directory / "fastapi.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.floors", "--serve-fastapi", str(port),
             "--cert", str(leaf.cert_file), "--key", str(leaf.key_file)],
            cwd=REPO, stdout=output, stderr=output)
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    try:
        wait_until(lambda: http_status("127.0.0.1", port, "/admission/validate", method="POST",
                                       context=context) == 200,
                   what="bare FastAPI", process=process, log=log)
        yield port, context
    finally:
        stop(process)


def fastapi_floor(directory: Path, bodies: list[bytes], *, concurrency: int) -> dict[str, Any]:
    """The same review bodies as the product, to a bare FastAPI route over TLS."""
    with running_fastapi(directory) as (port, context):

        def connect() -> http.client.HTTPConnection:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
            conn.connect()  # the handshake is not part of a request's latency (keep-alive)
            return conn

        return parallel_posts(connect, "/admission/validate", bodies, concurrency,
                              check=lambda answer: answer["response"]["allowed"], warm_up=100)


# -- the load loop the floors share ----------------------------------------------------------

def parallel_posts(connect: Any, path: str, bodies: list[bytes], concurrency: int, *,
                   check: Any, warm_up: int = 0) -> dict[str, Any]:
    """POST every body once over ``concurrency`` keep-alive connections (after ``warm_up``
    untimed ones); latency summary, requests per second and the answers ``check`` refused."""
    shares = [bodies[i::concurrency] for i in range(concurrency)]
    latencies: list[float] = []
    refused = 0
    lock = threading.Lock()

    def post(conn: http.client.HTTPConnection, body: bytes) -> bool:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        return response.status == 200 and bool(check(json.loads(payload)))

    def worker(share: list[bytes]) -> None:
        nonlocal refused
        conn = connect()
        mine, failed = [], 0
        for body in share:
            started = time.perf_counter()
            failed += not post(conn, body)
            mine.append(time.perf_counter() - started)
        conn.close()
        with lock:
            latencies.extend(mine)
            refused += failed

    conn = connect()
    for body in bodies[:warm_up]:
        post(conn, body)
    conn.close()
    elapsed = run_workers(worker, [share for share in shares if share])
    summary = summarise(latencies)
    return {"requests": len(latencies), "errors": refused, "p50_ms": summary.p50 * 1000,
            "p99_ms": summary.p99 * 1000, "per_second": len(latencies) / elapsed}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-fastapi", type=int, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    options = parser.parse_args()
    serve_fastapi(options.serve_fastapi, options.cert, options.key)
