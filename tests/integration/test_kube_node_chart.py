"""The chart, installed for real: the project's own images running on the node (issue 12).

Runs under ``scripts/test-node run`` (``scripts/test`` does it after the main suite); skipped
elsewhere. ``scripts/test`` builds the two images first with ``scripts/build-image`` (their
build needs PyPI, which the node's namespace cannot reach): ``build/image/gatekeeper`` and
``build/image/opa`` (``GATEKEEPER_TEST_IMAGE_DIR`` names another directory). The test pushes
those OCI archives to the node's loopback registry, pins them by digest, installs the chart
with ``helm install --wait`` and checks what an operator sees: the API server calls the Pod
through its Service (a signed image is admitted, an unsigned one denied with the gatekeeper's
message), ``helm test`` passes, ``helm upgrade`` to a new image tag rolls the Pods while
``kubectl run --dry-run=server`` keeps being answered, and ``helm uninstall`` leaves no webhook
configuration behind.

The workload images live in ``registry.example.com`` (``GATEKEEPER_TEST_NODE_REGISTRY``, a
registry on the node address that Pods reach; the shipped policies allow that name), given to
the gatekeeper's Pod through the chart's ``hostAliases``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from tests.integration.cosign_fixtures import (
    KeyPair,
    cosign_binary,
    cosign_sign,
    generate_key_pair,
    unique_repository,
)
from tests.integration.kube_cluster import (  # noqa: F401 - fixtures
    CHART,
    REPO,
    ControlPlane,
    Node,
    control_plane,
    kube_node,
)

pytestmark = [pytest.mark.integration, pytest.mark.kube, pytest.mark.node]

RELEASE = "gk"
NAMESPACE = "gatekeeper-system"
HS256_SECRET = secrets.token_urlsafe(48)
TAG = "0.1.0"
NEXT_TAG = "0.1.0-next"


@dataclass
class Release:
    control_plane: ControlPlane
    helm: str
    values: Path
    registry: str
    workload_registry: str
    keys: KeyPair
    cosign: str
    workdir: Path
    images: dict[str, str]

    def run_helm(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.helm, "--kubeconfig", str(self.control_plane.kubeconfig), *args],
            capture_output=True, text=True, timeout=timeout, check=False)

    def workload(self, *, signed: bool) -> tuple[str, str]:
        """The node's busybox copied to registry.example.com (signed there, or not)."""
        source = os.environ["GATEKEEPER_TEST_NODE_IMAGE"]
        repository = unique_repository("busybox")
        digest_file = self.workdir / f"{repository.replace('/', '-')}.digest"
        target = f"{self.workload_registry}/{repository}"
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
             "--digestfile", str(digest_file), f"docker://{source}", f"docker://{target}:1.0"],
            check=True, capture_output=True, timeout=60)
        digest = digest_file.read_text().strip()
        if signed:
            cosign_sign(self.cosign, self.keys, f"{target}@{digest}", self.workdir)
        return f"{target}:1.0", digest


def _push_archive(archive: Path, reference: str, workdir: Path) -> str:
    if not archive.is_file():
        pytest.fail(f"{archive} is missing: scripts/test builds it with scripts/build-image "
                    "before the node tests (GATEKEEPER_TEST_IMAGE_DIR names another directory)")
    digest_file = workdir / (reference.replace("/", "-").replace(":", "-") + ".digest")
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile",
         str(digest_file), f"oci-archive:{archive}", f"docker://{reference}"],
        check=True, capture_output=True, timeout=300)
    return digest_file.read_text().strip()


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": NAMESPACE}, "stringData": data}


@pytest.fixture(scope="module")
def release(kube_node: Node, control_plane: ControlPlane,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    helm = os.environ.get("GATEKEEPER_HELM") or str(REPO / ".tools" / "bin" / "helm")
    registry = os.environ["GATEKEEPER_TEST_REGISTRY"]
    workload_registry = os.environ["GATEKEEPER_TEST_NODE_REGISTRY"]
    image_dir = Path(os.environ.get("GATEKEEPER_TEST_IMAGE_DIR") or REPO / "build" / "image")
    workdir = tmp_path_factory.mktemp("node-chart")
    cosign = cosign_binary("v2")
    keys = generate_key_pair(cosign, workdir / "keys")

    images = {}
    for target, tags in (("gatekeeper", (TAG, NEXT_TAG)), ("opa", ("1.22.2",))):
        for tag in tags:
            images[f"{target}:{tag}"] = _push_archive(
                image_dir / target / "image.oci.tar", f"{registry}/forge/{target}:{tag}", workdir)

    control_plane.kubectl("create", "namespace", NAMESPACE, check=False)
    bundle_token = jwt.encode({"sub": "opa-sidecar", "roles": ["auditor"],
                               "exp": int(time.time()) + 86400}, HS256_SECRET, algorithm="HS256")
    control_plane.apply([
        _secret("gatekeeper-auth", {"hs256-secret": HS256_SECRET}),
        _secret("gatekeeper-opa-bundle-token", {"token": bundle_token}),
        # One SQLite file per Pod (its /tmp volume): enough to show admission; PostgreSQL in
        # production.
        _secret("gatekeeper-database", {"database-url": "sqlite:////tmp/gatekeeper.db"}),
    ])
    signatures = {
        "authorities": [{"name": "release", "keys": [keys.public_pem], "tlog": False}],
        "images": [{"glob": f"{workload_registry}/**", "authorities": ["release"]}],
    }
    values = {
        "environment": "staging",
        # Two replicas from the start: with the HPA (the default) the Deployment has no replicas
        # field and starts at one until the HPA controller raises it to minReplicas.
        "autoscaling": {"enabled": False},
        "replicaCount": 2,
        "image": {"repository": f"{registry}/forge/gatekeeper", "tag": TAG,
                  "digest": images[f"gatekeeper:{TAG}"]},
        "opa": {"image": {"repository": f"{registry}/forge/opa", "tag": "1.22.2",
                          "digest": images["opa:1.22.2"]},
                "bundleTokenSecret": {"name": "gatekeeper-opa-bundle-token"}},
        "auth": {"existingSecret": "gatekeeper-auth", "hs256SecretKey": "hs256-secret"},
        "database": {"existingSecret": "gatekeeper-database"},
        "hostAliases": [{"ip": kube_node.address, "hostnames": [workload_registry]}],
        "extraEnv": [
            {"name": "GATEKEEPER_REGISTRY",
             "value": json.dumps({"hosts": [{"host": workload_registry, "plain_http": True}]})},
            {"name": "GATEKEEPER_SIGNATURES", "value": json.dumps(signatures)},
            {"name": "GATEKEEPER_TRUSTED_ROOT", "value": "none"},
            {"name": "GATEKEEPER_ECR_SCAN_ENABLED", "value": "false"},
        ],
    }
    values_file = workdir / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = Release(control_plane, helm, values_file, registry, workload_registry, keys, cosign,
                     workdir, images)
    installed = result.run_helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE,
                                "--values", str(values_file), "--wait", "--timeout", "10m")
    try:
        assert installed.returncode == 0, _diagnose(result, installed)
        yield result
    finally:
        result.run_helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait",
                        "--ignore-not-found", timeout=300)


def _diagnose(release: Release, completed: subprocess.CompletedProcess[str]) -> str:
    pods = release.control_plane.kubectl("get", "pods,jobs,events", "-n", NAMESPACE, "-o", "wide",
                                         check=False)
    logs = release.control_plane.kubectl("logs", "-n", NAMESPACE, "--all-containers",
                                         "--tail=40", "-l", "app.kubernetes.io/instance=gk",
                                         check=False)
    return (f"$ helm {completed.args[3:]}\nexit {completed.returncode}\n{completed.stdout}\n"
            f"{completed.stderr}\n{pods.stdout}{pods.stderr}\n{logs.stdout}{logs.stderr}")


def _webhook_configurations(control_plane: ControlPlane) -> str:
    return control_plane.kubectl("get", "validatingwebhookconfigurations,"
                                 "mutatingwebhookconfigurations", "-o", "name").stdout


def test_installed_chart_admits_signed_and_denies_unsigned_through_its_service(
        release: Release, kube_node: Node) -> None:
    cp = release.control_plane
    pods = cp.kubectl("get", "pods", "-n", NAMESPACE, "-l",
                      "app.kubernetes.io/name=gatekeeper,app.kubernetes.io/instance=gk",
                      "-o", "json")
    running = [(p["status"]["phase"], p["spec"]["nodeName"],
                [c["image"] for c in p["spec"]["containers"]])
               for p in json.loads(pods.stdout)["items"]]
    gatekeeper_image = (f"{release.registry}/forge/gatekeeper:{TAG}@"
                        f"{release.images[f'gatekeeper:{TAG}']}")
    opa_image = f"{release.registry}/forge/opa:1.22.2@{release.images['opa:1.22.2']}"
    assert running == [("Running", kube_node.name, [gatekeeper_image, opa_image])] * 2
    assert sorted(_webhook_configurations(cp).split()) == [
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/gk-gatekeeper",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/gk-gatekeeper"]

    namespace = cp.namespace()
    signed, digest = release.workload(signed=True)
    unsigned, _ = release.workload(signed=False)
    created = cp.kubectl("run", "web", f"--image={signed}", "-n", namespace, "--",
                         "sleep", "3600")
    refused = cp.kubectl("run", "other", f"--image={unsigned}", "-n", namespace, check=False)
    cp.kubectl("wait", "--for=condition=Ready", "pod/web", "-n", namespace, "--timeout=90s",
               timeout=120)

    assert created.stdout == "pod/web created\n"
    assert cp.get("pod", "web", namespace)["spec"]["containers"][0]["image"] == (
        f"{signed}@{digest}")
    assert refused.returncode == 1
    assert refused.stderr.startswith('Error from server (Forbidden): admission webhook '
                                     '"mutate.gatekeeper.forge.dev" denied the request: '
                                     f"spec.containers[0].image ({unsigned}): "), refused.stderr


def test_helm_test_gets_a_live_answer(release: Release) -> None:
    tested = release.run_helm("test", RELEASE, "--namespace", NAMESPACE, "--timeout", "5m")
    assert tested.returncode == 0, _diagnose(release, tested)
    assert "Phase:          Succeeded" in tested.stdout


def test_upgrade_to_a_new_image_tag_keeps_admitting(release: Release) -> None:
    cp = release.control_plane
    namespace = cp.namespace()
    signed, _ = release.workload(signed=True)
    failures: list[str] = []
    attempts = 0
    done = threading.Event()

    def probe() -> None:
        nonlocal attempts
        while not done.is_set():
            attempts += 1
            answer = cp.kubectl("run", f"probe-{attempts}", f"--image={signed}", "-n", namespace,
                                "--dry-run=server", "-o", "name", check=False, timeout=60)
            if answer.returncode != 0:
                failures.append(answer.stderr.strip())
            time.sleep(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    started = time.monotonic()
    upgraded = release.run_helm(
        "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--values", str(release.values),
        "--set", f"image.tag={NEXT_TAG}", "--set",
        f"image.digest={release.images[f'gatekeeper:{NEXT_TAG}']}", "--wait", "--timeout", "10m")
    roll_seconds = time.monotonic() - started
    time.sleep(3)  # answers just after the roll count too
    done.set()
    prober.join(timeout=90)
    print(f"\nhelm upgrade rolled in {roll_seconds:.0f}s: {attempts} dry-run admissions, "
          f"{len(failures)} failed")

    assert upgraded.returncode == 0, _diagnose(release, upgraded)
    images = cp.kubectl("get", "deployment", "gk-gatekeeper", "-n", NAMESPACE, "-o",
                        "jsonpath={.spec.template.spec.containers[0].image}").stdout
    assert images.startswith(f"{release.registry}/forge/gatekeeper:{NEXT_TAG}@")
    assert attempts > 0
    assert failures == []


def test_uninstall_leaves_no_webhook_configuration(release: Release) -> None:
    removed = release.run_helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait",
                               timeout=300)

    assert removed.returncode == 0, _diagnose(release, removed)
    assert _webhook_configurations(release.control_plane) == ""
