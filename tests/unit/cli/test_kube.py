"""``gatekeeper certs|webhooks``: what they refuse before talking to any API server, and the
readiness probe's TLS check (a loopback HTTPS server; the API server side is in
tests/integration/test_kube_hooks.py)."""

from __future__ import annotations

import http.server
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gatekeeper.cli import app
from tests.helpers.net import serving_in_thread
from tests.unit.webhook.certificates import CertificateAuthority

API = ["--api-server", "https://127.0.0.1:1", "--token-file", "/nonexistent"]


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["certs", "ensure", "-n", "ns", "--secret", "t", "--ca-secret", "c", "--dns-name", "a",
          "--certificate-days", "20", *API],
         "error: --certificate-days (20) must exceed --renew-before-days (30): it would be "
         "renewed at every run"),
        (["certs", "ensure", "-n", "ns", "--secret", "t", "--ca-secret", "c", "--dns-name", "a",
          "--ca-days", "30", *API],
         "error: --ca-days (30) must exceed --renew-before-days (30)"),
        (["webhooks", "register", "--manifest", "m.yaml", "--service", "s", *API],
         "error: give exactly one of --ca-secret and --ca-bundle-file"),
        (["webhooks", "unregister", "--name", "gk"],
         "error: --api-server is required outside a Pod (KUBERNETES_SERVICE_HOST is not set)"),
        (["webhooks", "unregister", "--name", "gk", *API, "--api-ca-file", "/nonexistent.crt"],
         "error: --api-ca-file /nonexistent.crt: no such file"),
    ],
)
def test_bad_options_are_named(args: list[str], message: str) -> None:
    result = run(*args, env={"KUBERNETES_SERVICE_HOST": ""})
    assert result.exit_code == 2
    assert message in result.output, result.output


def test_an_api_ca_file_that_is_no_certificate_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.crt"
    bogus.write_text("not a certificate\n")
    result = run("webhooks", "unregister", "--name", "gk", *API, "--api-ca-file", str(bogus))
    assert result.exit_code == 2
    assert f"error: the API server CA {bogus} is not usable: " in result.output


def test_a_manifest_with_another_kind_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "webhooks.yaml"
    manifest.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")
    result = run("webhooks", "register", "--manifest", str(manifest), "--service", "s",
                 "--ca-bundle-file", str(manifest), *API)
    assert result.exit_code == 2
    assert ("error: document 0 is a Deployment, not a Validating/MutatingWebhookConfiguration"
            in result.output)


@pytest.fixture
def ready_server(tmp_path: Path) -> Iterator[tuple[str, CertificateAuthority]]:
    ca = CertificateAuthority(tmp_path)
    issued = ca.issue("gk.ns.svc", dns_names=("gk.ns.svc",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert_file, issued.key_file)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/readyz" else 503)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving_in_thread(server):
        yield f"https://127.0.0.1:{server.server_address[1]}", ca


def test_probe_answers_ready_only_over_tls_verified_for_the_service_name(
        ready_server: tuple[str, CertificateAuthority], tmp_path: Path) -> None:
    url, ca = ready_server
    ok = run("webhooks", "probe", "--url", f"{url}/readyz", "--server-name", "gk.ns.svc",
             "--ca-bundle-file", str(ca.cert_file), "--timeout", "5")
    assert ok.exit_code == 0, ok.output
    assert ok.output == f"ready: {url}/readyz answered 200 over verified TLS\n"

    wrong_name = run("webhooks", "probe", "--url", f"{url}/readyz", "--server-name",
                     "other.ns.svc", "--ca-bundle-file", str(ca.cert_file), "--timeout", "0")
    assert wrong_name.exit_code == 1
    assert f"error: gatekeeper not ready at {url}/readyz after 0s (" in wrong_name.output
    assert "CERTIFICATE_VERIFY_FAILED" in wrong_name.output

    other_ca = CertificateAuthority(tmp_path, "another-ca")
    wrong_ca = run("webhooks", "probe", "--url", f"{url}/readyz", "--server-name", "gk.ns.svc",
                   "--ca-bundle-file", str(other_ca.cert_file), "--timeout", "0")
    assert wrong_ca.exit_code == 1
    assert "CERTIFICATE_VERIFY_FAILED" in wrong_ca.output

    not_ready = run("webhooks", "probe", "--url", f"{url}/nope", "--server-name", "gk.ns.svc",
                    "--ca-bundle-file", str(ca.cert_file), "--timeout", "0")
    assert not_ready.exit_code == 1
    assert f"error: gatekeeper not ready at {url}/nope after 0s (HTTP 503: )" in not_ready.output
