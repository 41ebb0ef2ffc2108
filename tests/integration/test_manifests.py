"""Kubernetes manifests through the pipeline door (issue 13.3), against the real application:
``helm template`` renders a chart of our own, ``POST /v1/evaluations`` and ``gatekeeper evaluate
-f`` decide each workload, and ``/admission/validate`` answers the same verdicts and the same
field-addressed reasons for the same objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers.tokens import bearer_headers
from tests.integration.cosign_fixtures import push_image, registry_host, unique_repository
from tests.integration.test_admission_app import AUTH_SECRET, post, serve_gatekeeper
from tests.unit.webhook.certificates import CertificateAuthority

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TOOLS_HELM = REPO / ".tools" / "bin" / "helm"
GCR = "gcr.io/acme/batch@sha256:" + "cd" * 32


def _helm() -> str:
    helm = os.environ.get("GATEKEEPER_HELM") or str(TOOLS_HELM)
    if not Path(helm).exists():
        pytest.skip("helm is missing (GATEKEEPER_HELM; scripts/install-tools builds it)")
    return helm


def _token(role: str) -> dict[str, str]:
    return bearer_headers(AUTH_SECRET, role, subject="ci-bot")


def _container(name: str, image: str, **security: Any) -> dict[str, Any]:
    return {"name": name, "image": image,
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                          "limits": {"cpu": "{{ .Values.cpu }}", "memory": "128Mi"}},
            "securityContext": {"readOnlyRootFilesystem": True, **security}}


def _chart(root: Path, image: str) -> Path:
    """A chart of our own: a compliant Deployment, a privileged Pod with host networking, a
    CronJob over the cpu maximum with a capability and an image from a registry development
    does not allow, and a Service (no pod template)."""
    chart = root / "shop"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: shop\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(f"image: {image}\ncpu: 500m\nbigCpu: '17'\n")
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"initContainers": [_container("init", "{{ .Values.image }}")],
                     "containers": [_container("web", "{{ .Values.image }}")]}}}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug"},
           "spec": {"hostNetwork": True, "containers": [
               _container("shell", "{{ .Values.image }}", privileged=True)]}}
    big = _container("job", GCR, capabilities={"add": ["NET_BIND_SERVICE", "SYS_ADMIN"]})
    big["resources"]["limits"]["cpu"] = "{{ .Values.bigCpu }}"
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
               "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": {
                   "spec": {"restartPolicy": "OnFailure", "containers": [
                       _container("main", "{{ .Values.image }}"), big]}}}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"ports": [{"port": 80}]}}
    for name, obj in {"deployment": deployment, "pod": pod, "cronjob": cronjob,
                      "service": service}.items():
        (chart / "templates" / f"{name}.yaml").write_text(yaml.safe_dump(obj, width=1000))
    return chart


def _review(uid: str, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    group, _, version = obj["apiVersion"].rpartition("/")
    plural = {"Deployment": "deployments", "Pod": "pods", "CronJob": "cronjobs"}[obj["kind"]]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": group, "version": version, "kind": obj["kind"]},
        "resource": {"group": group, "version": version, "resource": plural},
        "name": obj["metadata"]["name"], "namespace": namespace, "operation": "CREATE",
        "userInfo": {"username": "ci-bot"}, "object": obj, "dryRun": False}}


def _admission_lines(message: str) -> set[str]:
    """The field-addressed reasons of an admission deny (without the decision suffix)."""
    body = message.rsplit(" (decision ", 1)[0]
    return set(body.split("; "))


@pytest.fixture
def rendered(tmp_path: Path) -> tuple[str, str]:
    host = registry_host()
    repository = unique_repository()
    digest = push_image(host, f"{repository}:1.0", "app", tmp_path)
    image = f"{host}/{repository}@{digest}"
    chart = _chart(tmp_path / "charts", image)
    result = subprocess.run([_helm(), "template", "shop", str(chart), "--namespace", "shop"],
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout, image


@pytest.fixture
def served(tmp_path: Path, opa_binary: str, policy_dir: Path) -> Iterator[tuple[str, httpx.Client]]:
    with serve_gatekeeper(tmp_path, opa_binary, policy_dir, CertificateAuthority(tmp_path),
                          GATEKEEPER_ADMISSION_ENVIRONMENT="development") as (url, client):
        yield url, client


def test_helm_template_verdicts_equal_what_admission_answers(served: tuple[str, httpx.Client], rendered: tuple[str, str]) -> None:
    url, client = served
    manifests, image = rendered
    answer = client.post(url + "/v1/evaluations", headers=_token("pipeline"), json={
        "manifests": manifests, "environment": "development", "namespace": "shop"})
    assert answer.status_code == 200, answer.text
    document = answer.json()

    assert (document["verdict"], document["allowed"]) == ("deny", False)
    assert sorted((w["kind"], w["name"], w["verdict"]) for w in document["workloads"]) == [
        ("CronJob", "nightly", "deny"), ("Deployment", "web", "allow"), ("Pod", "debug", "deny")]
    assert [(o["kind"], o["reason"]) for o in document["not_evaluated"]] == [
        ("Service", "Service has no pod template")]
    named = {w["kind"]: w for w in document["workloads"]}
    cronjob, deployment, pod = named["CronJob"], named["Deployment"], named["Pod"]
    assert set(pod["messages"]) == {
        "spec.hostNetwork: host namespaces are not allowed in environment \"development\"",
        "spec.containers[0].securityContext.privileged: container \"shell\" is privileged "
        "(not allowed in environment \"development\")"}
    path = "spec.jobTemplate.spec.template.spec.containers[1]"
    assert set(cronjob["messages"]) == {
        f"{path}.resources.limits.cpu: 17 is more than the maximum 16 in environment \"development\"",
        f"{path}.securityContext.capabilities.add[1]: capability \"SYS_ADMIN\" is not allowed "
        "in environment \"development\" (allowed: CHOWN, DAC_OVERRIDE, FOWNER, NET_BIND_SERVICE, NET_RAW, SETGID, SETUID, SYS_PTRACE)",
        f"{path}.image ({GCR}): registry \"gcr.io\" is not allowed in environment \"development\""}
    # every container list's images were gathered (init containers included)
    assert [i["reference"] for i in deployment["decision"]["images"]] == [image]
    review = deployment["decision"]["policy_input"]["review"] if "policy_input" in \
        deployment["decision"] else None
    assert review is None or review["operation"] == "CREATE"

    objects = [o for o in yaml.safe_load_all(manifests) if o]
    by_name = {o["metadata"]["name"]: o for o in objects if o["kind"] != "Service"}
    for index, workload in enumerate(document["workloads"]):
        obj = by_name[workload["name"]]
        admitted = post(client, url, "/admission/validate",
                        _review(f"uid-manifest-{index}", obj, "shop")).json()["response"]
        assert admitted["allowed"] is (workload["verdict"] != "deny"), (workload, admitted)
        if not admitted["allowed"]:
            assert _admission_lines(admitted["status"]["message"]) == set(workload["messages"])


def test_cli_reads_manifests_from_stdin_and_names_each_workload(
    rendered: tuple[str, str], tmp_path: Path, opa_binary: str, policy_dir: Path
) -> None:
    manifests, _ = rendered
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env.update(
        GATEKEEPER_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
        GATEKEEPER_OPA_BINARY=opa_binary, GATEKEEPER_POLICY_DIR=str(policy_dir),
        GATEKEEPER_INSECURE_DISABLE_AUTH="true",
        GATEKEEPER_AUDIT_SPOOL_DIR=str(tmp_path / "audit-spool"),
        GATEKEEPER_REGISTRY=json.dumps({"hosts": [{"host": registry_host(), "plain_http": True}]}),
    )
    result = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "evaluate", "-f", "-", "--environment", "development",
         "--namespace", "shop"],
        input=manifests, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "verdict   DENY  (3 workloads: 1 allow, 2 deny)"
    assert {line.split("  (document")[0] for line in lines[1:] if not line.startswith(" ")} == {
        "DENY      CronJob shop/nightly", "ALLOW     Deployment shop/web",
        "DENY      Pod shop/debug", "skipped   Service web"}
    assert ("          spec.hostNetwork: host namespaces are not allowed in environment "
            "\"development\"") in lines


def test_cli_refuses_manifests_without_a_workload_and_bad_yaml(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env.update(GATEKEEPER_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
               GATEKEEPER_INSECURE_DISABLE_AUTH="true")
    only_service = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
    result = subprocess.run([sys.executable, "-m", "gatekeeper", "evaluate", "-f", "-"],
                            input=only_service, capture_output=True, text=True, timeout=60,
                            env=env, cwd=REPO)
    assert result.returncode == 2
    assert "the manifests hold no workload with a pod spec (kinds: Service)" in result.stderr
    bomb = "a: &x [1, 2]\nb: [*x, *x]\n"
    result = subprocess.run([sys.executable, "-m", "gatekeeper", "evaluate", "-f", "-"],
                            input=bomb, capture_output=True, text=True, timeout=60, env=env,
                            cwd=REPO)
    assert result.returncode == 2
    assert "manifests line 2: YAML aliases are not accepted" in result.stderr


OWNER_TEMPLATE = """# A ConstraintTemplate's rego in Gatekeeper's format, package line changed only.
package gatekeeper.templates.requiredowner

violation contains {"msg": msg} if {
\tnot input.review.object.metadata.labels[input.parameters.label]
\tmsg := sprintf("%v %v has no %v label", [input.review.kind.kind, input.review.name, input.parameters.label])
}
"""


def test_gatekeeper_format_template_enforces_its_constraint_parameters(
    tmp_path: Path, opa_binary: str, policy_dir: Path
) -> None:
    (policy_dir / "requiredowner.rego").write_text(OWNER_TEMPLATE)
    data = json.loads((policy_dir / "data.json").read_text())
    data["gatekeeper"]["config"]["constraints"] = [
        {"name": "owner-on-deployments", "template": "requiredowner",
         "parameters": {"label": "owner"}, "match": {"kinds": ["Deployment"]}}]
    (policy_dir / "data.json").write_text(json.dumps(data))
    image = "registry.example.com/acme/api@sha256:" + "ab" * 32
    manifests = "\n---\n".join(yaml.safe_dump(obj) for obj in [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "labels": {"app": "web"}},
         "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "owned", "labels": {"owner": "team-pay"}},
         "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lonely"},
         "spec": {"containers": [{"name": "web", "image": image}]}},
    ])
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env.update(
        GATEKEEPER_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
        GATEKEEPER_OPA_BINARY=opa_binary, GATEKEEPER_POLICY_DIR=str(policy_dir),
        GATEKEEPER_INSECURE_DISABLE_AUTH="true", GATEKEEPER_RESOLVE_DIGESTS="false",
        GATEKEEPER_AUDIT_SPOOL_DIR=str(tmp_path / "audit-spool"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "evaluate", "-f", "-", "--environment",
         "development", "--namespace", "shop", "-o", "json"],
        input=manifests, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    verdicts = {w["name"]: (w["verdict"], [(v["policy"], v["message"])
                                          for v in w["decision"]["violations"]])
                for w in document["workloads"]}
    assert verdicts == {
        "web": ("deny", [("requiredowner", "Deployment web has no owner label")]),
        "owned": ("allow", []),
        "lonely": ("allow", []),  # the constraint matches Deployments only
    }
