"""The admission webhooks over real HTTPS: uvicorn on loopback with a self-signed certificate.

The app is the admission router on an EvaluationService built with fakes of the real ports;
the lead switches it to ``create_app(settings)`` once the router is mounted there.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from gatekeeper.webhook import AdmissionHandler, AdmissionSettings, build_admission_router
from gatekeeper.webhook.tls import (
    AdmissionClientCertificateGate,
    ClientCertificateProtocol,
    ReloadingServerContext,
)
from tests.unit.webhook.certificates import CertificateAuthority
from tests.unit.webhook.fakes import MemoryAuditLog, build_service, digest_of

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "admission"
API = "ghcr.io/acme/api:1.4"
UNSIGNED = 'no signature from authority "release"'
SERVICE_NAME = "gatekeeper.gatekeeper-system.svc"


@contextmanager
def serve_https(
    handler: AdmissionHandler, tls: ReloadingServerContext, *, client_certificates: bool = False
) -> Iterator[str]:
    """The admission router plus a ``/healthz`` probe on uvicorn, as ``gatekeeper serve`` runs
    them: with the client-certificate protocol, and the admission gate when a CA is required."""
    app = FastAPI()
    app.include_router(build_admission_router(handler))
    app.add_api_route("/healthz", lambda: {"status": "ok"})
    if client_certificates:
        app.add_middleware(AdmissionClientCertificateGate)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", http=ClientCertificateProtocol,
        ssl_context_factory=lambda _config, _default: tls.context,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        handler.close()


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path)


@pytest.fixture
def gatekeeper(ca: CertificateAuthority) -> Iterator[tuple[str, MemoryAuditLog]]:
    leaf = ca.issue("gatekeeper", dns_names=(SERVICE_NAME,), ip_addresses=("127.0.0.1",))
    tls = ReloadingServerContext(leaf.cert_file, leaf.key_file)
    service, audit = build_service(deny={API: UNSIGNED})
    with serve_https(AdmissionHandler(service, AdmissionSettings()), tls) as url:
        yield url, audit


def client_for(ca: CertificateAuthority, **kwargs: Any) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    if "cert" in kwargs:
        cert = kwargs.pop("cert")
        context.load_cert_chain(cert.cert_file, cert.key_file)
    return httpx.Client(verify=context, timeout=10, **kwargs)


def send(client: httpx.Client, url: str, name: str, path: str = "/admission/validate") -> Any:
    response = client.post(url + path, content=(ASSETS / f"{name}.json").read_bytes(),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()["response"]


EXPECTED_ALLOWED = {
    "deployment-create": False, "replicaset-create": False, "pod-create": False,
    "statefulset-create": False, "daemonset-create": True, "job-create": False,
    "cronjob-create": False, "replicationcontroller-create": True, "podtemplate-create": True,
    "rollout-create": False, "deployment-update": True, "pod-ephemeralcontainers-update": True,
    "configmap-create": True, "pod-delete": True, "pod-exec-connect": True,
    "pod-status-update": True, "deployment-scale-update": True, "pod-kube-system-create": True,
    "deployment-dryrun-create": False,
}


def test_every_review_document_is_answered_over_https(ca: CertificateAuthority, gatekeeper: tuple[str, MemoryAuditLog]) -> None:
    url, audit = gatekeeper
    assert sorted(EXPECTED_ALLOWED) == sorted(p.stem for p in ASSETS.glob("*.json"))
    with client_for(ca) as client:
        for name, allowed in EXPECTED_ALLOWED.items():
            uid = json.loads((ASSETS / f"{name}.json").read_text())["request"]["uid"]
            response = send(client, url, name)
            assert (response["uid"], response["allowed"]) == (uid, allowed), name
            if not allowed:
                assert response["status"]["code"] == 403
                assert f"({API}): {UNSIGNED} (decision " in response["status"]["message"]
                assert response["auditAnnotations"]["decision-id"] in {
                    d.decision_id for d in audit.records}


def test_mutation_over_https_pins_digests(ca: CertificateAuthority, gatekeeper: tuple[str, MemoryAuditLog]) -> None:
    url, _ = gatekeeper
    with client_for(ca) as client:
        response = send(client, url, "replicationcontroller-create", "/admission/mutate")
    assert response["allowed"] is True
    assert json.loads(base64.b64decode(response["patch"])) == [{
        "op": "replace", "path": "/spec/template/spec/containers/0/image",
        "value": "ghcr.io/acme/api@" + digest_of("ghcr.io/acme/api:latest"),
    }]


def test_v1beta1_review_is_a_clear_400_over_https(ca: CertificateAuthority, gatekeeper: tuple[str, MemoryAuditLog]) -> None:
    url, _ = gatekeeper
    document = json.loads((ASSETS / "pod-create.json").read_text())
    document["apiVersion"] = "admission.k8s.io/v1beta1"
    with client_for(ca) as client:
        response = client.post(url + "/admission/validate", json=document)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "apiVersion"


def test_hanging_registry_is_answered_before_the_api_server_gives_up(ca: CertificateAuthority) -> None:
    leaf = ca.issue("gatekeeper", dns_names=(SERVICE_NAME,), ip_addresses=("127.0.0.1",))
    service, _ = build_service(delay=5.0)
    handler = AdmissionHandler(
        service, AdmissionSettings(budget_seconds=0.5, webhook_timeout_seconds=1.0))
    with serve_https(handler, ReloadingServerContext(leaf.cert_file, leaf.key_file)) as url, \
            client_for(ca) as client:
        started = time.monotonic()
        response = send(client, url, "job-create")
        assert time.monotonic() - started < 1.0
    assert response["allowed"] is False and response["status"]["code"] == 504
    decision_id = response["auditAnnotations"]["decision-id"]
    assert response["status"]["message"] == (
        f"evaluation of spec.template.spec.containers[0].image ({API}) did not finish "
        f"(registry, verifier or policy engine) within the admission budget of 0.5s "
        f"(decision {decision_id})")


def _served_serial(url: str, ca: CertificateAuthority) -> int:
    from cryptography import x509

    host, port = url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    with socket.create_connection((host, int(port))) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_rotated_certificate_is_served_without_restart(ca: CertificateAuthority) -> None:
    first = ca.issue("gatekeeper", dns_names=(SERVICE_NAME,), ip_addresses=("127.0.0.1",))
    tls = ReloadingServerContext(first.cert_file, first.key_file, check_interval=0.05)
    service, _ = build_service()
    with serve_https(AdmissionHandler(service, AdmissionSettings()), tls) as url:
        assert _served_serial(url, ca) == first.serial
        time.sleep(0.02)  # a distinct mtime
        second = ca.issue("gatekeeper", dns_names=(SERVICE_NAME,), ip_addresses=("127.0.0.1",))
        time.sleep(0.1)
        assert _served_serial(url, ca) == second.serial
        with client_for(ca) as client:
            assert send(client, url, "daemonset-create")["allowed"] is True
    assert tls.reloads == 1


def test_broken_rotation_keeps_the_previous_certificate(ca: CertificateAuthority) -> None:
    first = ca.issue("gatekeeper", dns_names=(SERVICE_NAME,), ip_addresses=("127.0.0.1",))
    tls = ReloadingServerContext(first.cert_file, first.key_file, check_interval=0.05)
    service, _ = build_service()
    with serve_https(AdmissionHandler(service, AdmissionSettings()), tls) as url:
        first.cert_file.write_text("not a certificate")
        time.sleep(0.1)
        assert _served_serial(url, ca) == first.serial
    assert tls.reloads == 0


def test_client_certificate_is_required_for_admission_only(ca: CertificateAuthority, tmp_path: Path) -> None:
    leaf = ca.issue("gatekeeper", dns_names=(SERVICE_NAME,), ip_addresses=("127.0.0.1",))
    apiserver = ca.issue("kube-apiserver", client=True, stem="apiserver-client")
    tls = ReloadingServerContext(leaf.cert_file, leaf.key_file, client_ca_file=ca.cert_file)
    service, _ = build_service()
    with serve_https(AdmissionHandler(service, AdmissionSettings()), tls,
                     client_certificates=True) as url:
        with client_for(ca, cert=apiserver) as client:
            assert send(client, url, "daemonset-create")["allowed"] is True
        with client_for(ca) as anonymous:
            # Probes and the REST API connect without a certificate ...
            assert anonymous.get(url + "/healthz").json() == {"status": "ok"}
            # ... the admission endpoints refuse them, saying why.
            refused = anonymous.post(
                url + "/admission/validate", headers={"Content-Type": "application/json"},
                content=(ASSETS / "daemonset-create.json").read_bytes())
            assert refused.status_code == 403
            assert refused.json() == {"error": {
                "kind": "unauthenticated", "field": "tls",
                "message": "the admission endpoints require a client certificate signed by "
                           "GATEKEEPER_TLS_CLIENT_CA_FILE (the API server's)"}}
        # A certificate from another CA fails the handshake itself.
        (tmp_path / "other").mkdir()
        stranger = CertificateAuthority(tmp_path / "other", name="other-ca").issue(
            "intruder", client=True, stem="intruder")
        with client_for(ca, cert=stranger) as intruder, pytest.raises(httpx.HTTPError):
            intruder.get(url + "/healthz")


def test_admission_gate_fails_closed_without_the_certificate_protocol(ca: CertificateAuthority) -> None:
    """Served by a protocol that does not report the peer certificate: refused, not admitted."""
    leaf = ca.issue("gatekeeper", dns_names=(SERVICE_NAME,), ip_addresses=("127.0.0.1",))
    apiserver = ca.issue("kube-apiserver", client=True, stem="apiserver-client")
    tls = ReloadingServerContext(leaf.cert_file, leaf.key_file, client_ca_file=ca.cert_file)
    app = FastAPI()
    service, _ = build_service()
    app.include_router(build_admission_router(AdmissionHandler(service, AdmissionSettings())))
    app.add_middleware(AdmissionClientCertificateGate)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(
        app, log_level="warning", lifespan="off", http="h11",
        ssl_context_factory=lambda _config, _default: tls.context))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        with client_for(ca, cert=apiserver) as client:
            response = client.post(
                f"https://127.0.0.1:{sock.getsockname()[1]}/admission/validate",
                headers={"Content-Type": "application/json"},
                content=(ASSETS / "daemonset-create.json").read_bytes())
        assert response.status_code == 403
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
