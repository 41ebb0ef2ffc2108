"""The chart's hook commands against the real kube-apiserver of ``scripts/test-cluster``.

``gatekeeper certs ensure``, ``gatekeeper webhooks register|unregister`` run as the chart's hook
Jobs run them: as the hook ServiceAccount (a token from ``kubectl create token``) bound to the
RBAC the chart renders, talking to the API server over HTTPS. What they did is read back with
kubectl. The "gatekeeper" whose /readyz the register command waits for is a local HTTPS server
serving the certificate from the Secret ``certs ensure`` created (the control plane has no node,
so ``--ready-url`` points at it instead of the Service's cluster IP).
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.integration.kube_cluster import (  # noqa: F401 - fixtures
    CHART,
    KUBE_VERSION,
    REPO,
    TOOLS,
    ControlPlane,
    control_plane,
)

pytestmark = [pytest.mark.integration, pytest.mark.kube]


@dataclass
class Release:
    cluster: ControlPlane
    namespace: str
    name: str
    tmp: Path
    api_server: str
    api_ca: Path
    manifest: Path

    def token(self, account: str) -> Path:
        path = self.tmp / f"{account}.token"
        path.write_text(self.cluster.kubectl(
            "create", "token", account, "-n", self.namespace, "--duration", "1h").stdout)
        return path

    def gatekeeper(self, *args: str, account: str | None = None) -> subprocess.CompletedProcess[str]:
        token = self.token(account or f"{self.name}-hooks")
        command = [sys.executable, "-m", "gatekeeper", *args, "--api-server", self.api_server,
                   "--token-file", str(token), "--api-ca-file", str(self.api_ca)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env,
                              check=False)

    def ensure(self, *extra: str, account: str | None = None
               ) -> subprocess.CompletedProcess[str]:
        names = [f"{self.name}.{self.namespace}.svc", self.name,
                 f"{self.name}.{self.namespace}"]
        args = ["certs", "ensure", "-n", self.namespace, "--secret", f"{self.name}-tls",
                "--ca-secret", f"{self.name}-ca", "--webhook-name", self.name, *extra]
        for name in names:
            args += ["--dns-name", name]
        return self.gatekeeper(*args, account=account)

    def register(self, ready_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.gatekeeper(
            "webhooks", "register", "-n", self.namespace, "--manifest", str(self.manifest),
            "--service", self.name, "--ca-secret", f"{self.name}-tls", "--ready-url", ready_url,
            "--server-name", f"{self.name}.{self.namespace}.svc", *extra)

    def secret(self) -> dict[str, bytes]:
        data = self.cluster.get("secret", f"{self.name}-tls", self.namespace)["data"]
        return {key: base64.b64decode(value) for key, value in data.items()}

    def ca_bundles(self) -> list[bytes]:
        bundles = []
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            document = json.loads(self.cluster.kubectl("get", kind, self.name, "-o", "json").stdout)
            bundles += [base64.b64decode(w["clientConfig"]["caBundle"])
                        for w in document["webhooks"]]
        return bundles


def _render(namespace: str, name: str) -> list[dict[str, Any]]:
    helm = os.environ.get("GATEKEEPER_HELM") or str(TOOLS / "helm")
    rendered = subprocess.run(
        [helm, "template", "gatekeeper", str(CHART), "--namespace", namespace,
         "--kube-version", KUBE_VERSION.removeprefix("v"),
         "--values", str(CHART / "ci" / "test-values.yaml"), "--set", f"fullnameOverride={name}",
         # Nothing else in the shared control plane is ever sent to these webhooks.
         "--set-json", 'admission.objectSelector={"matchLabels":{"gatekeeper-test/never":"x"}}'],
        capture_output=True, text=True, timeout=120, check=True)
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


@pytest.fixture
def release(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Release]:
    if not (Path(os.environ.get("GATEKEEPER_HELM") or TOOLS / "helm")).is_file():
        pytest.skip("helm is missing (GATEKEEPER_HELM; scripts/install-tools builds it)")
    namespace = control_plane.namespace("gk-hooks")
    name = f"gkh-{uuid.uuid4().hex[:6]}"
    docs = _render(namespace, name)
    # The hook Jobs' account and the renewal CronJob's, as the chart renders them.
    rbac = [d for d in docs if d["metadata"]["name"] in (f"{name}-hooks", f"{name}-certs")
            and d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                              "RoleBinding")]
    assert len(rbac) == 10, [d["kind"] for d in rbac]
    control_plane.apply(rbac)
    control_plane.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    (webhooks,) = [d for d in docs if d["kind"] == "ConfigMap"
                   and d["metadata"]["name"] == f"{name}-webhooks"]
    manifest = tmp_path / "webhooks.yaml"
    manifest.write_text(webhooks["data"]["webhooks.yaml"])
    kubeconfig = yaml.safe_load(control_plane.kubeconfig.read_text())
    cluster = kubeconfig["clusters"][0]["cluster"]
    if "certificate-authority-data" in cluster:
        api_ca = tmp_path / "api-ca.crt"
        api_ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    else:
        api_ca = Path(cluster["certificate-authority"])
    try:
        yield Release(control_plane, namespace, name, tmp_path, cluster["server"], api_ca,
                      manifest)
    finally:
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            control_plane.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        for kind in ("clusterrolebinding", "clusterrole"):
            control_plane.kubectl("delete", kind, f"{name}-hooks", f"{name}-certs",
                                  "--ignore-not-found", check=False)
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


class ReadyServer:
    """HTTPS on loopback answering 200 at /readyz with the certificate of the Secret."""

    def __init__(self, tmp: Path, secret: dict[str, bytes]) -> None:
        (tmp / "tls.crt").write_bytes(secret["tls.crt"])
        (tmp / "tls.key").write_bytes(secret["tls.key"])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp / "tls.crt", tmp / "tls.key")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200 if self.path == "/readyz" else 404)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/readyz"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_without_the_chart_role_the_api_server_refuses(release: Release) -> None:
    denied = release.gatekeeper("webhooks", "unregister", "--name", release.name,
                                account="nobody")
    assert denied.returncode == 2, denied
    assert denied.stdout == ""
    assert "HTTP 403" in denied.stderr
    assert ('cannot delete resource "validatingwebhookconfigurations" in API group '
            '"admissionregistration.k8s.io" at the cluster scope') in denied.stderr
    denied = release.gatekeeper("certs", "ensure", "-n", release.namespace, "--secret", "x",
                                "--ca-secret", "y", "--dns-name", "z", account="nobody")
    assert denied.returncode == 2
    assert f'cannot get resource "secrets" in API group "" in the namespace ' \
           f'"{release.namespace}"' in denied.stderr
    assert release.cluster.kubectl("get", "secrets", "-n", release.namespace,
                                   "-o", "name").stdout == ""


def test_the_chart_role_reaches_only_its_own_release(release: Release) -> None:
    other = f"other-{uuid.uuid4().hex[:6]}"
    release.cluster.apply({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": other}, "webhooks": []})
    try:
        denied = release.gatekeeper("webhooks", "unregister", "--name", other)
        assert denied.returncode == 2
        assert f'validatingwebhookconfigurations.admissionregistration.k8s.io "{other}" is ' \
               "forbidden" in denied.stderr
        assert other in release.cluster.kubectl("get", "validatingwebhookconfigurations").stdout
    finally:
        release.cluster.kubectl("delete", "validatingwebhookconfiguration", other, check=False)


def test_certificates_webhooks_rotation_and_removal(release: Release) -> None:
    name, namespace, kubectl = release.name, release.namespace, release.cluster.kubectl

    created = release.ensure()
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("CA created; certificate created (valid until ")
    assert created.stdout.rstrip().endswith(f"in Secret {namespace}/{name}-tls")
    assert kubectl("get", "secret", f"{name}-tls", "-n", namespace,
                   "-o", "jsonpath={.type}").stdout == "kubernetes.io/tls"
    first = release.secret()
    kept = release.ensure()
    assert kept.stdout.startswith("CA kept; certificate kept"), kept
    assert release.secret() == first

    # No ready gatekeeper: nothing is registered, and the Job fails saying why.
    closed = f"https://127.0.0.1:{_closed_port()}/readyz"
    refused = release.register(closed, "--timeout", "2")
    assert refused.returncode == 2
    assert f"error: gatekeeper not ready at {closed} after 2s" in refused.stderr
    assert "webhook configurations not registered" in refused.stderr
    missing = kubectl("get", "validatingwebhookconfigurations", name, check=False)
    assert missing.returncode == 1
    assert f'validatingwebhookconfigurations.admissionregistration.k8s.io "{name}" not found' \
        in missing.stderr

    # Without --ready-url it asks the Service (the chart's Role lets it read that one only).
    no_service = release.gatekeeper(
        "webhooks", "register", "-n", namespace, "--manifest", str(release.manifest),
        "--service", name, "--ca-secret", f"{name}-tls")
    assert no_service.returncode == 2
    assert no_service.stderr == f"error: Service {namespace}/{name} does not exist\n"

    server = ReadyServer(release.tmp, first)
    try:
        registered = release.register(server.url)
        assert registered.returncode == 0, registered.stderr
        assert registered.stdout == (f"created ValidatingWebhookConfiguration/{name}\n"
                                     f"created MutatingWebhookConfiguration/{name}\n")
        table = kubectl("get", "validatingwebhookconfigurations", name).stdout.splitlines()
        assert table[0].split() == ["NAME", "WEBHOOKS", "AGE"]
        assert table[1].split()[:2] == [name, "3"]
        assert release.ca_bundles() == [first["ca.crt"]] * 6
        again = release.register(server.url)
        assert again.stdout == (f"updated ValidatingWebhookConfiguration/{name}\n"
                                f"updated MutatingWebhookConfiguration/{name}\n")
    finally:
        server.close()

    # The serving certificate within the window: a new one from the same CA, caBundle unchanged.
    renewed = release.ensure("--certificate-days", "400", "--renew-before-days", "366")
    assert renewed.stdout.startswith("CA kept; certificate renewed"), renewed
    second = release.secret()
    assert second["ca.crt"] == first["ca.crt"] and second["tls.crt"] != first["tls.crt"]
    assert release.ca_bundles() == [first["ca.crt"]] * 6

    # The CA within the window: a new CA, trusted by the webhooks next to the old one before the
    # Secret the Pods mount changes.
    rotated = release.ensure("--ca-days", "4000", "--certificate-days", "4000",
                             "--renew-before-days", "3651")
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.startswith("CA rotated; certificate renewed"), rotated
    assert f"caBundle updated in ValidatingWebhookConfiguration/{name}" in rotated.stdout
    assert f"caBundle updated in MutatingWebhookConfiguration/{name}" in rotated.stdout
    third = release.secret()
    new_ca, old_ca = x509.load_pem_x509_certificates(third["ca.crt"])
    assert old_ca == x509.load_pem_x509_certificate(first["ca.crt"])
    x509.load_pem_x509_certificate(third["tls.crt"]).verify_directly_issued_by(new_ca)
    assert release.ca_bundles() == [third["ca.crt"]] * 6

    server = ReadyServer(release.tmp, third)
    try:
        assert release.register(server.url).returncode == 0
    finally:
        server.close()

    # The renewal CronJob's account renews the same way, and can do nothing else.
    renewal = f"{name}-certs"
    scheduled = release.ensure("--ca-days", "5000", "--certificate-days", "5000",
                               "--renew-before-days", "4001", account=renewal)
    assert scheduled.returncode == 0, scheduled.stderr
    assert scheduled.stdout.startswith("CA rotated; certificate renewed"), scheduled
    fourth = release.secret()
    assert x509.load_pem_x509_certificates(fourth["ca.crt"])[1] == new_ca
    assert release.ca_bundles() == [fourth["ca.crt"]] * 6
    refused = release.gatekeeper("webhooks", "unregister", "--name", name, account=renewal)
    assert refused.returncode == 2
    assert f'validatingwebhookconfigurations.admissionregistration.k8s.io "{name}" is ' \
           f'forbidden: User "system:serviceaccount:{namespace}:{renewal}" cannot delete' \
        in refused.stderr

    removed = release.gatekeeper("webhooks", "unregister", "--name", name, "-n", namespace,
                                 "--delete-secret", f"{name}-tls",
                                 "--delete-secret", f"{name}-ca")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == (f"deleted ValidatingWebhookConfiguration/{name}\n"
                              f"deleted MutatingWebhookConfiguration/{name}\n"
                              f"deleted Secret/{name}-tls\ndeleted Secret/{name}-ca\n")
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        assert name not in kubectl("get", kind).stdout
    assert kubectl("get", "secret", f"{name}-tls", "-n", namespace, check=False).returncode == 1
    twice = release.gatekeeper("webhooks", "unregister", "--name", name)
    assert twice.returncode == 0
    assert twice.stdout == (f"absent ValidatingWebhookConfiguration/{name}\n"
                            f"absent MutatingWebhookConfiguration/{name}\n")
