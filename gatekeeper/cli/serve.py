"""``gatekeeper serve``: the API in this process, or N worker processes sharing its listener.

With ``--workers 1`` (the default) the app runs in this process, as it always did. With
``--workers N`` this process becomes a supervisor (:mod:`gatekeeper.cli.supervisor`): it binds
the listener once and starts N workers (:func:`run_worker`) that accept on that one socket,
each with its own container: its own embedded OPA (or the shared ``GATEKEEPER_OPA_URL``), its
own audit writer on the one store, its own spool directory. What the workers share:

* the audit chain: every append locks the chain head in the database, so N writers (workers or
  replicas) extend one gap-free chain (see :mod:`gatekeeper.audit.sql`);
* the mutating -> validating decision hand-over: a SQLite file in the supervisor's private
  runtime directory (:class:`~gatekeeper.webhook.reuse_shared.SharedDecisionReuse`);
* one ``/metrics``: the supervisor merges the workers' registries
  (:mod:`gatekeeper.cli.worker_metrics`).

Only worker 0 runs the background compliance loop (one PolicyReport writer per replica, as
with one process).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gatekeeper.cli.common import fail, load_settings

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

    from gatekeeper.config import Settings

__all__ = ["run_worker", "serve", "worker_settings"]

log = logging.getLogger(__name__)

#: Seconds a stopping process waits for its open connections (see ``_uvicorn_options``).
_GRACEFUL_SHUTDOWN_SECONDS = 20.0


def _configure_logging(settings: Settings, prefix: str = "") -> None:
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s {prefix}%(name)s %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options every process serving the app uses (TLS, header deadline, uvloop
    and httptools)."""
    try:
        import httptools  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError as exc:
        fail(f"gatekeeper serve needs uvloop and httptools (dependencies of the package: "
             f"reinstall it): {exc}")
    from gatekeeper.api.server import header_deadline_protocol

    options: dict[str, Any] = {}
    base = None
    if settings.tls_cert_file or settings.tls_key_file:
        if not (settings.tls_cert_file and settings.tls_key_file):
            fail("GATEKEEPER_TLS_CERT_FILE and GATEKEEPER_TLS_KEY_FILE go together")
        from gatekeeper.webhook.tls import ClientCertificateProtocol, ReloadingServerContext

        tls = ReloadingServerContext(
            settings.tls_cert_file, settings.tls_key_file,
            client_ca_file=settings.tls_client_ca_file,
            check_interval=settings.tls_reload_interval_seconds,
        )
        options["ssl_context_factory"] = lambda _config, _default: tls.context
        # Tells the app whether the peer presented a verified client certificate.
        base = ClientCertificateProtocol
    options["http"] = header_deadline_protocol(settings.http_header_timeout_seconds, base)
    # uvloop's event loop and TLS transport and httptools' parser (C), both pinned dependencies:
    # asyncio's pure-Python TLS and h11 cost as much CPU per admission as the review itself.
    options["loop"] = "uvloop"
    # A connection still open this long after SIGTERM is dropped: an idle TLS keep-alive whose
    # client never reads (so never answers close_notify) would otherwise hold the process for
    # asyncio's 30 s SSL shutdown timeout, past the supervisor's stop timeout and close to
    # the chart's terminationGracePeriodSeconds. Longer than any admission (webhook timeout
    # <= 30 s is the API server's own limit; the default is 10 s).
    # No access log: at level warning its lines were never written, but uvicorn still built
    # them for every request.
    return {"log_level": "warning", "access_log": False, "timeout_keep_alive": 5,
            "timeout_graceful_shutdown": _GRACEFUL_SHUTDOWN_SECONDS, **options}


def _announce(settings: Settings) -> None:
    tls = bool(settings.tls_cert_file or settings.tls_key_file)
    url = f"{'https' if tls else 'http'}://{settings.host}:{settings.port}"
    if settings.insecure_disable_auth:
        typer.echo(
            "WARNING: authentication is DISABLED (GATEKEEPER_INSECURE_DISABLE_AUTH=true): every "
            "caller is admin; never run this in production", err=True,
        )
    workers = f" with {settings.workers} workers" if settings.workers > 1 else ""
    typer.echo(f"Forge Gatekeeper serving on {url}{workers} (API docs: /docs)")


def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default 8000)")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Processes sharing the listener, each with its own embedded OPA "
                     "(default 1; GATEKEEPER_WORKERS)"),
    ] = None,
) -> None:
    """Run the API (and the embedded OPA, unless GATEKEEPER_OPA_URL is set)."""
    settings = load_settings(host=host, port=port, workers=workers)
    _configure_logging(settings)
    if settings.workers > 1:
        from gatekeeper.cli.supervisor import WorkerSupervisor

        options = _uvicorn_options(settings)  # checks the TLS settings before any worker starts
        del options
        supervisor = WorkerSupervisor(settings, overrides={"host": host, "port": port,
                                                          "workers": workers})
        supervisor.bind()
        _announce(settings)
        raise typer.Exit(supervisor.run())
    import uvicorn
    from prometheus_client import start_http_server

    from gatekeeper.app import create_app
    from gatekeeper.wiring import build_container

    container = build_container(settings)
    application = create_app(settings, container=container)
    if settings.metrics_port:
        start_http_server(
            settings.metrics_port, addr=settings.host, registry=container.metrics.registry
        )
        typer.echo(f"metrics on http://{settings.host}:{settings.metrics_port}/metrics")
    options = _uvicorn_options(settings)
    _announce(settings)
    uvicorn.run(application, host=settings.host, port=settings.port, **options)


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker ``index``'s settings: its own spool and policy state directories (a spool is one
    writer's file), and the background loop in worker 0 only."""
    updates: dict[str, Any] = {}
    if index > 0:
        updates["audit_spool_dir"] = settings.audit_spool_dir / f"worker-{index}"
        updates["background_enabled"] = False
    if settings.policy_state_dir is not None:
        updates["policy_state_dir"] = settings.policy_state_dir / f"worker-{index}"
    return settings.with_overrides(**updates) if updates else settings


async def _serve_until_stopped(server: Any, listener: socket.socket, ready: Event) -> None:
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        ready.set()
    await task


def run_worker(
    index: int, overrides: dict[str, Any], listener: socket.socket, runtime_dir: str,
    ready: Event,
) -> None:
    """A worker process's body (started by the supervisor, spawn context)."""
    import uvicorn

    from gatekeeper.app import create_app
    from gatekeeper.cli.worker_metrics import WorkerMetricsExporter, worker_metrics_socket
    from gatekeeper.webhook.reuse_shared import SharedDecisionReuse
    from gatekeeper.wiring import build_container

    settings = worker_settings(load_settings(**overrides), index)
    _configure_logging(settings, prefix=f"[worker {index}] ")
    runtime = Path(runtime_dir)
    reuse = SharedDecisionReuse(
        runtime / "decision-reuse.sqlite3",
        ttl_seconds=settings.admission_reuse_ttl_seconds,
        max_entries=settings.admission_reuse_max_entries,
    )
    container = build_container(settings)
    exporter = (
        WorkerMetricsExporter(worker_metrics_socket(runtime, index), container.metrics.registry)
        if settings.metrics_port else None
    )
    application = create_app(settings, container=container, decision_reuse=reuse)
    config = uvicorn.Config(application, **_uvicorn_options(settings))
    server = uvicorn.Server(config)
    try:
        # on the loop the options name (uvloop), as uvicorn.run would
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(_serve_until_stopped(server, listener, ready))
    finally:
        if exporter is not None:
            exporter.close()
        reuse.close()
