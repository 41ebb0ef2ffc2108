"""The workload's registry credentials (issue 13.6), against the real API server and a real
docker-registry that requires a login (htpasswd, started here on loopback).

A signed image lives in a registry nobody reaches anonymously; the gatekeeper itself has no
credentials for it. A Pod naming the pull secret is verified with it; a Pod without is denied,
naming why; a Deployment gets the secret from its ServiceAccount. The background scanner reads
the cluster as a ServiceAccount with the chart's rules plus get of secrets/serviceaccounts.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml

from gatekeeper.compliance import ComplianceScanner
from gatekeeper.domain import Verdict
from gatekeeper.kube.client import KubeClient
from gatekeeper.kube.pull_secrets import KubePullSecrets
from gatekeeper.kube.reports import KubeWorkloads
from gatekeeper.policy import EmbeddedOpa
from gatekeeper.registry import OciRegistryClient, RegistryClientSettings
from gatekeeper.registry.auth import DockerConfigCredentials
from gatekeeper.service import EvaluationService
from gatekeeper.verify import SignatureEvidenceCollector, SignaturePolicySettings, TrustRoot
from gatekeeper.webhook.scope import AdmissionSettings
from tests.fakes import FakeAuditLog
from tests.integration.cosign_fixtures import (
    _cosign_env,
    _offline_flags,
    build_oci_layout,
    cosign_binary,
    generate_key_pair,
    skopeo_binary,
)
from tests.integration.kube_cluster import (  # noqa: F401
    AUDIT_ONLY,
    REPO,
    ControlPlane,
    control_plane,
    service_account,
)

pytestmark = [pytest.mark.integration, pytest.mark.kube]

USER, PASSWORD = "puller", "s3cret-pull-password"  # noqa: S105 - a throwaway test login
RULES = [
    *yaml.safe_load((REPO / "charts/gatekeeper/files/background-rules.yaml").read_text()),
    *yaml.safe_load((REPO / "charts/gatekeeper/files/pull-secret-rules.yaml").read_text()),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def private_registry(tmp_path: Path) -> Iterator[str]:
    """docker-registry on loopback with htpasswd auth (bcrypt, as it requires)."""
    directory = tmp_path / "registry"
    (directory / "storage").mkdir(parents=True)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    (directory / "htpasswd").write_text(f"{USER}:{hashed}\n")
    port = _free_port()
    (directory / "config.yml").write_text(yaml.safe_dump({
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(directory / "storage")}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "gatekeeper-test-only"},
        "auth": {"htpasswd": {"realm": "gatekeeper-test", "path": str(directory / "htpasswd")}},
    }))
    log = (directory / "registry.log").open("wb")
    process = subprocess.Popen(["/usr/bin/docker-registry", "serve",
                                str(directory / "config.yml")],
                               stdout=log, stderr=subprocess.STDOUT)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://{host}/v2/", timeout=1).status_code == 401:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (directory / "registry.log").read_text()
            time.sleep(0.1)
        yield host
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _push_signed(host: str, tmp_path: Path) -> tuple[str, str, Path]:
    layout = tmp_path / "layout"
    build_oci_layout(layout, "private image")
    digest_file = tmp_path / "digest"
    subprocess.run([skopeo_binary(), "copy", "--quiet", "--dest-tls-verify=false",
                    "--dest-creds", f"{USER}:{PASSWORD}", "--digestfile", str(digest_file),
                    f"oci:{layout}", f"docker://{host}/team/private:1.0"],
                   check=True, capture_output=True, timeout=60)
    digest = digest_file.read_text().strip()
    cosign = cosign_binary("v2")
    keys = generate_key_pair(cosign, tmp_path / "keys")
    signed = subprocess.run(
        [cosign, "sign", "--key", str(keys.private), "--allow-http-registry", "--yes",
         *_offline_flags(cosign, tmp_path), "--registry-username", USER,
         "--registry-password", PASSWORD, f"{host}/team/private@{digest}"],
        capture_output=True, env=_cosign_env(), timeout=120, check=False)
    assert signed.returncode == 0, signed.stderr.decode()[-2000:]
    return f"{host}/team/private:1.0", digest, keys.public


def _client(cluster: ControlPlane, tmp_path: Path) -> KubeClient:
    server, token_file, ca_file = service_account(cluster, "gk-ps-system", RULES, tmp_path)
    return KubeClient(server, token_file=token_file, ca_file=ca_file)


def _pod(name: str, namespace: str, image: str, secrets: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": image}]}
    if secrets:
        spec["imagePullSecrets"] = [{"name": secret} for secret in secrets]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_private_registry_is_verified_only_with_the_workloads_pull_secret(
    control_plane: ControlPlane, private_registry: str, tmp_path: Path,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    image, digest, public_key = _push_signed(private_registry, tmp_path)
    namespace = control_plane.namespace("gk-ps", labels=AUDIT_ONLY)
    login = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    dockerconfig = {"auths": {private_registry: {"auth": login}}}
    control_plane.apply([
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
         "metadata": {"name": "regcred", "namespace": namespace},
         "data": {".dockerconfigjson": base64.b64encode(
             json.dumps(dockerconfig).encode()).decode()}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "builder", "namespace": namespace},
         "imagePullSecrets": [{"name": "regcred"}]},
        _pod("with-secret", namespace, image, ["regcred"]),
        _pod("without-secret", namespace, image, []),
        _pod("wrong-secret", namespace, image, ["absent"]),
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "through-account", "namespace": namespace},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                  "template": {"metadata": {"labels": {"app": "x"}},
                               "spec": {"serviceAccountName": "builder",
                                        "containers": [{"name": "app", "image": image}]}}}},
    ])
    opa = EmbeddedOpa(opa_binary=str(REPO / ".tools/bin/opa"), policy_dir=REPO / "policies")
    opa.start()
    registry = OciRegistryClient(RegistryClientSettings.from_mapping(
        {"hosts": [{"host": private_registry, "plain_http": True}], "max_retries": 0}))
    signatures = SignatureEvidenceCollector(
        SignaturePolicySettings.from_mapping({
            "authorities": [{"name": "release", "keys": [public_key.read_text()],
                             "tlog": False}],
            "images": [{"glob": f"{private_registry}/**", "authorities": ["release"]}]}),
        registry, TrustRoot.none())
    audit = FakeAuditLog()
    service = EvaluationService(policy_engine=opa.engine, audit_log=audit,
                                collectors=[signatures], digest_resolver=registry)
    client = _client(control_plane, tmp_path)
    settings = AdmissionSettings(environment="staging")
    scanner = ComplianceScanner(service, settings,
                                KubeWorkloads(client, settings.all_excluded_namespaces),
                                pull_secrets=KubePullSecrets(client, DockerConfigCredentials))
    try:
        snapshot = scanner.scan("test")
    finally:
        client.close()
        registry.close()
        opa.stop()
    results = {r.workload.name: r for r in snapshot.results if r.workload.namespace == namespace}
    assert set(results) == {"with-secret", "without-secret", "wrong-secret", "through-account"}

    for name in ("with-secret", "through-account"):
        allowed = results[name]
        assert allowed.verdict is Verdict.ALLOW, (name, allowed.violations)
    decision = next(d for d in audit.records if d.context["background"]["name"] == "with-secret")
    assert str(decision.images[0].digest) == digest
    assert decision.images[0].evidence["signatures"]["verified"] is True
    assert decision.context["background"]["pull_secrets"] == f"pull secrets {namespace}/regcred"
    through = next(d for d in audit.records
                   if d.context["background"]["name"] == "through-account")
    assert through.context["background"]["pull_secrets"] == f"pull secrets {namespace}/regcred"

    refused = f"registry {private_registry} denied access (401) resolving team/private:1.0"
    for name in ("without-secret", "wrong-secret"):
        denied = results[name]
        assert denied.verdict is Verdict.DENY
        assert [(v.policy, v.message) for v in denied.violations][:2] == [
            ("gatekeeper.evidence", f"digest not resolved: {refused}"),
            ("gatekeeper.evidence", f"signatures evidence not gathered: {refused}"),
        ]
    wrong = next(d for d in audit.records if d.context["background"]["name"] == "wrong-secret")
    assert wrong.context["background"]["pull_secret_problems"] == [
        f"secret {namespace}/absent does not exist"]

    # The login never reaches a log line or a recorded decision.
    assert PASSWORD not in caplog.text and login not in caplog.text
    for recorded in audit.records:
        document = json.dumps(recorded.as_dict(), default=str)
        assert PASSWORD not in document and login not in document
        assert PASSWORD not in repr(recorded)
