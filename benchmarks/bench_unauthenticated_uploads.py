"""Memory of a real ``gatekeeper serve`` under parallel unauthenticated uploads.

Run: .venv/bin/python -m benchmarks.bench_unauthenticated_uploads [--uploads 10] [--mb 30]
Sends ``--uploads`` parallel ``POST /v1/sboms`` of ``--mb`` MB each without a token and prints
the server's resident memory (VmRSS of the gatekeeper process) before, at its peak while the
uploads run (sampled every 20 ms), and after, plus how the uploads were answered. With the token
checked before the body is read, every upload is answered 401 at once and memory stays flat;
a server that buffers the body first grows by about uploads x size.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import free_port  # noqa: E402

SECRET = "benchmark-secret-of-at-least-32-bytes-long"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def upload(port: int, size: int, answers: list[str]) -> None:
    head = (
        f"POST /v1/sboms?image_digest=sha256:{'ab' * 32} HTTP/1.1\r\nHost: gatekeeper\r\n"
        f"Content-Type: application/vnd.cyclonedx+json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    chunk = b" " * (1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(head)
            sent = 0
            while sent < size:
                sock.sendall(chunk[: min(len(chunk), size - sent)])
                sent += min(len(chunk), size - sent)
        except OSError:
            pass  # the server answered and closed before the body was sent: what we want
        try:
            answers.append(sock.recv(64).split(b"\r\n", 1)[0].decode(errors="replace"))
        except OSError as exc:
            answers.append(f"no answer ({type(exc).__name__})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=10)
    parser.add_argument("--mb", type=int, default=30)
    arguments = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env.update(
            GATEKEEPER_DATABASE_URL=f"sqlite:///{tmp}/bench.db",
            GATEKEEPER_POLICY_DIR=str(REPO / "policies"), GATEKEEPER_METRICS_PORT="0",
            GATEKEEPER_LOG_LEVEL="WARNING", GATEKEEPER_AUTH_HS256_SECRET=SECRET,
            GATEKEEPER_AUDIT_SPOOL_DIR=f"{tmp}/spool",
            GATEKEEPER_POLICY_STATE_DIR=f"{tmp}/policy-state",
        )
        env.setdefault("GATEKEEPER_OPA_BINARY", str(REPO / ".tools/bin/opa"))
        process = subprocess.Popen(
            [sys.executable, "-m", "gatekeeper", "serve", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                        probe.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                        if b" 200 " in probe.recv(64):
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("gatekeeper did not become ready")
                time.sleep(0.2)
            time.sleep(1)
            before = rss_mib(process.pid)
            answers: list[str] = []
            threads = [threading.Thread(target=upload, args=(port, arguments.mb << 20, answers))
                       for _ in range(arguments.uploads)]
            peak = before
            started = time.monotonic()
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                peak = max(peak, rss_mib(process.pid))
                time.sleep(0.02)
            elapsed = time.monotonic() - started
            time.sleep(1)
            after = rss_mib(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=20)
    print(f"{arguments.uploads} parallel unauthenticated uploads of {arguments.mb} MB")
    print(f"answers: {sorted(set(answers))} in {elapsed:.2f} s")
    print(f"server RSS: before {before:.0f} MiB, peak {peak:.0f} MiB "
          f"(+{peak - before:.0f} MiB), after {after:.0f} MiB")


if __name__ == "__main__":
    main()
