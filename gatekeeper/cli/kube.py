"""``gatekeeper webhooks register|unregister`` and ``gatekeeper certs ensure``: what the chart's
hook Jobs run, in the gatekeeper image (no kubectl, no shell), against the API server with the
Pod's service-account token.

Defaults are the in-cluster ones: ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``
and the service-account mount (token, CA, namespace); every one can be given instead.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gatekeeper.cli.common import command_group, fail

if TYPE_CHECKING:
    from gatekeeper.tool_wiring import KubeClient

__all__ = ["certs_app", "webhooks_app"]

ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")

webhooks_app = command_group(
    "Register, remove or probe the webhook configurations (chart hook Jobs, helm test).")
certs_app = command_group(
    "Create or renew the generated serving certificate (chart hook Job).")



@certs_app.callback()
def _certs() -> None:
    """A group even with one command: ``gatekeeper certs ensure``."""


ApiServerOption = Annotated[str | None, typer.Option(
    "--api-server", metavar="URL",
    help="API server URL (default: in-cluster, KUBERNETES_SERVICE_HOST/PORT)")]
TokenFileOption = Annotated[Path, typer.Option(
    "--token-file", metavar="PATH", help="Bearer token file (default: the service account's)")]
ApiCaOption = Annotated[Path, typer.Option(
    "--api-ca-file", metavar="PATH", help="CA of the API server (default: the service account's)")]
NamespaceOption = Annotated[str | None, typer.Option(
    "--namespace", "-n", metavar="NAME", help="Namespace (default: the Pod's own)")]


def _client(api_server: str | None, token_file: Path, api_ca_file: Path) -> KubeClient:
    from gatekeeper.tool_wiring import build_kube_client

    if api_server is None:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            fail("--api-server is required outside a Pod (KUBERNETES_SERVICE_HOST is not set)")
        api_server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    if not api_ca_file.is_file():
        fail(f"--api-ca-file {api_ca_file}: no such file")
    return build_kube_client(api_server, token_file=token_file, ca_file=api_ca_file)


def _namespace(namespace: str | None) -> str:
    if namespace:
        return namespace
    try:
        return (ACCOUNT / "namespace").read_text(encoding="utf-8").strip()
    except OSError:
        fail("--namespace is required outside a Pod (no service-account namespace file)")


@webhooks_app.command("register")
def register_command(
    manifest: Annotated[Path, typer.Option(
        "--manifest", metavar="FILE",
        help="YAML of the Validating/MutatingWebhookConfigurations (caBundle is filled in)")],
    service: Annotated[str, typer.Option(
        "--service", metavar="NAME", help="The gatekeeper's Service (readiness is asked there)")],
    ca_secret: Annotated[str | None, typer.Option(
        "--ca-secret", metavar="NAME", help="Secret whose ca.crt becomes the caBundle")] = None,
    ca_bundle_file: Annotated[Path | None, typer.Option(
        "--ca-bundle-file", metavar="PATH", help="PEM file that becomes the caBundle")] = None,
    ready_url: Annotated[str | None, typer.Option(
        "--ready-url", metavar="URL",
        help="Readiness URL (default: https://<Service clusterIP>:<https port>/readyz)")] = None,
    server_name: Annotated[str | None, typer.Option(
        "--server-name", metavar="NAME",
        help="Name the serving certificate is checked for (default: <service>.<namespace>.svc, "
             "or the host of --ready-url)")
    ] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", metavar="SECONDS", help="How long to wait for a ready gatekeeper")] = 300.0,
    namespace: NamespaceOption = None,
    api_server: ApiServerOption = None,
    token_file: TokenFileOption = ACCOUNT / "token",
    api_ca_file: ApiCaOption = ACCOUNT / "ca.crt",
) -> None:
    """Wait for a ready gatekeeper, then create or update its webhook configurations."""
    import base64

    import yaml

    from gatekeeper.errors import InvalidInputError
    from gatekeeper.tool_wiring import register, wait_ready, webhook_documents

    if (ca_secret is None) == (ca_bundle_file is None):
        fail("give exactly one of --ca-secret and --ca-bundle-file")
    try:
        documents = webhook_documents(yaml.safe_load_all(manifest.read_text(encoding="utf-8")))
    except OSError as exc:
        fail(f"--manifest {manifest}: {exc.strerror}")
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"--manifest {manifest} is not YAML: {exc}") from exc
    namespace = _namespace(namespace)
    with _client(api_server, token_file, api_ca_file) as client:
        if ca_bundle_file is not None:
            try:
                ca_pem = ca_bundle_file.read_bytes()
            except OSError as exc:
                fail(f"--ca-bundle-file {ca_bundle_file}: {exc.strerror}")
        else:
            secret = client.get(f"/api/v1/namespaces/{namespace}/secrets/{ca_secret}")
            encoded = ((secret or {}).get("data") or {}).get("ca.crt")
            if not encoded:
                fail(f"Secret {namespace}/{ca_secret} "
                     f"{'has no ca.crt' if secret else 'does not exist'}")
            ca_pem = base64.b64decode(encoded)
        if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
            fail("the caBundle is not a PEM certificate")
        if ready_url is None:
            found = client.get(f"/api/v1/namespaces/{namespace}/services/{service}")
            if found is None:
                fail(f"Service {namespace}/{service} does not exist")
            ports = found["spec"].get("ports") or []
            port = next((p["port"] for p in ports if p.get("name") == "https"),
                        ports[0]["port"] if ports else 443)
            address = str(found["spec"].get("clusterIP") or "")
            if not address or address == "None":
                fail(f"Service {namespace}/{service} has no cluster IP to ask for /readyz")
            host = f"[{address}]" if ":" in address else address
            ready_url = f"https://{host}:{port}/readyz"
            server_name = server_name or f"{service}.{namespace}.svc"
        typer.echo(f"waiting for a ready gatekeeper at {ready_url}", err=True)
        wait_ready(ready_url, ca_pem, server_name=server_name, timeout=timeout)
        for done in register(client, documents, ca_pem):
            typer.echo(f"{done.action} {done.kind}/{done.name}")


@webhooks_app.command("unregister")
def unregister_command(
    name: Annotated[str, typer.Option(
        "--name", metavar="NAME", help="Name of the two webhook configurations")],
    delete_secrets: Annotated[list[str] | None, typer.Option(
        "--delete-secret", metavar="NAME", help="Also delete this Secret (repeat)")] = None,
    namespace: NamespaceOption = None,
    api_server: ApiServerOption = None,
    token_file: TokenFileOption = ACCOUNT / "token",
    api_ca_file: ApiCaOption = ACCOUNT / "ca.crt",
) -> None:
    """Delete the validating and mutating webhook configurations called NAME (and, with
    --delete-secret, Secrets the chart's hooks created outside the release)."""
    from gatekeeper.tool_wiring import unregister

    with _client(api_server, token_file, api_ca_file) as client:
        for done in unregister(client, name):
            typer.echo(f"{done.action} {done.kind}/{done.name}")
        if delete_secrets:
            namespace = _namespace(namespace)
            for secret in delete_secrets:
                gone = client.delete(f"/api/v1/namespaces/{namespace}/secrets/{secret}")
                typer.echo(f"{'deleted' if gone else 'absent'} Secret/{secret}")


@webhooks_app.command("probe")
def probe_command(
    url: Annotated[str, typer.Option(
        "--url", metavar="URL", help="The gatekeeper's /readyz (through its Service)")],
    ca_bundle_file: Annotated[Path, typer.Option(
        "--ca-bundle-file", metavar="PATH", help="PEM of the CA the serving certificate has")],
    server_name: Annotated[str | None, typer.Option(
        "--server-name", metavar="NAME", help="Name checked in the certificate (default: URL host)")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SECONDS")] = 60.0,
) -> None:
    """Wait until the gatekeeper answers 200 at URL over TLS verified with the CA (helm test)."""
    from gatekeeper.errors import UpstreamUnavailableError
    from gatekeeper.tool_wiring import wait_ready

    try:
        ca_pem = ca_bundle_file.read_bytes()
    except OSError as exc:
        fail(f"--ca-bundle-file {ca_bundle_file}: {exc.strerror}")
    try:
        wait_ready(url, ca_pem, server_name=server_name, timeout=timeout)
    except UpstreamUnavailableError as exc:
        fail(exc.message.replace("; webhook configurations not registered", ""), 1)
    typer.echo(f"ready: {url} answered 200 over verified TLS")


@certs_app.command("ensure")
def ensure_command(
    secret: Annotated[str, typer.Option(
        "--secret", metavar="NAME", help="kubernetes.io/tls Secret the gatekeeper mounts")],
    ca_secret: Annotated[str, typer.Option(
        "--ca-secret", metavar="NAME", help="Secret holding the CA and its key")],
    dns_names: Annotated[list[str], typer.Option(
        "--dns-name", metavar="NAME", help="A name of the certificate (repeat; first is CN)")],
    ca_days: Annotated[int, typer.Option("--ca-days", metavar="DAYS")] = 3650,
    certificate_days: Annotated[int, typer.Option("--certificate-days", metavar="DAYS")] = 365,
    renew_before_days: Annotated[int, typer.Option(
        "--renew-before-days", metavar="DAYS",
        help="Renew what expires within this many days")] = 30,
    webhook_name: Annotated[str | None, typer.Option(
        "--webhook-name", metavar="NAME",
        help="Webhook configurations whose caBundle follows a new CA")] = None,
    namespace: NamespaceOption = None,
    api_server: ApiServerOption = None,
    token_file: TokenFileOption = ACCOUNT / "token",
    api_ca_file: ApiCaOption = ACCOUNT / "ca.crt",
) -> None:
    """Create the CA and serving certificate Secrets when missing; renew before expiry."""
    from gatekeeper.tool_wiring import certificate_plan, ensure_certificate

    plan = certificate_plan(_namespace(namespace), secret, ca_secret, tuple(dns_names or ()),
                           ca_days, certificate_days, renew_before_days, webhook_name)
    plan.check()
    with _client(api_server, token_file, api_ca_file) as client:
        result = ensure_certificate(client, plan, datetime.now(UTC))
    expiry = result.not_after.strftime("%Y-%m-%dT%H:%M:%SZ") if result.not_after else "?"
    typer.echo(f"CA {result.ca}; certificate {result.certificate} (valid until {expiry}) "
               f"in Secret {plan.namespace}/{secret}")
    for name in result.webhooks_updated:
        typer.echo(f"caBundle updated in {name}")
