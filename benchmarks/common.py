"""Small helpers shared by the benchmarks: a gatekeeper on loopback and a keep-alive load loop."""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_gatekeeper(extra_env: dict[str, str] | None = None) -> Iterator[int]:
    """``gatekeeper serve`` as a child on a free loopback port, SQLite in a temp dir."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env.update(
            GATEKEEPER_DATABASE_URL=f"sqlite:///{tmp}/bench.db",
            GATEKEEPER_POLICY_DIR=str(REPO / "policies"),
            GATEKEEPER_METRICS_PORT="0",
            GATEKEEPER_LOG_LEVEL="WARNING",
            GATEKEEPER_INSECURE_DISABLE_AUTH="true",
            GATEKEEPER_AUDIT_SPOOL_DIR=f"{tmp}/spool",
            GATEKEEPER_POLICY_STATE_DIR=f"{tmp}/policy-state",
        )
        env.setdefault("GATEKEEPER_OPA_BINARY", str(REPO / ".tools/bin/opa"))
        env.update(extra_env or {})
        process = subprocess.Popen(
            [sys.executable, "-m", "gatekeeper", "serve", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    conn.request("GET", "/readyz")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            else:
                raise RuntimeError("gatekeeper did not become ready")
            yield port
        finally:
            process.terminate()
            process.wait(timeout=20)


def load(port: int, path: str, body: dict[str, object], *, concurrency: int, requests: int,
         expect: int = 200) -> dict[str, float]:
    """Send ``requests`` POSTs over ``concurrency`` keep-alive connections; latency figures."""
    payload = json.dumps(body).encode()
    latencies: list[float] = []
    lock = threading.Lock()
    per_worker = requests // concurrency
    errors = 0

    def worker() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for _ in range(per_worker):
            started = time.perf_counter()
            conn.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status != expect:
                errors += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "per_second": len(latencies) / elapsed,
    }
