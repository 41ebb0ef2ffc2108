"""The chart's pod, run for real: the rendered Deployment's containers with their rendered
environment, arguments, ConfigMaps and Secret volumes (the TLS Secret the chart generated),
started as local processes.

Proves that what the chart renders makes a gatekeeper that starts (auth keys, audit signing key,
writable spool and state), and an OPA sidecar that loads the active revision from it as a bundle
over verified TLS with its auditor token (the certificate's name resolved to 127.0.0.1 the way
the chart's ``hostAliases`` do), while the policies ConfigMap (an archive) goes through the
GitOps checks and becomes the revision decisions record.

Differences from a cluster, kept small: volumes are directories under ``tmp_path``; the image
paths (``/app/policies``, ``/app/rego-tests``) are this checkout's; the ports are remapped to
free ones (the test shares the host's network); the audit store is SQLite; the sidecar's
``/etc/hosts`` is a private bind mount (``unshare -m``; the test is skipped where that is not
permitted). Needs ``GATEKEEPER_HELM`` and an ``opa`` binary.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from gatekeeper.policy.bundle import PolicyFiles
from tests.helpers.tokens import hs256_token
from tests.integration.test_chart import HELM, NAMESPACE, by_kind, one, render

REPO = Path(__file__).resolve().parents[2]
SECRET = "s" * 48
ISSUER = "https://issuer.example"
AUDIENCE = "gatekeeper"
#: The image's filesystem, as far as the chart relies on it.
IMAGE_PATHS = {"/app/policies": REPO / "policies", "/app/rego-tests": REPO / "rego-tests"}


def _opa_binary() -> str | None:
    local = REPO / ".tools" / "bin" / "opa"
    return str(local) if local.is_file() else shutil.which("opa")


def _private_hosts_possible() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"],
        capture_output=True, timeout=10, check=False,
    )
    return probe.returncode == 0


OPA = _opa_binary()
pytestmark = [
    pytest.mark.skipif(not HELM, reason="GATEKEEPER_HELM (path of helm) is not set"),
    pytest.mark.skipif(OPA is None, reason="no opa binary (scripts/install-tools)"),
]


def token(roles: list[str], subject: str) -> str:
    return hs256_token(SECRET, *roles, subject=subject, ttl=3600, iss=ISSUER, aud=AUDIENCE)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def policies_archive() -> bytes:
    """The shipped policies with one visible change, so GitOps has something to activate."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for root, prefix in ((REPO / "policies", "policies"), (REPO / "rego-tests", "tests")):
            for path in sorted(root.rglob("*")):
                if not path.is_file():
                    continue
                data = path.read_bytes()
                if prefix == "policies" and path.name == "registries.rego":
                    data = b"# changed through the policies ConfigMap\n" + data
                info = tarfile.TarInfo(f"{prefix}/{path.relative_to(root).as_posix()}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Pod:
    """The rendered pod's volumes as directories; paths translated container -> host."""

    def __init__(self, docs: list[dict[str, Any]], root: Path,
                 secrets: dict[str, dict[str, bytes]],
                 config_maps: dict[str, dict[str, bytes]]) -> None:
        self.spec = one(docs, "Deployment")["spec"]["template"]["spec"]
        self.root = root
        for doc in by_kind(docs, "Secret"):
            data = {k: base64.b64decode(v) for k, v in doc.get("data", {}).items()}
            data.update({k: v.encode() for k, v in doc.get("stringData", {}).items()})
            secrets.setdefault(doc["metadata"]["name"], data)
        for doc in by_kind(docs, "ConfigMap"):
            config_maps.setdefault(doc["metadata"]["name"],
                                   {k: v.encode() for k, v in doc["data"].items()})
        self.secrets = secrets
        self.processes: list[subprocess.Popen[bytes]] = []
        self.volumes: dict[str, Path] = {}
        for volume in self.spec["volumes"]:
            directory = root / "volumes" / volume["name"]
            directory.mkdir(parents=True)
            if "secret" in volume:
                self._project(directory, secrets[volume["secret"]["secretName"]],
                              volume["secret"].get("items"))
            elif "configMap" in volume:
                self._project(directory, config_maps[volume["configMap"]["name"]],
                              volume["configMap"].get("items"))
            else:
                assert "emptyDir" in volume, volume
            self.volumes[volume["name"]] = directory

    @staticmethod
    def _project(directory: Path, data: dict[str, bytes], items: list[dict[str, str]] | None,
                 ) -> None:
        # The kubelet's layout: files are links into a hidden "..data" directory.
        payload = directory / "..2026_01_01_00_00_00.000000001"
        payload.mkdir()
        wanted = {item["key"]: item["path"] for item in items} if items else {k: k for k in data}
        for key, path in wanted.items():
            (payload / path).write_bytes(data[key])
        (directory / "..data").symlink_to(payload.name)
        for path in wanted.values():
            (directory / path).symlink_to(f"..data/{path}")

    def container(self, name: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = [c for c in self.spec["containers"] if c["name"] == name]
        (container,) = found
        return container

    def translate(self, container: dict[str, Any], value: str) -> str:
        mounts = {m["mountPath"]: self.volumes[m["name"]] for m in container["volumeMounts"]}
        mounts.update(IMAGE_PATHS)
        # one pass, whole path components only (host paths live under /tmp too)
        pattern = "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True))
        return re.sub(rf"(?<![\w./-])({pattern})(?=/|\"|'|\s|$)",
                      lambda match: str(mounts[match.group(1)]), value)

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container["env"]:
            if "value" in item:
                env[item["name"]] = self.translate(container, item["value"])
            elif "secretKeyRef" in item["valueFrom"]:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self.secrets[ref["name"]][ref["key"]].decode()
            else:
                assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
                env[item["name"]] = NAMESPACE
        return env


def remap(text: str, ports: dict[int, int]) -> str:
    """The chart's fixed ports -> free ones (``host:port``, ``--flag=port``, or a bare port)."""
    for old, new in ports.items():
        if text == str(old):
            return str(new)
        text = text.replace(f":{old}", f":{new}").replace(f"={old}", f"={new}")
    return text


def hook_issued_tls(docs: list[dict[str, Any]]) -> dict[str, bytes]:
    """The TLS Secret's data as the certs hook Job issues it, for the names its args give."""
    from datetime import UTC, datetime

    from gatekeeper.kube.certs import issue

    (job,) = [d for d in by_kind(docs, "Job") if d["metadata"]["name"].endswith("-certs")]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    names = tuple(args[i + 1] for i, arg in enumerate(args) if arg == "--dns-name")
    return issue(names, datetime.now(UTC), ca_days=30, certificate_days=10)


@pytest.fixture
def running_pod(tmp_path: Path,
                request: pytest.FixtureRequest) -> Iterator[tuple[Pod, dict[int, int], Path]]:
    if not _private_hosts_possible():
        pytest.skip("unshare -m (a private /etc/hosts for the sidecar) is not permitted here")
    assert OPA is not None
    extra: tuple[str, ...] = getattr(request, "param", ())
    docs = render("auth.issuer=" + ISSUER, "auth.audience=" + AUDIENCE,
                  "audit.signingKey.existingSecret=audit-key", "audit.retentionDays=30",
                  "policies.existingConfigMap=gk-policies", "policies.archiveKey=policies.tar.gz",
                  "policies.watchIntervalSeconds=1", *extra)
    signing_key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    secrets = {
        "gatekeeper-auth": {"hs256-secret": SECRET.encode()},
        "gatekeeper-opa-bundle-token": {"token": (token(["auditor"], "opa-sidecar") + "\n").encode()},
        "gatekeeper-database": {"database-url": f"sqlite:///{tmp_path}/audit.db".encode()},
        "audit-key": {"signing-key.pem": signing_key},
        # What the chart's certs hook Job (`gatekeeper certs ensure`) creates in the cluster.
        "gk-gatekeeper-tls": hook_issued_tls(docs),
    }
    pod = Pod(docs, tmp_path / "pod", secrets, {"gk-policies": {"policies.tar.gz": policies_archive()}})
    ports = {8443: free_port(), 8181: free_port(), 8282: free_port(), 9090: free_port()}
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = pod.processes

    # the gatekeeper container (its image has opa on PATH)
    gatekeeper = pod.container("gatekeeper")
    env = {k: remap(v, ports) for k, v in pod.env(gatekeeper).items()}
    env.update(PATH=f"{Path(OPA).parent}{os.pathsep}{Path(sys.executable).parent}"
               f"{os.pathsep}{os.environ.get('PATH', '')}", HOME=str(pod.volumes["tmp"]),
               TMPDIR=str(pod.volumes["tmp"]),
               PYTHONPATH=str(REPO))  # this checkout's package, not the venv's installed one
    command = [remap(part, {8443: ports[8443]}) for part in gatekeeper["command"]]
    command[command.index("--port") + 1] = str(ports[8443])
    with (logs / "gatekeeper.log").open("wb") as log:
        processes.append(subprocess.Popen(command, env=env, cwd=pod.root, stdout=log,
                                          stderr=subprocess.STDOUT))
    # the sidecar, with the pod's /etc/hosts (hostAliases)
    sidecar = pod.container("opa")
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"{alias['ip']} {' '.join(alias['hostnames'])}\n"
                             for alias in pod.spec["hostAliases"]) + "127.0.0.1 localhost\n")
    config = pod.volumes["opa-config"] / "config.yaml"
    config_text = pod.translate(sidecar, config.read_text())
    config.unlink()
    config.write_text(remap(config_text, {8443: ports[8443]}))
    args = [remap(pod.translate(sidecar, arg), ports) for arg in sidecar["args"]]
    with (logs / "opa.log").open("wb") as log:
        processes.append(subprocess.Popen(
            ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
             str(hosts), OPA, *args],
            stdout=log, stderr=subprocess.STDOUT))
    try:
        yield pod, ports, logs
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_for(predicate: Callable[[], Any], what: str, pod: Pod, logs: Path, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        if any(process.poll() is not None for process in pod.processes):
            break  # a container exited: no use waiting
        time.sleep(0.25)
    tails = {p.name: p.read_text(errors="replace")[-3000:] for p in logs.iterdir()}
    pytest.fail(f"timed out waiting for {what}; logs: {tails}")


def test_rendered_pod_starts_and_its_sidecar_serves_the_gitops_revision(
    running_pod: tuple[Pod, dict[int, int], Path],
) -> None:
    pod, ports, logs = running_pod
    ca = pod.volumes["serving-ca"] / "ca.crt"
    host = pod.spec["hostAliases"][0]["hostnames"][0]
    opa = httpx.Client(base_url=f"http://127.0.0.1:{ports[8181]}", timeout=5)
    archived = PolicyFiles.from_tarball(
        (pod.volumes["policies"] / "policies.tar.gz").read_bytes()).revision_id

    def sidecar_revision() -> str | None:
        try:
            result = opa.get("/v1/data/system/bundles/gatekeeper/manifest/revision").json()
            return str(result["result"]) if result.get("result") else None
        except (httpx.HTTPError, ValueError):
            return None

    # the ConfigMap's archive passed its checks, became active, and the sidecar loaded it
    wait_for(lambda: sidecar_revision() == archived, "the sidecar to load the GitOps revision",
             pod, logs)
    # the serving certificate verifies, with the chart's CA, for the name the sidecar uses
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", ports[8443])) as raw, \
            context.wrap_socket(raw, server_hostname=host):
        pass
    chain_only = ssl.create_default_context(cafile=str(ca))
    chain_only.check_hostname = False
    api = httpx.Client(base_url=f"https://127.0.0.1:{ports[8443]}", verify=chain_only, timeout=30)
    ready = wait_for(lambda: api.get("/readyz").json() if api.get("/readyz").status_code == 200
                     else None, "/readyz", pod, logs)
    assert ready["policy_revision"] == archived
    assert ready["authentication"] == "bearer JWT (HS256)"
    # the bundle route is not open: the sidecar got it with its auditor token
    assert api.get("/v1/policies/bundle").status_code == 401
    auditor = {"Authorization": f"Bearer {token(['auditor'], 'someone')}"}
    assert api.get("/v1/policies/bundle", headers=auditor).status_code == 200
    # a decision records the revision the sidecar serves
    pipeline = {"Authorization": f"Bearer {token(['pipeline'], 'ci')}"}
    response = api.post("/v1/evaluations", headers=pipeline, json={
        "images": ["localhost:1/acme/api:1.0"], "environment": "development"})
    assert response.status_code == 200, response.text
    assert response.json()["policy_revision"] == archived
    # the audit spool and the signing key are where the chart put them
    assert pod.volumes["audit-spool"].is_dir()
    gatekeeper_log = (logs / "gatekeeper.log").read_text(errors="replace")
    assert "no audit signing key" not in gatekeeper_log
    assert "AUTHENTICATION IS DISABLED" not in gatekeeper_log


@pytest.mark.parametrize("running_pod", [("workers=2",)], indirect=True)
def test_rendered_pod_with_two_workers_shares_the_sidecar_and_merges_metrics(
    running_pod: tuple[Pod, dict[int, int], Path],
) -> None:
    pod, ports, logs = running_pod
    wait_for(lambda: "2 workers serving" in (logs / "gatekeeper.log").read_text(errors="replace"),
             "both workers", pod, logs, timeout=180)
    chain_only = ssl.create_default_context(cafile=str(pod.volumes["serving-ca"] / "ca.crt"))
    chain_only.check_hostname = False
    # As Kubernetes would: no traffic before /readyz says the sidecar serves the active revision
    # (until then it may still be loading its first bundle).
    with httpx.Client(base_url=f"https://127.0.0.1:{ports[8443]}", verify=chain_only,
                      timeout=30) as probe:
        wait_for(lambda: probe.get("/readyz").status_code == 200, "/readyz", pod, logs)
    pipeline = {"Authorization": f"Bearer {token(['pipeline'], 'ci')}"}
    revisions = set()
    for _ in range(6):  # a connection each: the listener hands them to either worker
        with httpx.Client(base_url=f"https://127.0.0.1:{ports[8443]}", verify=chain_only,
                          timeout=30) as api:
            response = api.post("/v1/evaluations", headers=pipeline, json={
                "images": ["localhost:1/acme/api:1.0"], "environment": "development"})
        assert response.status_code == 200, response.text
        revisions.add(response.json()["policy_revision"])
    assert len(revisions) == 1 and None not in revisions  # the one sidecar's revision
    metrics = httpx.get(f"http://127.0.0.1:{ports[9090]}/metrics", timeout=10).text
    assert 'forge_gatekeeper_workers{state="answering"} 2.0' in metrics
    pipeline_decisions = sum(
        sample.value for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "forge_gatekeeper_decisions_total"
        and sample.labels["source"] == "pipeline")
    assert pipeline_decisions == 6  # each worker's own, merged
