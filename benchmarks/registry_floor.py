"""The registry's share of a cold evaluation, measured in the benchmark's own run.

A cold evaluation of a cosign-signed and attested image cannot be faster than the registry
answering the requests it needs. :class:`FloorClient` makes exactly those requests with the
least client work Python allows (kept-alive ``http.client`` connections, one per thread, no
parsing beyond the manifests' layer digests, the blobs' sha256 checked as any verifier must),
in the most parallel order the protocol permits:

1. ``HEAD`` the tag (the digest everything else is named after);
2. at once: the ``sha256-<hex>.sig`` and ``sha256-<hex>.att`` manifests and the OCI referrers
   tag ``sha256-<hex>`` (404 on a registry without referrers);
3. each manifest's blobs, all at once, started the moment their manifest arrives.

Its median is the floor the gatekeeper's cold path is compared with: ``cold - floor`` is what
the gatekeeper itself adds (TLS-free loopback, same registry, same images, same run).
:func:`process_cpu_seconds` reads the CPU a process (and its threads) used, so the benchmark
can print what the registry spent per evaluation, the part of the floor no client can remove.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from benchmarks.common import proc_cpu

_MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
))


class FloorClient:
    """The requests of one cold cosign lookup, as cheaply and as concurrently as possible."""

    def __init__(self, registry: str, *, threads: int = 6) -> None:
        self._host, _, port = registry.partition(":")
        self._port = int(port or 80)
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="floor")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _request(self, method: str, path: str) -> tuple[int, http.client.HTTPResponse, bytes]:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=30)
            self._local.connection = connection
        connection.request(method, path, headers={"Accept": _MANIFEST_TYPES,
                                                  "User-Agent": "registry-floor"})
        response = connection.getresponse()
        body = response.read()
        return response.status, response, body

    def _manifest(self, repository: str, tag: str) -> list[str]:
        """The layer digests of a manifest; [] when the tag does not exist."""
        status, _, body = self._request("GET", f"/v2/{repository}/manifests/{tag}")
        if status == 404:
            return []
        if status != 200:
            raise RuntimeError(f"GET manifest {repository}:{tag}: HTTP {status}")
        return [layer["digest"] for layer in json.loads(body).get("layers", [])]

    def _blob(self, repository: str, digest: str) -> None:
        status, _, body = self._request("GET", f"/v2/{repository}/blobs/{digest}")
        if status != 200 or "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RuntimeError(f"GET blob {repository}@{digest}: HTTP {status} or wrong digest")

    def lookup(self, image: str) -> int:
        """Fetch what a cold evaluation of ``image`` (``host:port/repo:tag``) needs; returns
        the number of requests made."""
        repository, _, tag = image.partition("/")[2].rpartition(":")
        status, response, _ = self._request("HEAD", f"/v2/{repository}/manifests/{tag}")
        digest = response.getheader("Docker-Content-Digest") or ""
        if status != 200 or not digest.startswith("sha256:"):
            raise RuntimeError(f"HEAD {image}: HTTP {status}, digest {digest!r}")
        hexdigest = digest.removeprefix("sha256:")
        pending: set[Future[object]] = {
            self._pool.submit(self._manifest, repository, f"sha256-{hexdigest}{suffix}")
            for suffix in (".sig", ".att", "")
        }
        manifests = set(pending)
        requests = 1 + len(pending)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()
                if future in manifests:
                    for layer in result:  # type: ignore[attr-defined]
                        pending.add(self._pool.submit(self._blob, repository, layer))
                        requests += 1
        return requests


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    found = proc_cpu(Path(f"/proc/{pid}/stat"))
    if found is None:
        raise RuntimeError(f"process {pid} is gone")
    return found[2]


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and of every living descendant (the gatekeeper and its OPA)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = proc_cpu(entry / "stat")
            if found is not None:
                parents.setdefault(found[0], []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        found = proc_cpu(Path(f"/proc/{current}/stat"))
        total += found[2] if found is not None else 0.0
        todo.extend(parents.get(current, ()))
    return total


def pid_with_argument(argument: str) -> int:
    """The pid of the one running process whose command line contains ``argument``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in words:
            found.append(int(entry.name))
    if len(found) != 1:
        raise RuntimeError(f"expected one process with argument {argument!r}, found {found}")
    return found[0]
