"""The supervisor of ``gatekeeper serve --workers N`` (pre-fork over one inherited listener).

(1) Bind the listener once (the workers inherit it and accept on it: the kernel hands each
    connection to one of them). (2) Start worker 0 alone and wait until it serves: it migrates
    the stores, creates the embedded checkpoint key and bootstraps the shipped policies, so no
    two processes race through a first start. (3) Replay the spools of workers that a previous
    run had and this one does not (``--workers`` lowered), so no spooled decision is orphaned.
    (4) Start the other workers and wait until they serve. (5) Serve the merged ``/metrics``.
    (6) Restart a worker that dies (a worker that dies before it ever served, five times in a
    row, stops the whole server with exit code 1: a configuration error is not retried
    forever). (7) On SIGTERM or SIGINT forward SIGTERM to every worker: each stops accepting,
    finishes the requests it has (their decisions recorded), then exits; stragglers are killed
    after ``stop_timeout`` seconds.

Kubernetes' graceful termination works as with one process: the chart's ``preStop`` sleep
(``shutdownDelaySeconds``) keeps the Pod answering while the endpoints drop it, then SIGTERM
reaches this supervisor (PID 1) and step (7) runs within ``terminationGracePeriodSeconds``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from gatekeeper.cli.common import fail
from gatekeeper.config import Settings

__all__ = ["WorkerSupervisor"]

log = logging.getLogger(__name__)

_MAX_EARLY_DEATHS = 5
_POLL_SECONDS = 0.1


#: Longest unix socket path the kernel takes (108 bytes with its NUL, on Linux), with room for
#: ``metrics-63.sock``.
_SOCKET_PATH_ROOM = 90


def _runtime_directory() -> Path:
    """A private directory (mode 0700) for the workers' metrics sockets and decision hand-over:
    under TMPDIR, or under /tmp when TMPDIR is too long a path for a unix socket."""
    directory = Path(tempfile.mkdtemp(prefix="gatekeeper-workers-"))
    if len(str(directory)) > _SOCKET_PATH_ROOM:
        directory.rmdir()
        directory = Path(tempfile.mkdtemp(prefix="gk-workers-", dir="/tmp"))  # noqa: S108
    return directory


@dataclass
class _Worker:
    index: int
    process: SpawnProcess
    ready: Event
    served: bool = False


class WorkerSupervisor:
    """Binds, starts, watches and stops the workers (see the module)."""

    def __init__(
        self,
        settings: Settings,
        *,
        overrides: dict[str, Any],
        start_timeout: float = 300.0,
        stop_timeout: float = 25.0,
    ) -> None:
        self.settings = settings
        self._overrides = overrides
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._context = multiprocessing.get_context("spawn")
        self._listener: socket.socket | None = None
        self._runtime = _runtime_directory()
        self._workers: dict[int, _Worker] = {}
        self._stopping = False
        self._early_deaths = 0

    # (1)
    def bind(self) -> None:
        host, port = self.settings.host, self.settings.port
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            listener = socket.socket(family, kind, proto)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(2048)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        listener.set_inheritable(True)
        self._listener = listener

    def _start(self, index: int) -> _Worker:
        from gatekeeper.cli.serve import run_worker

        ready = self._context.Event()
        process = self._context.Process(
            target=run_worker, name=f"gatekeeper-worker-{index}",
            args=(index, self._overrides, self._listener, str(self._runtime), ready),
        )
        process.start()
        worker = _Worker(index, process, ready)
        self._workers[index] = worker
        log.info("worker %d started (pid %s)", index, process.pid)
        return worker

    def _wait_ready(self, workers: list[_Worker]) -> bool:
        deadline = time.monotonic() + self._start_timeout
        while not self._stopping and time.monotonic() < deadline:
            for worker in workers:
                if not worker.served and worker.ready.is_set():
                    worker.served = True
                    self._early_deaths = 0
                if not worker.served and not worker.process.is_alive():
                    log.error("worker %d exited with code %s before it served",
                              worker.index, worker.process.exitcode)
                    return False
            if all(worker.served for worker in workers):
                return True
            time.sleep(_POLL_SECONDS)
        if not self._stopping:
            log.error("workers not serving after %g s", self._start_timeout)
        return False

    # (3)
    def _replay_orphaned_spools(self) -> None:
        base = self.settings.audit_spool_dir
        count = self.settings.workers
        for directory in sorted(base.glob("worker-*")) if base.is_dir() else []:
            suffix = directory.name.removeprefix("worker-")
            if not suffix.isdigit() or int(suffix) < count:
                continue
            from gatekeeper.errors import GatekeeperError
            from gatekeeper.wiring import replay_spool

            try:
                waiting, why = replay_spool(self.settings, directory)
                if waiting:
                    log.error("%d decisions still wait in the spool %s of a former worker: %s",
                              waiting, directory, why)
            except GatekeeperError as exc:
                log.error("spool %s of a former worker not replayed: %s", directory,
                          exc.render())

    # (5)
    def _serve_metrics(self) -> None:
        if not self.settings.metrics_port:
            return
        from prometheus_client import start_http_server

        from gatekeeper.cli.worker_metrics import aggregated_registry, worker_metrics_socket

        sockets = [worker_metrics_socket(self._runtime, i) for i in range(self.settings.workers)]
        start_http_server(self.settings.metrics_port, addr=self.settings.host,
                          registry=aggregated_registry(sockets))
        log.info("metrics of %d workers on http://%s:%d/metrics", self.settings.workers,
                 self.settings.host, self.settings.metrics_port)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping the workers", signal.Signals(signum).name)
        self._stopping = True

    def run(self) -> int:
        """Serve until a signal (exit 0) or an unrecoverable worker failure (exit 1)."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._supervise()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._listener is not None:
                self._listener.close()
            shutil.rmtree(self._runtime, ignore_errors=True)

    def _supervise(self) -> int:
        # (2)
        if not self._wait_ready([self._start(0)]):
            return 0 if self._stopping else 1
        self._replay_orphaned_spools()
        # (4)
        if not self._wait_ready([self._start(i) for i in range(1, self.settings.workers)]):
            return 0 if self._stopping else 1
        self._serve_metrics()
        # on stdout, whatever the log level: scripts and tests wait for this line
        typer.echo(f"{self.settings.workers} workers serving")
        # (6)
        while not self._stopping:
            time.sleep(_POLL_SECONDS)
            for worker in list(self._workers.values()):
                if not worker.served and worker.ready.is_set():
                    worker.served = True
                    self._early_deaths = 0
                if worker.process.is_alive() or self._stopping:
                    continue
                log.error("worker %d (pid %s) exited with code %s; restarting it",
                          worker.index, worker.process.pid, worker.process.exitcode)
                if not worker.served:
                    self._early_deaths += 1
                    if self._early_deaths >= _MAX_EARLY_DEATHS:
                        log.error("worker %d died %d times before serving; giving up",
                                  worker.index, self._early_deaths)
                        return 1
                self._start(worker.index)
        return 0

    # (7)
    def _stop_all(self) -> None:
        if self._listener is not None:
            # the workers close their copies on SIGTERM; with ours closed too, connections
            # still queued are reset at once instead of waiting for an accept that never comes
            self._listener.close()
            self._listener = None
        for worker in self._workers.values():
            if worker.process.is_alive() and worker.process.pid is not None:
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout
        for worker in self._workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                log.error("worker %d did not stop within %g s; killing it", worker.index,
                          self._stop_timeout)
                worker.process.kill()
                worker.process.join(5)
