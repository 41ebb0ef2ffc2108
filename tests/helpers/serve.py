"""``gatekeeper serve`` as a real child process on loopback: started, awaited until ``/readyz``
answers 200 (failing at once, with the log's tail, if the process exits), and stopped."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers.net import free_port

__all__ = ["REPO", "ServedProcess", "gatekeeper_serve"]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ServedProcess:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def gatekeeper_serve(
    env: Mapping[str, str],
    log: Path,
    *,
    port: int | None = None,
    host: str | None = "127.0.0.1",
    scheme: str = "http",
    client: httpx.Client | None = None,
    cwd: Path | None = REPO,
    ready_timeout: float = 60,
) -> Iterator[ServedProcess]:
    """``python -m gatekeeper serve`` with ``env``, its output in ``log``.

    ``host=None`` leaves ``--host`` to the default; ``client`` (e.g. one trusting a test CA) asks
    ``/readyz`` instead of plain httpx. On exit the process is terminated (killed after 20 s).
    """
    port = port or free_port()
    command = [sys.executable, "-m", "gatekeeper", "serve", "--port", str(port)]
    if host is not None:
        command[4:4] = ["--host", host]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=cwd, env=dict(env), stdout=output, stderr=subprocess.STDOUT
        )
    url = f"{scheme}://127.0.0.1:{port}"
    get = client.get if client is not None else httpx.get
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                if get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (
                "gatekeeper serve did not become ready:\n" + log.read_text()[-3000:])
            time.sleep(0.2)
        yield ServedProcess(url, port, process, log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
