"""The ``gatekeeper`` command line: parse, call the same service, print, exit with a code.

Exit codes of ``evaluate``: 0 allow or warn, 1 deny, 2 error (bad input, engine unavailable).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

from gatekeeper.cli_audit import audit_app
from gatekeeper.cli_policy import policy_app
from gatekeeper.config import Settings, load_settings
from gatekeeper.errors import GatekeeperError
from gatekeeper.sbom.cli import sbom_app

__all__ = ["app", "main"]

EXIT_ALLOWED, EXIT_DENIED, EXIT_ERROR = 0, 1, 2

app = typer.Typer(
    name="gatekeeper",
    help="Forge Gatekeeper: verify container images, decide with OPA Rego, record decisions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
decisions_app = typer.Typer(help="Read recorded decisions.", no_args_is_help=True)
app.add_typer(decisions_app, name="decisions")
app.add_typer(audit_app, name="audit")
app.add_typer(policy_app, name="policy")
app.add_typer(sbom_app, name="sbom")


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except GatekeeperError as exc:
        _fail(exc.render())


def _print_decision(document: dict[str, Any], output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    typer.echo(f"decision  {document['decision_id']}")
    typer.echo(
        f"verdict   {document['verdict'].upper()}  (environment {document['environment']}, "
        f"policy {document.get('policy_revision') or '-'})"
    )
    for image in document.get("images", []):
        typer.echo(f"image     {image['reference']}  digest {image.get('digest') or '-'}")
    for kind in ("violations", "warnings"):
        for item in document.get(kind, []):
            where = f" {item['image']}" if item.get("image") else ""
            typer.echo(f"{kind[:-1]:<9} [{item['policy']}]{where}: {item['message']}")


def _exit_for(document: dict[str, Any]) -> int:
    if document.get("error"):
        return EXIT_ERROR
    return EXIT_DENIED if document["verdict"] == "deny" else EXIT_ALLOWED


def _remote(method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    token = _settings().token  # GATEKEEPER_TOKEN: a bearer JWT; never printed
    if token is not None:
        kwargs["headers"] = {"Authorization": f"Bearer {token.get_secret_value()}"}
    try:
        response = httpx.request(method, url, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach gatekeeper at {url}: {exc}")
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        _fail(f"gatekeeper at {url} answered HTTP {response.status_code} without JSON")
    if response.status_code != 200:
        _fail(body.get("message") or f"HTTP {response.status_code}")
    return body


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default 8000)")] = None,
) -> None:
    """Run the API (and the embedded OPA, unless GATEKEEPER_OPA_URL is set)."""
    import uvicorn
    from prometheus_client import start_http_server

    from gatekeeper.app import create_app
    from gatekeeper.wiring import build_container

    settings = _settings(host=host, port=port)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        container = build_container(settings)
    except GatekeeperError as exc:
        _fail(exc.render())
    application = create_app(settings, container=container)
    if settings.metrics_port:
        start_http_server(
            settings.metrics_port, addr=settings.host, registry=container.metrics.registry
        )
        typer.echo(f"metrics on http://{settings.host}:{settings.metrics_port}/metrics")
    tls_options: dict[str, Any] = {}
    if settings.tls_cert_file or settings.tls_key_file:
        if not (settings.tls_cert_file and settings.tls_key_file):
            _fail("GATEKEEPER_TLS_CERT_FILE and GATEKEEPER_TLS_KEY_FILE go together")
        from gatekeeper.webhook.tls import ReloadingServerContext

        try:
            tls = ReloadingServerContext(
                settings.tls_cert_file, settings.tls_key_file,
                client_ca_file=settings.tls_client_ca_file,
                check_interval=settings.tls_reload_interval_seconds,
            )
        except GatekeeperError as exc:
            _fail(exc.render())
        tls_options["ssl_context_factory"] = lambda _config, _default: tls.context
    scheme = "https" if tls_options else "http"
    url = f"{scheme}://{settings.host}:{settings.port}"
    if settings.insecure_disable_auth:
        typer.echo(
            "WARNING: authentication is DISABLED (GATEKEEPER_INSECURE_DISABLE_AUTH=true): every "
            "caller is admin; never run this in production", err=True,
        )
    typer.echo(f"Forge Gatekeeper serving on {url} (API docs: /docs)")
    from gatekeeper.api.server import header_deadline_protocol

    uvicorn.run(application, host=settings.host, port=settings.port, log_level="warning",
                http=header_deadline_protocol(settings.http_header_timeout_seconds),
                timeout_keep_alive=5, **tls_options)


@app.command()
def evaluate(
    images: Annotated[list[str], typer.Argument(help="Image references to decide on")],
    environment: Annotated[str | None, typer.Option(help="Target environment")] = None,
    namespace: Annotated[str | None, typer.Option(help="Target namespace")] = None,
    ticket_id: Annotated[str | None, typer.Option("--ticket-id")] = None,
    plan_id: Annotated[str | None, typer.Option("--plan-id")] = None,
    intent_id: Annotated[str | None, typer.Option("--intent-id")] = None,
    deploy_id: Annotated[str | None, typer.Option("--deploy-id")] = None,
    output: Annotated[str, typer.Option(help="json or table")] = "table",
    server: Annotated[str | None, typer.Option(help="Ask a running gatekeeper at this URL")] = None,
) -> None:
    """Decide whether IMAGES may be deployed. Exit 0 allow/warn, 1 deny, 2 error."""
    if output not in ("json", "table"):
        _fail(f"--output must be json or table, not {output!r}")
    body: dict[str, Any] = {
        "images": images,
        "environment": environment,
        "namespace": namespace,
        "ticket": {
            "intent_id": intent_id, "plan_id": plan_id,
            "ticket_id": ticket_id, "deploy_id": deploy_id,
        },
    }
    if server:
        document = _remote("POST", f"{server.rstrip('/')}/v1/evaluations", json=body)
    else:
        document = _evaluate_in_process(body)
    _print_decision(document, output)
    raise typer.Exit(_exit_for(document))


def _evaluate_in_process(body: dict[str, Any]) -> dict[str, Any]:
    from pydantic import ValidationError

    from gatekeeper.api.models import EvaluationBody
    from gatekeeper.api.routes import parse_evaluation_body
    from gatekeeper.app import format_location
    from gatekeeper.wiring import build_container

    settings = _settings()
    try:
        parsed = EvaluationBody.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"{format_location(first['loc'])}: {first['msg']}")
    try:
        request = parse_evaluation_body(
            parsed,
            default_environment=settings.default_environment,
            max_images=settings.max_images_per_request,
            mode=settings.pipeline_mode,
        )
        container = build_container(settings)
        container.start()
        try:
            deadline = time.monotonic() + settings.evidence_budget_seconds
            return container.service.evaluate(request, deadline=deadline).as_dict()
        finally:
            container.stop()
    except GatekeeperError as exc:
        field = getattr(exc, "field", None)
        _fail(f"{field}: {exc.message}" if field else exc.render())


@decisions_app.command("show")
def show_decision(
    decision_id: Annotated[str, typer.Argument(help="Decision id")],
    output: Annotated[str, typer.Option(help="json or table")] = "json",
    server: Annotated[str | None, typer.Option(help="Ask a running gatekeeper at this URL")] = None,
) -> None:
    """Print a recorded decision."""
    if server:
        document = _remote("GET", f"{server.rstrip('/')}/v1/decisions/{decision_id}")
    else:
        from gatekeeper.audit import SqlAuditLog, create_database_engine

        settings = _settings()
        try:
            audit = SqlAuditLog(create_database_engine(settings.database_url))
            audit.migrate()
            document = audit.get(decision_id).as_dict()
        except GatekeeperError as exc:
            _fail(exc.render(), EXIT_DENIED if exc.kind == "not_found" else EXIT_ERROR)
    _print_decision(document, output)


@app.command("verify-bundle")
def verify_bundle_command(
    artifact: Annotated[
        str,
        typer.Argument(
            metavar="FILE_OR_DIGEST",
            help="sha256:<hex> or a file; for DSSE bundles the in-toto subject",
        ),
    ],
    bundle: Annotated[Path, typer.Option("--bundle", help="Sigstore bundle (JSON)")],
    certificate_identity: Annotated[
        str | None, typer.Option("--certificate-identity", help="Expected certificate SAN")
    ] = None,
    certificate_oidc_issuer: Annotated[
        str | None, typer.Option("--certificate-oidc-issuer", help="Expected OIDC issuer")
    ] = None,
    key: Annotated[Path | None, typer.Option("--key", help="PEM public key")] = None,
    trusted_root: Annotated[
        Path | None, typer.Option("--trusted-root", help="trusted_root.json")
    ] = None,
    staging: Annotated[bool, typer.Option("--staging", help="Sigstore staging root")] = False,
) -> None:
    """Verify a Sigstore bundle offline (the sigstore-conformance CLI protocol).

    Exit 0 verified, 1 rejected (reason on stderr), 2 usage error.
    """
    from gatekeeper.verify import verify_bundle_for_cli

    try:
        ok, reason = verify_bundle_for_cli(
            bundle_path=bundle,
            artifact=artifact,
            certificate_identity=certificate_identity,
            certificate_oidc_issuer=certificate_oidc_issuer,
            key_path=key,
            trusted_root_path=trusted_root,
            staging=staging,
        )
    except GatekeeperError as exc:
        _fail(exc.message)
    if not ok:
        typer.echo(f"rejected: {reason}", err=True)
        raise typer.Exit(EXIT_DENIED)
    typer.echo("verified")


@app.command("verify")
def verify_image(
    image: Annotated[str, typer.Argument(help="Image reference (tag or digest)")],
    authority: Annotated[
        list[str] | None, typer.Option("--authority", help="Only this authority (repeatable)")
    ] = None,
    environment: Annotated[str | None, typer.Option(help="Environment for the context")] = None,
) -> None:
    """Print the signature evidence of one image. Exit 0 verified, 1 not verified, 2 error."""
    from gatekeeper.domain import EvidenceContext, parse_image_reference
    from gatekeeper.metrics import Metrics
    from gatekeeper.wiring import build_registry_client, build_signature_collector

    settings = _settings()
    try:
        reference = parse_image_reference(image, field="IMAGE")
        registry = build_registry_client(settings)
        collector = build_signature_collector(settings, registry, Metrics())
        if collector is None:
            _fail("no signature authorities configured (setting: signatures)")
        context = EvidenceContext(
            environment or settings.default_environment,
            None,
            time.monotonic() + settings.evidence_budget_seconds,
        )
        digest = reference.digest or registry.resolve(reference, context)
        evidence = dict(collector.collect(reference, digest, context))
    except GatekeeperError as exc:
        _fail(exc.render())
    verified = bool(evidence.get("verified"))
    if authority:
        applying = evidence.get("authorities", {})
        unknown = sorted(set(authority) - set(applying))
        if unknown:
            _fail(
                f"authority {', '.join(unknown)} does not apply to {image} "
                f"(applies: {', '.join(sorted(applying)) or 'none'})"
            )
        evidence["authorities"] = {name: applying[name] for name in authority}
        verified = all(applying[name]["verified"] for name in authority)
    typer.echo(json.dumps(evidence, indent=2, sort_keys=True))
    if not verified:
        typer.echo(evidence.get("message", "not verified"), err=True)
    raise typer.Exit(EXIT_ALLOWED if verified else EXIT_DENIED)


def main() -> None:
    try:
        app()
    except GatekeeperError as exc:  # last line of defence: never a traceback for our errors
        typer.echo(f"error: {exc.render()}", err=True)
        sys.exit(EXIT_ERROR)
