"""The embedded default policy engine: a supervised ``opa run --server`` child process.

The gatekeeper starts OPA on a unix socket in a private directory (no port to collide with,
not reachable from the network), waits until ``/health`` answers, restarts it with backoff if
it dies, and stops it on shutdown. OPA watches the policy directory (``--watch``), so a policy
file dropped in takes effect at once. The revision recorded with decisions is the one the
policy lifecycle last materialised and saw served (:class:`ServedRevision`); without a
lifecycle it is re-hashed from the same directory when a file's size or mtime changed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from gatekeeper.errors import ConfigurationError, PolicyEngineError
from gatekeeper.metrics import Metrics
from gatekeeper.policy.opa import OpaPolicyEngine
from gatekeeper.policy.opa_blocking import OpaConnectionPool
from gatekeeper.policy.opa_http import AsyncOpaConnectionPool
from gatekeeper.policy.revision import DirectoryRevision, ServedRevision

__all__ = ["EmbeddedOpa", "GoRuntime"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` making the OPA child die (SIGKILL) when the gatekeeper dies, even by
    ``kill -9``: Linux ``prctl(PR_SET_PDEATHSIG)``, see prctl(2). The signal follows the
    *thread* that forked, so OPA is spawned only from the thread that calls :meth:`start` (the
    server's main thread) or the supervising watchdog thread, both alive as long as the engine.
    If the parent died before prctl ran, the child exits at once. Elsewhere than Linux: None.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:  # runs in the child, between fork and exec: nothing but syscalls
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm

@dataclass(frozen=True, slots=True)
class GoRuntime:
    """The Go runtime settings of the OPA child (its ``GOGC`` and ``GOMAXPROCS``).

    Measured on the warm admission path (``benchmarks/bench_admission.py``, OPA CPU column):
    Go's defaults (GOGC 100, every core) spend a third of OPA's CPU per query in the garbage
    collector and in scheduling across cores; GOGC 400 on one core cuts it, for ~25 MB more
    resident memory. ``gomaxprocs`` 0 leaves Go's default (every core); so does ``gogc`` None.
    """

    gogc: int | None = 400
    gomaxprocs: int = 1

    def environment(self) -> dict[str, str]:
        """The variables to set in the child's environment (over the inherited ones)."""
        variables: dict[str, str] = {}
        if self.gogc is not None:
            variables["GOGC"] = str(self.gogc)
        if self.gomaxprocs > 0:
            variables["GOMAXPROCS"] = str(self.gomaxprocs)
        return variables


_READY_TIMEOUT = 15.0
_WATCH_INTERVAL = 0.5
_MAX_BACKOFF = 10.0


class EmbeddedOpa:
    """Owns the OPA child process and the :class:`OpaPolicyEngine` that talks to it."""

    def __init__(
        self,
        *,
        opa_binary: str,
        policy_dir: Path,
        metrics: Metrics | None = None,
        timeout: float = 2.0,
        data_paths: Sequence[Path] = (),
        go_runtime: GoRuntime = GoRuntime(),
    ) -> None:
        """``data_paths``: more directories OPA loads (and watches) beside ``policy_dir`` but
        outside its revision hash, e.g. the exceptions document ``data.gatekeeper.exceptions``
        that the policy lifecycle writes (see :mod:`gatekeeper.policy.exceptions`).
        ``go_runtime``: the child's ``GOGC``/``GOMAXPROCS`` (settings ``opa_gogc``,
        ``opa_gomaxprocs``)."""
        resolved = shutil.which(opa_binary) or (opa_binary if Path(opa_binary).is_file() else None)
        if resolved is None:
            raise ConfigurationError(
                f"OPA binary {opa_binary!r} not found: run scripts/install-tools or set "
                "GATEKEEPER_OPA_BINARY (or GATEKEEPER_OPA_URL for an external OPA)"
            )
        if not policy_dir.is_dir():
            raise ConfigurationError(f"policy directory {policy_dir} does not exist")
        if not any(policy_dir.rglob("*.rego")):
            raise ConfigurationError(f"policy directory {policy_dir} holds no .rego files")
        self._binary = resolved
        self._policy_dir = policy_dir.resolve()
        self._data_paths = tuple(path.resolve() for path in data_paths)
        self._metrics = metrics
        self._go_runtime = go_runtime
        self._workdir = Path(tempfile.mkdtemp(prefix="gatekeeper-opa-"))
        self._socket = self._workdir / "opa.sock"
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._lock = threading.Lock()
        transport = httpx.HTTPTransport(uds=str(self._socket))
        client = httpx.Client(transport=transport, base_url="http://opa", timeout=timeout)
        #: Set by the policy lifecycle (``on_revision``) once it materialised a revision.
        self.served_revision = ServedRevision(DirectoryRevision(self._policy_dir).current)
        socket = str(self._socket)

        def async_client() -> AsyncOpaConnectionPool:
            return AsyncOpaConnectionPool(unix_socket=socket, timeout=timeout)

        self.engine = OpaPolicyEngine(
            client,
            describe="embedded OPA",
            metrics=metrics,
            local_revision=self.served_revision.current,
            async_client=async_client,
            query_pool=OpaConnectionPool(unix_socket=socket, timeout=timeout),
        )

    @property
    def socket_path(self) -> Path:
        """The unix socket OPA serves on (for a second client, e.g. the policy lifecycle)."""
        return self._socket

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _spawn(self) -> None:
        self._socket.unlink(missing_ok=True)
        command = [
            self._binary, "run", "--server",
            "--addr", f"unix://{self._socket}",
            "--watch", "--skip-version-check",
            "--log-level", "error", "--log-format", "json",
            str(self._policy_dir),
            *(str(path) for path in self._data_paths),
        ]
        log.info("starting embedded OPA (%s): %s",
                 " ".join(f"{k}={v}" for k, v in self._go_runtime.environment().items())
                 or "Go defaults", " ".join(command))
        # OPA's log goes to a file, never a pipe: a full pipe would block the child.
        # The child inherits the gatekeeper's environment (not read as configuration here),
        # with the Go runtime settings over it.
        environment = {**os.environ, **self._go_runtime.environment()}
        with open(self._workdir / "opa.log", "ab") as log_file:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                env=environment,
                preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - see below
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            process = self._process
            if process is not None and process.poll() is not None:
                stderr = (self._workdir / "opa.log").read_text(errors="replace")[-2000:]
                raise PolicyEngineError(
                    f"embedded OPA exited with code {process.returncode} while starting: "
                    f"{stderr.strip()[:800]}"
                )
            try:
                self.engine.check_health()
                return
            except PolicyEngineError as exc:
                last_error = exc.message
            time.sleep(0.05)
        raise PolicyEngineError(
            f"embedded OPA not ready after {_READY_TIMEOUT:.0f}s: {last_error}"
        )

    def start(self) -> None:
        """Start OPA and wait until it serves; raise :class:`PolicyEngineError` if it cannot."""
        with self._lock:
            self._spawn()
            self._wait_ready()
        self._watchdog = threading.Thread(target=self._supervise, name="opa-watchdog", daemon=True)
        self._watchdog.start()

    def _supervise(self) -> None:
        backoff = 0.2
        while not self._stopping.wait(_WATCH_INTERVAL):
            process = self._process
            if process is None or process.poll() is None:
                backoff = 0.2
                continue
            log.error("embedded OPA died with code %s; restarting", process.returncode)
            if self._metrics is not None:
                self._metrics.opa_restarts.inc()
            try:
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self._spawn()
                    self._wait_ready()
            except PolicyEngineError as exc:
                log.error("restart of embedded OPA failed: %s", exc.message)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process = self._process
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        if self._watchdog is not None:
            self._watchdog.join(timeout=2)
        self.engine.close()
        shutil.rmtree(self._workdir, ignore_errors=True)
