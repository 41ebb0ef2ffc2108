"""Helpers shared by the benchmarks, once: percentiles and summary lines, timing loops (in
process and as a child process), a loopback ``docker-registry`` (optionally with its access log,
to count the requests a step makes), a ``gatekeeper serve`` child and a keep-alive load loop.

Every figure a benchmark prints comes from :func:`summarise`, so "p50" and "p99" mean the same
thing in every one of them (nearest rank on the sorted samples).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


# -- statistics ------------------------------------------------------------------------------

def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` 0..1) of ``samples`` (need not be sorted)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@dataclass(frozen=True)
class Summary:
    """Seconds: how many samples, their median, p90, p99, mean and best."""

    count: int
    p50: float
    p90: float
    p99: float
    mean: float
    best: float

    def line(self, label: str, *, width: int = 16) -> str:
        """``label n=.. p50=.. ms p90=.. ms p99=.. ms mean=.. ms`` (milliseconds)."""
        return (f"{label:<{width}} n={self.count:<4} p50={self.p50 * 1000:8.2f} ms  "
                f"p90={self.p90 * 1000:8.2f} ms  p99={self.p99 * 1000:8.2f} ms  "
                f"mean={self.mean * 1000:8.2f} ms")


def summarise(samples: Sequence[float]) -> Summary:
    return Summary(len(samples), percentile(samples, 0.50), percentile(samples, 0.90),
                   percentile(samples, 0.99), statistics.fmean(samples), min(samples))


def report(label: str, samples: Sequence[float], *, width: int = 16) -> float:
    """Print the summary line of ``samples``; return their median."""
    summary = summarise(samples)
    print(summary.line(label, width=width), flush=True)
    return summary.p50


def ratio(numerator: float, denominator: float) -> str:
    """``3.2x`` (or ``n/a`` when the denominator is zero)."""
    return f"{numerator / denominator:.1f}x" if denominator > 0 else "n/a"


# -- timing loops ----------------------------------------------------------------------------

def timed(step: Callable[[], object], runs: int) -> list[float]:
    """Wall time of ``runs`` calls of ``step``, in seconds."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        samples.append(time.perf_counter() - started)
    return samples


def run_process(arguments: Sequence[str], *, env: dict[str, str] | None = None,
                cwd: Path | None = None, expect: int | None = 0,
                timeout: float = 120) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Run ``arguments`` as a child; its wall time (start to exit) and result. Raises when the
    exit code is not ``expect`` (``None``: any), with the end of its stderr."""
    started = time.perf_counter()
    completed = subprocess.run(  # noqa: S603 - argv built by the benchmark
        list(arguments), env=env, cwd=cwd, capture_output=True, timeout=timeout, check=False)
    elapsed = time.perf_counter() - started
    if expect is not None and completed.returncode != expect:
        raise RuntimeError(
            f"{' '.join(arguments[:3])} exited {completed.returncode}, expected {expect}: "
            f"{completed.stderr.decode(errors='replace')[-1500:]}"
            f"{completed.stdout.decode(errors='replace')[-500:]}")
    return elapsed, completed


_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(stat: Path) -> tuple[int, str, float] | None:
    """``(parent pid, program, user + system CPU seconds)`` from a ``/proc/<pid>/stat`` or
    ``/proc/<pid>/task/<tid>/stat`` file; None when the process is gone."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    head, _, tail = text.rpartition(")")
    fields = tail.split()
    return int(fields[1]), head.partition("(")[2], (int(fields[11]) + int(fields[12])) / _TICKS


def children_cpu_seconds() -> float:
    """User + system CPU of the children that ended so far: with :func:`run_process`, a child's
    own CPU, which other load on a shared machine inflates far less than its wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_process(arguments: Sequence[str], runs: int, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, expect: int | None = 0) -> list[float]:
    """Wall times of ``runs`` runs of ``arguments`` (after one untimed run that warms the file
    cache and the ``.pyc`` files); every run must end as :func:`run_process` expects."""
    run_process(arguments, env=env, cwd=cwd, expect=expect)
    return [run_process(arguments, env=env, cwd=cwd, expect=expect)[0] for _ in range(runs)]


# -- loopback servers ------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(ready: Callable[[], bool], *, what: str, timeout: float = 60,
               process: subprocess.Popen[bytes] | None = None,
               log: Path | None = None) -> None:
    """Poll ``ready`` (exceptions count as not ready) until true; raise after ``timeout`` or
    when ``process`` exits first, with the end of ``log``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except OSError:
            pass
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} did not become ready: {tail}")
        time.sleep(0.05)


def http_status(host: str, port: int, path: str, *, method: str = "GET",
                context: ssl.SSLContext | None = None) -> int:
    if context is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, context=context, timeout=1)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=1)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None,
                     headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def stop(process: subprocess.Popen[bytes], *, timeout: float = 20) -> None:
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


_ACCESS_LINE = re.compile(
    r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3}) .*"([^"]*)"$')


@dataclass(frozen=True)
class RegistryRequest:
    method: str
    path: str
    status: int
    user_agent: str

    def kind(self) -> str:
        """``HEAD manifest 200``, ``GET blob 200``, ``GET referrers 404``...: what a request
        asks, without the repository and digest."""
        parts = self.path.split("?", 1)[0].rstrip("/").split("/")
        what = parts[-2] if len(parts) >= 2 else self.path
        if what == "manifests":
            tag = parts[-1]
            what = ("manifest .sig" if tag.endswith(".sig") else
                    "manifest .att" if tag.endswith(".att") else
                    "manifest sha256-tag" if tag.startswith("sha256-") else "manifest")
        elif what == "blobs":
            what = "blob"
        elif what == "referrers":
            what = "referrers"
        return f"{self.method} {what} {self.status}"


class AccessLog:
    """The registry's access log (combined format, one line per request, written when the
    response is done): :meth:`mark` before a step, :meth:`since` after it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _lines(self) -> list[str]:
        return self.path.read_text(errors="replace").splitlines() if self.path.exists() else []

    def mark(self) -> int:
        return len(self._settled())

    def _settled(self) -> list[str]:
        # The line is written after the response went out: wait until the count stops moving.
        lines = self._lines()
        while True:
            time.sleep(0.15)
            again = self._lines()
            if len(again) == len(lines):
                return again
            lines = again

    def since(self, mark: int, *, agent: str | None = None) -> list[RegistryRequest]:
        """Requests logged after ``mark`` (those whose User-Agent contains ``agent``)."""
        requests = []
        for line in self._settled()[mark:]:
            match = _ACCESS_LINE.search(line)
            if match and (agent is None or agent in match.group(4)):
                requests.append(RegistryRequest(match.group(1), match.group(2),
                                                int(match.group(3)), match.group(4)))
        return requests


def describe_requests(requests: Sequence[RegistryRequest], per: int) -> str:
    """``7.0 (GET manifest .sig 200 x1, ...)``: requests per step, by kind."""
    kinds = Counter(request.kind() for request in requests)
    listed = ", ".join(f"{kind} x{count / per:g}" for kind, count in sorted(kinds.items()))
    return f"{len(requests) / per:.1f} ({listed})"


@contextmanager
def running_registry(directory: Path, *, access_log: bool = False) -> Iterator[str]:
    """Debian's ``docker-registry`` on a free loopback port, storage in ``directory``; yields
    ``127.0.0.1:PORT``. With ``access_log`` every request is logged to
    ``directory/access.log`` (read it with :class:`AccessLog`)."""
    port = free_port()
    config = directory / "registry.yml"
    disabled = "false" if access_log else "true"
    config.write_text(
        f"version: 0.1\nlog: {{level: error, accesslog: {{disabled: {disabled}}}}}\n"
        f"storage: {{filesystem: {{rootdirectory: {directory / 'storage'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}, secret: bench-only}}\n")
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    # distribution 2.8 writes the access log to stdout, its own log to stderr
    with (directory / "access.log").open("wb") as stdout, \
            (directory / "registry.log").open("wb") as stderr:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=stdout, stderr=stderr)
    try:
        wait_until(lambda: http_status("127.0.0.1", port, "/v2/") == 200,
                   what="docker-registry", process=process, log=directory / "registry.log")
        yield f"127.0.0.1:{port}"
    finally:
        stop(process, timeout=10)


def gatekeeper_env(tmp: str | Path) -> dict[str, str]:
    """The settings a benchmark's gatekeeper runs with: SQLite, spool and policy state under
    ``tmp``, the shipped policies, no auth, no metrics listener, warnings only."""
    return {
        "GATEKEEPER_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
        "GATEKEEPER_POLICY_DIR": str(REPO / "policies"),
        "GATEKEEPER_METRICS_PORT": "0",
        "GATEKEEPER_LOG_LEVEL": "WARNING",
        "GATEKEEPER_INSECURE_DISABLE_AUTH": "true",
        "GATEKEEPER_AUDIT_SPOOL_DIR": f"{tmp}/spool",
        "GATEKEEPER_POLICY_STATE_DIR": f"{tmp}/policy-state",
    }


@contextmanager
def running_gatekeeper(extra_env: dict[str, str] | None = None) -> Iterator[int]:
    """``gatekeeper serve`` as a child on a free loopback port, SQLite in a temp dir."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env.update(gatekeeper_env(tmp))
        env.setdefault("GATEKEEPER_OPA_BINARY", str(REPO / ".tools/bin/opa"))
        env.update(extra_env or {})
        log = Path(tmp) / "gatekeeper.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "gatekeeper", "serve", "--port", str(port)],
                env=env, stdout=subprocess.DEVNULL, stderr=output,
            )
        try:
            wait_until(lambda: http_status("127.0.0.1", port, "/readyz") == 200,
                       what="gatekeeper", process=process, log=log)
            yield port
        finally:
            stop(process)


@contextmanager
def serving_in_process(config_file: Path, tmp: Path) -> Iterator[tuple[int, Any]]:
    """The production app (``create_app``) in this process under uvicorn, as ``gatekeeper
    serve`` runs it, with :func:`gatekeeper_env` under ``tmp``: its port and the app."""
    import uvicorn

    os.environ.update(gatekeeper_env(tmp), GATEKEEPER_CONFIG=str(config_file))
    os.environ.setdefault("GATEKEEPER_OPA_BINARY", str(REPO / ".tools/bin/opa"))
    from gatekeeper.app import create_app
    from gatekeeper.cli.serve import _uvicorn_options
    from gatekeeper.config import load_settings

    settings = load_settings()
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           **_uvicorn_options(settings)))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: http_status("127.0.0.1", port, "/readyz") == 200, what="gatekeeper")
        yield port, app
    finally:
        server.should_exit = True
        thread.join(30)


def run_workers(worker: Callable[[Any], None], shares: Sequence[Any]) -> float:
    """``worker(share)`` on one thread per share, all started together; seconds until the last
    one ends."""
    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def post_json(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    """One POST over a kept-alive connection: status and body."""
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def load(port: int, path: str, body: dict[str, object], *, concurrency: int, requests: int,
         expect: int = 200) -> dict[str, float]:
    """Send ``requests`` POSTs over ``concurrency`` keep-alive connections; latency figures."""
    payload = json.dumps(body).encode()
    latencies: list[float] = []
    lock = threading.Lock()
    per_worker = requests // concurrency
    errors = 0

    def worker(_share: object) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for _ in range(per_worker):
            started = time.perf_counter()
            status, _ = post_json(conn, path, payload)
            mine.append(time.perf_counter() - started)
            if status != expect:
                errors += 1
        with lock:
            latencies.extend(mine)

    elapsed = run_workers(worker, range(concurrency))
    summary = summarise(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": summary.p50 * 1000,
        "p99_ms": summary.p99 * 1000,
        "per_second": len(latencies) / elapsed,
    }
