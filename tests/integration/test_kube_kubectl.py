"""kubectl against a real kube-apiserver v1.35 that calls the real gatekeeper.

What an operator types and what kubectl prints: create, run, apply, set image, scale, label,
debug (ephemeral containers), delete and ``--dry-run=server`` across Pod, Deployment,
StatefulSet, DaemonSet, Job and CronJob. A cosign-signed image from the loopback registry is
admitted and pinned to its digest in the stored object (and in what the controllers create
from it); an unsigned image, or one from a registry the environment does not allow, is denied
with the exact message kubectl shows. See ``kube_cluster.py`` for how the cluster and the
gatekeeper start (the webhook configurations are the chart's own rendering).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.kube_cluster import (  # noqa: F401 - fixtures
    ControlPlane,
    Gatekeeper,
    control_plane,
    gatekeeper,
)

pytestmark = [pytest.mark.integration, pytest.mark.kube]

UNSIGNED = ("no signature found; 0 of 1 required authorities verified [release: no signature "
            "found (no cosign signature for this digest)]")


def last_decision(gatekeeper: Gatekeeper, namespace: str) -> dict[str, Any]:
    decisions = gatekeeper.decisions(namespace)
    assert decisions, f"no decision recorded in {namespace}"
    return decisions[-1]


def denied(webhook: str, message: str, *, prefix: str = "Error from server (Forbidden): ") -> str:
    """What kubectl prints when a webhook denies (``prefix`` depends on the command)."""
    return (f'{prefix}admission webhook "{webhook}.gatekeeper.forge.dev" denied the request: '
            f"{message}\n")


def unsigned_message(field: str, image: str, digest: str, decision_id: str) -> str:
    return f"{field} ({image}): image {image}@{digest}: {UNSIGNED} (decision {decision_id})"


def container_images(document: dict[str, Any], path: tuple[str, ...]) -> list[str]:
    spec: Any = document
    for key in path:
        spec = spec[key]
    return [container["image"] for container in spec["containers"]]


# -- Pods --------------------------------------------------------------------------------------

def test_run_signed_pod_is_admitted_and_stored_pinned_to_its_digest(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, digest = gatekeeper.image("web", signed=True)

    result = control_plane.kubectl("run", "web", f"--image={image}", "-n", namespace)

    assert (result.returncode, result.stdout, result.stderr) == (0, "pod/web created\n", "")
    pod = control_plane.get("pod", "web", namespace)
    assert container_images(pod, ("spec",)) == [f"{image}@{digest}"]


def test_run_unsigned_pod_is_denied_with_the_field_and_the_reason(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, digest = gatekeeper.image("api-unsigned", signed=False)

    result = control_plane.kubectl("run", "api", f"--image={image}", "-n", namespace,
                                   check=False)

    decision = last_decision(gatekeeper, namespace)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == denied("mutate", unsigned_message(
        "spec.containers[0].image", image, digest, decision["decision_id"]))
    assert decision["verdict"] == "deny"
    absent = control_plane.kubectl("get", "pod", "api", "-n", namespace, check=False)
    assert absent.stderr == 'Error from server (NotFound): pods "api" not found\n'


def test_image_from_a_registry_the_environment_does_not_allow_is_denied(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    # The same registry under another name: reachable, signed, but not on staging's allow-list.
    port = gatekeeper.registry.rsplit(":", 1)[1]
    image, _ = gatekeeper.image("web-elsewhere", signed=True, host=f"localhost:{port}")

    namespace = control_plane.namespace()
    result = control_plane.kubectl("run", "web", f"--image={image}", "-n", namespace,
                                   check=False)

    decision = last_decision(gatekeeper, namespace)
    # The allow-list needs no network: it is decided first, the image is not fetched, so the
    # decisive reason is the one given (issue 11.2; no signature finding follows it any more).
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == denied("mutate", (
        f'spec.containers[0].image ({image}): registry "localhost:{port}" is not allowed in '
        f'environment "staging" (decision {decision["decision_id"]})'))
    assert decision["verdict"] == "deny"
    signatures = decision["images"][0]["evidence"]["signatures"]
    assert signatures["status"] == "skipped" and signatures["reason"].startswith("not gathered: ")


def test_the_decisive_reason_comes_first(control_plane: ControlPlane,
                                         gatekeeper: Gatekeeper) -> None:
    port = gatekeeper.registry.rsplit(":", 1)[1]
    image, _ = gatekeeper.image("web-elsewhere", signed=True, host=f"localhost:{port}")
    namespace = control_plane.namespace()

    result = control_plane.kubectl("run", "web", f"--image={image}", "-n", namespace,
                                   check=False)

    assert result.stderr.startswith(denied("mutate", (
        f'spec.containers[0].image ({image}): registry "localhost:{port}" is not allowed in '
        'environment "staging"')).rstrip("\n"))


def test_label_and_delete_an_admitted_pod(control_plane: ControlPlane,
                                          gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, _ = gatekeeper.image("web", signed=True)
    control_plane.kubectl("run", "web", f"--image={image}", "-n", namespace)

    labelled = control_plane.kubectl("label", "pod", "web", "tier=frontend", "-n", namespace)
    deleted = control_plane.kubectl("delete", "pod", "web", "-n", namespace, "--wait=false")

    assert labelled.stdout == "pod/web labeled\n"
    assert deleted.stdout == 'pod "web" deleted from ' + namespace + " namespace\n"


def test_debug_adds_a_signed_ephemeral_container_and_refuses_an_unsigned_one(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, _ = gatekeeper.image("web", signed=True)
    tool, tool_digest = gatekeeper.image("debug-tools", signed=True)
    unsigned, unsigned_digest = gatekeeper.image("debug-unsigned", signed=False)
    control_plane.kubectl("run", "web", f"--image={image}", "-n", namespace)

    added = control_plane.kubectl("debug", "web", f"--image={tool}", "-c", "debugger",
                                  "--profile=baseline", "-n", namespace)
    refused = control_plane.kubectl("debug", "web", f"--image={unsigned}", "-c", "intruder",
                                    "--profile=baseline", "-n", namespace, check=False)

    assert added.returncode == 0, added
    pod = control_plane.get("pod", "web", namespace)
    assert [(c["name"], c["image"]) for c in pod["spec"]["ephemeralContainers"]] == [
        ("debugger", f"{tool}@{tool_digest}")]
    decision = last_decision(gatekeeper, namespace)
    assert refused.returncode == 1
    assert refused.stderr == denied("mutate", unsigned_message(
        "spec.ephemeralContainers[1].image", unsigned, unsigned_digest,
        decision["decision_id"]))
    pod = control_plane.get("pod", "web", namespace)
    assert [c["name"] for c in pod["spec"]["ephemeralContainers"]] == ["debugger"]


# -- Deployments -------------------------------------------------------------------------------

def test_create_deployment_pins_the_deployment_its_replicaset_and_its_pod(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, digest = gatekeeper.image("web", signed=True)

    result = control_plane.kubectl("create", "deployment", "web", f"--image={image}",
                                   "-n", namespace)

    assert (result.returncode, result.stdout) == (0, "deployment.apps/web created\n")
    pinned = [f"{image}@{digest}"]
    deployment = control_plane.get("deployment", "web", namespace)
    assert container_images(deployment, ("spec", "template", "spec")) == pinned
    replica_sets = control_plane.wait_for("the ReplicaSet", lambda: control_plane.kubectl(
        "get", "replicasets", "-n", namespace, "-o", "json").stdout.count('"kind": "ReplicaSet"'))
    assert replica_sets == 1
    pods = control_plane.wait_for("the Pod", lambda: _pods(control_plane, namespace))
    assert [container_images(pod, ("spec",)) for pod in pods] == [pinned]


def _pods(control_plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(control_plane.kubectl(
        "get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    return items


def _live_pod_images(control_plane: ControlPlane, namespace: str) -> list[str]:
    """The image of every Pod of the namespace that is not being deleted, sorted."""
    return sorted(image for pod in _pods(control_plane, namespace)
                  if pod["metadata"].get("deletionTimestamp") is None
                  for image in container_images(pod, ("spec",)))


def test_set_image_scale_and_dry_run_on_a_deployment(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    web, web_digest = gatekeeper.image("web", signed=True)
    web2, web2_digest = gatekeeper.image("web-v2", signed=True)
    unsigned, unsigned_digest = gatekeeper.image("web-unsigned", signed=False)
    # Strategy Recreate: this cluster has no node, so no Pod is ever ready. Under the default
    # RollingUpdate (maxUnavailable 0 for one replica) the old Pod then never leaves, and a
    # scale in the middle of that rollout is split between the old and the new ReplicaSet
    # ("proportional scaling": the extra replica goes to the larger ReplicaSet, between equal
    # ones to the newer, and creation times have one-second resolution, so within the same
    # second the ReplicaSet names decide). Recreate retires the old Pod first (unscheduled, it
    # is deleted at once), so the rollout completes and the scale goes to the new template.
    created = control_plane.apply({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                 "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": web}]}}},
    }, "-n", namespace)

    refused = control_plane.kubectl("set", "image", "deployment/web", f"*={unsigned}",
                                    "-n", namespace, check=False)
    refused_id = last_decision(gatekeeper, namespace)["decision_id"]
    updated = control_plane.kubectl("set", "image", "deployment/web", f"*={web2}",
                                    "-n", namespace)
    control_plane.wait_for("the rollout to the new template (one Pod of it, none of the old)",
                           lambda: _live_pod_images(control_plane, namespace) == [
                               f"{web2}@{web2_digest}"])
    scaled = control_plane.kubectl("scale", "deployment/web", "--replicas=2", "-n", namespace)

    assert created.stdout == "deployment.apps/web created\n"
    assert refused.returncode == 1
    assert refused.stderr == "error: failed to patch image update to pod template: " + denied(
        "mutate", unsigned_message("spec.template.spec.containers[0].image", unsigned,
                                   unsigned_digest, refused_id), prefix="")
    assert updated.stdout == "deployment.apps/web image updated\n"
    assert scaled.stdout == "deployment.apps/web scaled\n"
    deployment = control_plane.get("deployment", "web", namespace)
    assert container_images(deployment, ("spec", "template", "spec")) == [f"{web2}@{web2_digest}"]
    assert deployment["spec"]["replicas"] == 2
    assert web_digest != web2_digest
    # The controller's ReplicaSet for the new template follows the scale; the old one stays at 0.
    pods = control_plane.wait_for("2 Pods", lambda: (
        lambda images: images if len(images) >= 2 else None
    )(_live_pod_images(control_plane, namespace)))
    assert pods == [f"{web2}@{web2_digest}"] * 2
    replica_sets = json.loads(control_plane.kubectl(
        "get", "replicasets", "-n", namespace, "-o", "json").stdout)["items"]
    assert sorted((container_images(rs, ("spec", "template", "spec")), rs["spec"]["replicas"])
                  for rs in replica_sets) == sorted([([f"{web}@{web_digest}"], 0),
                                                     ([f"{web2}@{web2_digest}"], 2)])
    # Everything after the refused image was admitted, the controllers' own work included.
    decisions = gatekeeper.decisions(namespace)
    after = decisions[[d["decision_id"] for d in decisions].index(refused_id) + 1:]
    assert {(d["context"]["admission"]["kind"], d["context"]["admission"]["operation"],
             d["verdict"]) for d in after} == {
        ("Deployment", "UPDATE", "allow"), ("ReplicaSet", "CREATE", "allow"),
        ("ReplicaSet", "UPDATE", "allow"), ("Pod", "CREATE", "allow")}


def test_server_dry_run_answers_like_the_real_thing_and_stores_nothing(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, digest = gatekeeper.image("web", signed=True)
    unsigned, unsigned_digest = gatekeeper.image("web-unsigned", signed=False)

    admitted = control_plane.kubectl(
        "create", "deployment", "web", f"--image={image}", "-n", namespace, "--dry-run=server",
        "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    refused = control_plane.kubectl(
        "create", "deployment", "api", f"--image={unsigned}", "-n", namespace,
        "--dry-run=server", check=False)

    assert admitted.stdout == f"{image}@{digest}"
    decision = last_decision(gatekeeper, namespace)
    assert refused.stderr == "error: failed to create deployment: " + denied(
        "mutate", unsigned_message("spec.template.spec.containers[0].image", unsigned,
                                   unsigned_digest, decision["decision_id"]), prefix="")
    listed = control_plane.kubectl("get", "deployments", "-n", namespace)
    assert listed.stderr == f"No resources found in {namespace} namespace.\n"


def test_warn_namespace_admits_an_unsigned_image_and_kubectl_shows_the_warning(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace(labels={"gatekeeper.forge.dev/mode": "warn"})
    image, digest = gatekeeper.image("api-unsigned", signed=False)

    result = control_plane.kubectl("run", "api", f"--image={image}", "-n", namespace)

    assert result.stdout == "pod/api created\n"
    assert (f"Warning: not enforced (warn mode): spec.containers[0].image ({image}): image "
            f"{image}@{digest}: {UNSIGNED}\n") in result.stderr
    pod = control_plane.get("pod", "api", namespace)
    assert container_images(pod, ("spec",)) == [f"{image}@{digest}"]


# -- StatefulSet, DaemonSet, Job, CronJob (kubectl apply) -------------------------------------

def pod_template(image: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "shop"}},
            "spec": {"containers": [{"name": "app", "image": image}],
                     "restartPolicy": "Always"}}


def workload(kind: str, image: str) -> dict[str, Any]:
    selector = {"matchLabels": {"app": "shop"}}
    template = pod_template(image)
    if kind == "StatefulSet":
        spec: dict[str, Any] = {"selector": selector, "serviceName": "shop",
                                "template": template}
    elif kind == "DaemonSet":
        spec = {"selector": selector, "template": template}
    elif kind == "Job":
        template["spec"]["restartPolicy"] = "Never"
        spec = {"template": template}
    else:
        template["spec"]["restartPolicy"] = "Never"
        spec = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}
    api = "batch/v1" if kind in ("Job", "CronJob") else "apps/v1"
    return {"apiVersion": api, "kind": kind, "metadata": {"name": "shop"}, "spec": spec}


#: kind -> (resource printed by kubectl, path of the pod spec)
KINDS = {
    "StatefulSet": ("statefulset.apps", ("spec", "template", "spec")),
    "DaemonSet": ("daemonset.apps", ("spec", "template", "spec")),
    "Job": ("job.batch", ("spec", "template", "spec")),
    "CronJob": ("cronjob.batch", ("spec", "jobTemplate", "spec", "template", "spec")),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_apply_signed_workload_is_created_pinned(control_plane: ControlPlane,
                                                 gatekeeper: Gatekeeper, kind: str) -> None:
    namespace = control_plane.namespace()
    image, digest = gatekeeper.image("web", signed=True)
    resource, path = KINDS[kind]

    result = control_plane.apply(workload(kind, image), "-n", namespace)

    assert result.stdout == f"{resource}/shop created\n"
    stored = control_plane.get(resource, "shop", namespace)
    assert container_images(stored, path) == [f"{image}@{digest}"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_apply_unsigned_workload_is_denied_naming_the_field(
        control_plane: ControlPlane, gatekeeper: Gatekeeper, kind: str) -> None:
    namespace = control_plane.namespace()
    image, digest = gatekeeper.image("api-unsigned", signed=False)
    resource, path = KINDS[kind]

    result = control_plane.apply(workload(kind, image), "-n", namespace, check=False)

    decision = last_decision(gatekeeper, namespace)
    field = ".".join(path) + ".containers[0].image"
    assert result.returncode == 1
    assert result.stderr == denied("mutate", unsigned_message(
        field, image, digest, decision["decision_id"]),
        prefix='Error from server (Forbidden): error when creating "STDIN": ')
    absent = control_plane.kubectl("get", resource, "shop", "-n", namespace, check=False)
    assert absent.returncode == 1
