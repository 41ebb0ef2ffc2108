"""``gatekeeper serve`` as a real child process on loopback, for tests and benchmarks that need
the real HTTP server (uvicorn, its protocol, the embedded OPA as a grandchild)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SECRET = "served-gatekeeper-secret-of-at-least-32-bytes"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Served:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def serve(workdir: Path, *, opa_binary: str, **env: str) -> Iterator[Served]:
    port = free_port()
    variables = {k: v for k, v in os.environ.items()
                 if not k.startswith("GATEKEEPER_") or k.startswith("GATEKEEPER_TEST_")}
    variables.update(
        PYTHONPATH=str(REPO), GATEKEEPER_SKIP_VENV="1",
        GATEKEEPER_DATABASE_URL=f"sqlite:///{workdir / 'audit.db'}",
        GATEKEEPER_OPA_BINARY=opa_binary,
        GATEKEEPER_POLICY_DIR=str(REPO / "policies"),
        GATEKEEPER_METRICS_PORT="0",
        GATEKEEPER_RESOLVE_DIGESTS="false",
        GATEKEEPER_AUTH_HS256_SECRET=SECRET,
        GATEKEEPER_AUDIT_SPOOL_DIR=str(workdir / "audit-spool"),
        GATEKEEPER_POLICY_STATE_DIR=str(workdir / "policy-state"),
    )
    variables.update(env)
    log_path = workdir / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gatekeeper", "serve", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=REPO, env=variables, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (
                log_path.read_text()[-3000:])
            time.sleep(0.2)
        yield Served(url, port, process, log_path)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
