"""A real Kubernetes control plane with the real gatekeeper behind it (imported explicitly).

The control plane is etcd, kube-apiserver, kube-controller-manager and kube-scheduler v1.35,
built from the Go module proxy by ``scripts/install-tools``. It comes from
``GATEKEEPER_TEST_KUBECONFIG`` / ``GATEKEEPER_KUBECTL`` when they are set (``scripts/test-cluster
run CMD``); otherwise the first test that needs it starts one with ``scripts/test-cluster start``
(a few seconds) and the session stops it. Without the binaries the tests skip, unless
``GATEKEEPER_TEST_CLUSTER_REQUIRED`` is set (``scripts/test`` sets it): then they fail.

The gatekeeper is the real ``gatekeeper serve`` (HTTPS on loopback, embedded OPA with
``policies/``, SQLite audit store, cosign signature verification against the loopback
docker-registry). Its webhooks are registered from the chart's own rendering (``helm template``
with ``tls.mode=secret``, ``hooks.webhookRegistration=manifest`` and the test CA as
``tls.caBundle``). On loopback the gatekeeper runs outside the cluster, as the chart's
``admission.url`` describes: the chart renders each ``clientConfig`` as
``url: https://127.0.0.1:PORT/<its path>``. Under ``scripts/test-node`` the chart's Service
rendering is applied, and a selector-less Service with Endpoints at the node address leads the
API server to the gatekeeper. Everything (rules, selectors, failure policy, timeouts, caBundle,
paths) is the chart's.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.cosign_fixtures import (
    KeyPair,
    cosign_binary,
    cosign_sign,
    generate_key_pair,
    push_image,
    registry_host,
    unique_repository,
)
from tests.unit.webhook.certificates import CertificateAuthority

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools" / "bin"
CHART = REPO / "charts" / "gatekeeper"
RELEASE_NAMESPACE = "gatekeeper-system"
KUBE_VERSION = "v1.35.8"

#: When the session's gatekeeper (``gatekeeper`` below) has registered the chart's webhooks,
#: they govern a test's namespaces too: its audit-mode webhook admits what the test creates,
#: whatever its own (staging, loopback-registry) policy says. A background scanner under test
#: evaluates in its own settings' mode (enforce), as the README says.
AUDIT_ONLY = {"gatekeeper.forge.dev/mode": "audit"}
#: The gatekeeper's environment in these tests: 127.0.0.1:* is allowed, localhost:* is not.
ENVIRONMENT = "staging"


@dataclass(frozen=True)
class Completed:
    """What a kubectl run printed, and its exit code."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (f"$ kubectl {shlex.join(self.args)}\nexit {self.returncode}\n"
                f"stdout: {self.stdout}\nstderr: {self.stderr}")


@dataclass(frozen=True)
class ControlPlane:
    kubeconfig: Path
    kubectl_binary: str

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 60) -> Completed:
        completed = subprocess.run(
            [self.kubectl_binary, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        result = Completed(tuple(args), completed.returncode, completed.stdout, completed.stderr)
        if check and completed.returncode != 0:
            raise AssertionError(f"kubectl failed:\n{result}")
        return result

    def apply(self, document: dict[str, Any] | Sequence[dict[str, Any]], *args: str,
              check: bool = True) -> Completed:
        documents = [document] if isinstance(document, dict) else list(document)
        return self.kubectl("apply", "-f", "-", *args,
                            stdin=yaml.safe_dump_all(documents), check=check)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        output = self.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
        document: dict[str, Any] = json.loads(output)
        return document

    def wait_for(self, description: str, predicate: Any, timeout: float = 30) -> Any:
        """Poll ``predicate()`` until it returns something truthy (controllers are async)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {description}")
            time.sleep(0.2)

    def namespace(self, prefix: str = "gk", labels: dict[str, str] | None = None) -> str:
        """A fresh namespace whose ``default`` ServiceAccount exists (Pods need it)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.apply({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels or {}}})
        self.wait_for(f"ServiceAccount {name}/default", lambda: self.kubectl(
            "get", "serviceaccount", "default", "-n", name, check=False).returncode == 0)
        return name


def _required() -> bool:
    return bool(os.environ.get("GATEKEEPER_TEST_CLUSTER_REQUIRED"))


def _unavailable(message: str) -> None:
    if _required():
        pytest.fail(f"{message} (GATEKEEPER_TEST_CLUSTER_REQUIRED is set)")
    pytest.skip(message)


def service_account(
    cluster: ControlPlane, prefix: str, rules: list[dict[str, Any]], workdir: Path
) -> tuple[str, Path, Path]:
    """A ServiceAccount in a new namespace named after ``prefix``, bound to a ClusterRole with
    ``rules``: the API server URL, a file with a token of it, and the cluster CA file."""
    namespace = cluster.namespace(prefix)
    cluster.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "gatekeeper", "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": f"{namespace}-background"}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"{namespace}-background"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": f"{namespace}-background"},
         "subjects": [{"kind": "ServiceAccount", "name": "gatekeeper",
                       "namespace": namespace}]},
    ])
    token = cluster.kubectl("create", "token", "gatekeeper", "-n", namespace).stdout.strip()
    (workdir / "token").write_text(token)
    config = json.loads(cluster.kubectl("config", "view", "--raw", "--minify",
                                        "-o", "json").stdout)
    entry = config["clusters"][0]["cluster"]
    if "certificate-authority" in entry:
        ca_file = Path(entry["certificate-authority"])
    else:
        ca_file = workdir / "ca.crt"
        ca_file.write_bytes(base64.b64decode(entry["certificate-authority-data"]))
    return entry["server"], workdir / "token", ca_file


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    kubeconfig = os.environ.get("GATEKEEPER_TEST_KUBECONFIG")
    kubectl = os.environ.get("GATEKEEPER_KUBECTL") or str(TOOLS / "kubectl")
    if kubeconfig:
        yield ControlPlane(Path(kubeconfig), kubectl)
        return
    missing = [name for name in ("etcd", "kube-apiserver", "kube-controller-manager",
                                 "kube-scheduler", "kubectl") if not (TOOLS / name).is_file()]
    if missing:
        _unavailable(f"Kubernetes binaries missing in {TOOLS}: {', '.join(missing)} "
                     "(scripts/install-tools builds them)")
    # run-<pid>: a later start removes it (and stops its servers) once this process is gone.
    directory = _cluster_base() / f"run-{os.getpid()}"
    script = str(REPO / "scripts" / "test-cluster")
    started = subprocess.run([script, "start", str(directory)], capture_output=True, text=True,
                             timeout=180, check=False)
    try:
        assert started.returncode == 0, f"scripts/test-cluster start failed:\n{started.stderr}"
        yield ControlPlane(directory / "admin.kubeconfig", kubectl)
    finally:
        subprocess.run([script, "stop", str(directory)], capture_output=True, timeout=60,
                       check=False)


def _cluster_base() -> Path:
    base = REPO / "var" / "test-cluster"
    base.mkdir(parents=True, exist_ok=True)
    return base


# -- the gatekeeper ---------------------------------------------------------------------------

@dataclass
class Gatekeeper:
    """``gatekeeper serve`` over HTTPS on loopback, its webhooks registered with the cluster."""

    url: str
    ca: CertificateAuthority
    registry: str
    keys: KeyPair
    cosign: str
    workdir: Path
    log: Path
    _images: dict[str, tuple[str, str]] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            verify=ssl.create_default_context(cafile=str(self.ca.cert_file)))

    def decisions(self, namespace: str) -> list[dict[str, Any]]:
        """Every audit record of one namespace, oldest first."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        with self.client() as client:
            while True:
                params: dict[str, str | int] = {"namespace": namespace, "limit": 500}
                if cursor:
                    params["cursor"] = cursor
                response = client.get("/v1/decisions", params=params)
                assert response.status_code == 200, response.text
                page = response.json()
                items += page["items"]
                cursor = page.get("next_cursor")
                if not cursor:
                    return list(reversed(items))

    def image(self, name: str, *, signed: bool, host: str | None = None) -> tuple[str, str]:
        """``(reference by tag, digest)`` of an image pushed to the loopback registry.

        ``host`` addresses the same registry another way (``localhost:PORT``: a registry the
        policy does not allow in this environment). Cached per name within the session.
        """
        key = f"{name}:{signed}:{host}"
        if key not in self._images:
            repository = unique_repository(name)
            digest = str(push_image(self.registry, f"{repository}:1.0", name, self.workdir))
            if signed:
                cosign_sign(self.cosign, self.keys, f"{self.registry}/{repository}@{digest}",
                            self.workdir)
            self._images[key] = (f"{host or self.registry}/{repository}:1.0", digest)
        return self._images[key]


    def runnable_image(self, *, signed: bool) -> tuple[str, str]:
        """A copy of the node's busybox image in a repository of its own (``kube_node`` only)."""
        source = os.environ.get("GATEKEEPER_TEST_NODE_IMAGE")
        assert source, "GATEKEEPER_TEST_NODE_IMAGE is set by scripts/test-node"
        repository = unique_repository("busybox")
        digest_file = self.workdir / f"{repository.replace('/', '-')}.digest"
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
             "--digestfile", str(digest_file), f"docker://{source}",
             f"docker://{self.registry}/{repository}:1.0"],
            check=True, capture_output=True, timeout=60)
        digest = digest_file.read_text().strip()
        if signed:
            cosign_sign(self.cosign, self.keys, f"{self.registry}/{repository}@{digest}",
                        self.workdir)
        return f"{self.registry}/{repository}:1.0", digest


@dataclass(frozen=True)
class Node:
    """The kubelet of ``scripts/test-node`` (containerd + runc, in the test's namespaces)."""

    name: str
    address: str
    image: str


@pytest.fixture(scope="session")
def kube_node() -> Node:
    """The node, when the session runs under ``scripts/test-node run`` (skips otherwise).

    ``scripts/test`` runs the ``node`` tests that way after the main suite; by hand:
    ``scripts/test-node run .venv/bin/python -m pytest -m node``. The control plane, the
    registry and every server a test starts share the node's network namespace, so the
    ``control_plane`` and ``gatekeeper`` fixtures work there unchanged.
    """
    name = os.environ.get("GATEKEEPER_TEST_NODE")
    if not name:
        pytest.skip("needs a node: run under scripts/test-node (scripts/test does)")
    return Node(name, os.environ["GATEKEEPER_TEST_NODE_IP"],
                os.environ["GATEKEEPER_TEST_NODE_IMAGE"])


def rendered_webhook_configurations(ca_file: Path, url: str | None) -> list[dict[str, Any]]:
    """The chart's two webhook configurations, rendered with ``tls.mode=secret`` as manifests.

    The chart writes ``ca_file`` into every ``caBundle`` (its own mechanism for a CA it did not
    make). With ``url`` the chart's ``admission.url`` is set (an out-of-cluster gatekeeper: each
    ``clientConfig`` is ``url: URL<path>``); without, each ``clientConfig`` names its Service.
    """
    helm = os.environ.get("GATEKEEPER_HELM") or str(TOOLS / "helm")
    if not Path(helm).is_file():
        _unavailable("helm is missing (GATEKEEPER_HELM; scripts/install-tools builds it)")
    rendered = subprocess.run(
        [helm, "template", "gatekeeper", str(CHART), "--namespace", RELEASE_NAMESPACE,
         "--kube-version", KUBE_VERSION.removeprefix("v"),
         "--values", str(CHART / "ci" / "test-values.yaml"),
         "--set", "tls.mode=secret", "--set", "tls.secretName=gatekeeper-test-tls",
         "--set", "hooks.webhookRegistration=manifest",
         "--set-file", f"tls.caBundle={ca_file}",
         *(("--set", f"admission.url={url}") if url is not None else ())],
        capture_output=True, text=True, timeout=120, check=False)
    assert rendered.returncode == 0, rendered.stderr
    # hooks.webhookRegistration=manifest: the configurations are rendered with the caBundle
    # (by default the register hook fills it in from the cluster and creates them itself).
    documents = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    configurations = [doc for doc in documents if doc["kind"] in
                      ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")]
    assert len(configurations) == 2, "the chart renders both webhook configurations"
    return configurations


def service_for(configurations: list[dict[str, Any]], address: str,
                port: int) -> list[dict[str, Any]]:
    """The Service the chart's clientConfig names, with endpoints at ``address:port``.

    On the node the gatekeeper runs as a process, not a Pod: a selector-less Service and its
    Endpoints (mirrored into an EndpointSlice by the controller manager) stand in for the
    chart's Deployment, so the API server reaches it exactly as it would reach the Pod.
    """
    (service,) = {(w["clientConfig"]["service"]["name"], w["clientConfig"]["service"]["namespace"],
                   w["clientConfig"]["service"]["port"])
                  for c in configurations for w in c["webhooks"]}
    name, namespace, service_port = service
    metadata = {"name": name, "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
         "spec": {"ports": [{"name": "https", "port": service_port, "targetPort": port}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": metadata,
         "subsets": [{"addresses": [{"ip": address}],
                      "ports": [{"name": "https", "port": port}]}]},
    ]


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, ca_file: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gatekeeper serve exited {process.returncode}:\n"
                                 f"{log.read_text()[-3000:]}")
        try:
            context = ssl.create_default_context(cafile=str(ca_file))
            if httpx.get(f"{url}/readyz", verify=context, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"gatekeeper serve not ready after 60s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def gatekeeper(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory,
               opa_binary: str) -> Iterator[Gatekeeper]:
    """The gatekeeper serving the cluster's webhooks for one test module.

    Per module, and everything it registers is deleted afterwards, so that a later module can
    install the chart itself (``helm install`` owns the same names) in the same cluster.
    """
    registry = registry_host()
    cosign = cosign_binary("v2")
    workdir = tmp_path_factory.mktemp("kube-gatekeeper")
    keys = generate_key_pair(cosign, workdir / "keys")
    ca = CertificateAuthority(workdir)
    # On the node the API server calls the chart's Service, which leads to the node address.
    node_address = os.environ.get("GATEKEEPER_TEST_NODE_IP")
    host = node_address or "127.0.0.1"
    leaf = ca.issue("gatekeeper", ip_addresses=(host,),
                    dns_names=(f"gatekeeper.{RELEASE_NAMESPACE}.svc",))
    port = _free_port(host)
    registry_port = registry.rsplit(":", 1)[1]
    config = {
        "database_url": f"sqlite:///{workdir / 'audit.db'}",
        "opa_binary": opa_binary,
        "policy_dir": str(REPO / "policies"),
        "policy_tests_dir": str(REPO / "rego-tests"),
        "policy_state_dir": str(workdir / "policy-state"),
        "audit_spool_dir": str(workdir / "spool"),
        "host": host,
        "port": port,
        "metrics_port": 0,
        "insecure_disable_auth": True,
        "log_level": "WARNING",
        "admission_environment": ENVIRONMENT,
        "tls_cert_file": str(leaf.cert_file),
        "tls_key_file": str(leaf.key_file),
        "ecr_scan_enabled": False,
        "trusted_root": "none",
        "registry": {"hosts": [{"host": registry, "plain_http": True},
                               {"host": f"localhost:{registry_port}", "plain_http": True}]},
        "signatures": {
            "authorities": [{"name": "release", "keys": [keys.public_pem], "tlog": False}],
            "images": [{"glob": f"{registry}/**", "authorities": ["release"]}],
        },
    }
    config_file = workdir / "gatekeeper.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("GATEKEEPER_") or name.startswith("GATEKEEPER_TEST_")}
    env.update(GATEKEEPER_CONFIG=str(config_file), PYTHONPATH=str(REPO))
    log = workdir / "gatekeeper.log"
    url = f"https://{host}:{port}"
    with log.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "gatekeeper", "serve"], env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir)
    configurations: list[dict[str, Any]] = []
    registered: list[dict[str, Any]] = []
    try:
        _wait_ready(url, ca.cert_file, process, log)
        if node_address:
            configurations = rendered_webhook_configurations(ca.cert_file, None)
            registered += service_for(configurations, node_address, port)[1:]
            control_plane.apply(service_for(configurations, node_address, port))
        else:
            configurations = rendered_webhook_configurations(ca.cert_file, url)
        registered += configurations
        control_plane.apply(configurations)
        yield Gatekeeper(url, ca, registry, keys, cosign, workdir, log)
    finally:
        for document in registered:
            namespace = document["metadata"].get("namespace")
            control_plane.kubectl("delete", document["kind"], document["metadata"]["name"],
                                  *(["-n", namespace] if namespace else []),
                                  "--ignore-not-found", check=False)
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
