"""Regenerate the AdmissionReview documents of this folder: ``python generate.py [KUBECTL]``.

Each document is what a v1.31+ API server sends: the object as ``kubectl create ...
--dry-run=client -o json`` builds it, after the API server's defaulting (the defaults of
``pkg/apis/core/v1/defaults.go`` and ``pkg/apis/apps/v1/defaults.go`` are applied below), wrapped
in an ``admission.k8s.io/v1`` AdmissionReview with the request fields the API server fills in.

When a ``kubectl`` binary is given, the base objects come from it (``kubectl create
deployment ... --dry-run=client -o json``) and are checked against the hand-written ones, so
the documents cannot drift from what kubectl really builds. The uids are fixed so that the
documents are stable.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent

API = "ghcr.io/acme/api:1.4"
WEB = "ghcr.io/acme/web:2.0"
SIDECAR = "ghcr.io/acme/sidecar@sha256:" + "ab" * 32
BUSYBOX = "busybox:1.36"
DEBUGGER = "ghcr.io/acme/debug:1.0"
NAMESPACE = "shop"
ADMIN = {
    "username": "kubernetes-admin",
    "groups": ["kubeadm:cluster-admins", "system:authenticated"],
}


def container(name: str, image: str) -> dict[str, Any]:
    # core/v1 defaults: SetDefaults_Container + terminationMessage*, imagePullPolicy by tag.
    policy = "Always" if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1] else (
        "IfNotPresent"
    )
    return {
        "name": name,
        "image": image,
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": policy,
    }


def pod_spec(
    containers: list[dict[str, Any]],
    init: list[dict[str, Any]] | None = None,
    restart: str = "Always",
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if init:
        spec["initContainers"] = init
    spec.update(
        {
            "containers": containers,
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "securityContext": {},
            "schedulerName": "default-scheduler",
        }
    )
    return spec


def template(labels: dict[str, str], spec: dict[str, Any], annotations: dict[str, str] | None
             = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": spec}


def three_containers() -> list[dict[str, Any]]:
    return [container("web", WEB), container("api", API), container("sidecar", SIDECAR)]


TICKET = {
    "gatekeeper.forge.dev/intent-id": "INT-7",
    "gatekeeper.forge.dev/plan-id": "PLAN-12",
    "gatekeeper.forge.dev/ticket-id": "TCK-1234",
    "gatekeeper.forge.dev/deploy-id": "DEP-99",
}


def objects() -> dict[str, dict[str, Any]]:
    labels = {"app": "shop"}
    meta = {"name": "shop", "namespace": NAMESPACE, "labels": labels}
    deployment = {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {**meta, "annotations": dict(TICKET)},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": template(labels, pod_spec(three_containers(),
                                                  init=[container("migrate", BUSYBOX)])),
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": {},
    }
    hash_labels = {**labels, "pod-template-hash": "7d9f8c6b5d"}
    replicaset = {
        "kind": "ReplicaSet",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": "shop-7d9f8c6b5d",
            "namespace": NAMESPACE,
            "labels": hash_labels,
            "annotations": {"deployment.kubernetes.io/revision": "1", **TICKET},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "shop",
                "uid": "5b0c7e1a-0f6e-4d59-9d39-8f1c2f4e6a10", "controller": True,
                "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": hash_labels},
            "template": template(hash_labels, pod_spec(three_containers()), dict(TICKET)),
        },
        "status": {"replicas": 0},
    }
    pod = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "shop-7d9f8c6b5d-",
            "namespace": NAMESPACE,
            "labels": hash_labels,
            "annotations": dict(TICKET),
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "shop-7d9f8c6b5d",
                "uid": "0d1f0d1e-58f6-4a4b-a1f4-3b8f2f3d9e21", "controller": True,
                "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            **pod_spec(three_containers(), init=[container("migrate", BUSYBOX)]),
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
            ],
        },
        "status": {},
    }
    statefulset = {
        "kind": "StatefulSet",
        "apiVersion": "apps/v1",
        "metadata": dict(meta),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": template(labels, pod_spec([container("db", API)])),
            "serviceName": "shop",
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "revisionHistoryLimit": 10,
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain",
                                                     "whenScaled": "Retain"},
        },
        "status": {"replicas": 0, "availableReplicas": 0},
    }
    daemonset = {
        "kind": "DaemonSet",
        "apiVersion": "apps/v1",
        "metadata": dict(meta),
        "spec": {
            "selector": {"matchLabels": labels},
            "template": template(labels, pod_spec([container("agent", WEB)])),
            "updateStrategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            "revisionHistoryLimit": 10,
        },
        "status": {"currentNumberScheduled": 0, "numberMisscheduled": 0,
                   "desiredNumberScheduled": 0, "numberReady": 0},
    }
    job_template = template({"batch.kubernetes.io/job-name": "report", "job-name": "report"},
                            pod_spec([container("report", API)], restart="Never"))
    job = {
        "kind": "Job",
        "apiVersion": "batch/v1",
        "metadata": {"name": "report", "namespace": NAMESPACE},
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 6,
            "template": job_template,
            "completionMode": "NonIndexed",
            "suspend": False,
            "podReplacementPolicy": "TerminatingOrFailed",
            "manualSelector": False,
        },
        "status": {},
    }
    cronjob = {
        "kind": "CronJob",
        "apiVersion": "batch/v1",
        "metadata": {"name": "nightly", "namespace": NAMESPACE},
        "spec": {
            "schedule": "0 3 * * *",
            "concurrencyPolicy": "Allow",
            "suspend": False,
            "jobTemplate": {
                "metadata": {"name": "nightly"},
                "spec": {
                    "template": template({}, pod_spec(
                        [container("nightly", WEB), container("api", API)],
                        restart="OnFailure")),
                },
            },
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 1,
        },
        "status": {},
    }
    rc = {
        "kind": "ReplicationController",
        "apiVersion": "v1",
        "metadata": dict(meta),
        "spec": {
            "replicas": 1,
            "selector": labels,
            "template": template(labels, pod_spec([container("legacy", "ghcr.io/acme/api")])),
        },
        "status": {"replicas": 0},
    }
    pod_template = {
        "kind": "PodTemplate",
        "apiVersion": "v1",
        "metadata": {"name": "shop-template", "namespace": NAMESPACE},
        "template": template(labels, pod_spec([container("web", WEB)])),
    }
    rollout = {
        "kind": "Rollout",
        "apiVersion": "argoproj.io/v1alpha1",
        "metadata": dict(meta),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": template(labels, pod_spec([container("api", API)])),
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
        },
    }
    configmap = {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "settings", "namespace": NAMESPACE},
        "data": {"image": API},
    }
    return {
        "deployment": deployment, "replicaset": replicaset, "pod": pod,
        "statefulset": statefulset, "daemonset": daemonset, "job": job, "cronjob": cronjob,
        "replicationcontroller": rc, "podtemplate": pod_template, "rollout": rollout,
        "configmap": configmap,
    }


RESOURCES = {
    "Deployment": ("apps", "deployments"), "ReplicaSet": ("apps", "replicasets"),
    "StatefulSet": ("apps", "statefulsets"), "DaemonSet": ("apps", "daemonsets"),
    "Job": ("batch", "jobs"), "CronJob": ("batch", "cronjobs"), "Pod": ("", "pods"),
    "ReplicationController": ("", "replicationcontrollers"), "PodTemplate": ("", "podtemplates"),
    "Rollout": ("argoproj.io", "rollouts"), "ConfigMap": ("", "configmaps"),
    "Scale": ("autoscaling", "scale"), "PodExecOptions": ("", "pods"),
}


def review(
    number: int,
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    kind: str | None = None,
    resource: tuple[str, str] | None = None,
    sub_resource: str = "",
    name: str | None = None,
    namespace: str = NAMESPACE,
    user: dict[str, Any] = ADMIN,
    dry_run: bool = False,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    source = obj or old or {}
    kind = kind or source["kind"]
    group, plural = resource or RESOURCES[kind]
    version = (source.get("apiVersion", "v1").rsplit("/", 1)[-1]) if kind in RESOURCES else "v1"
    if kind == "Scale":
        version = "v1"
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": "apps" if kind == "Scale" else group, "version": version,
           "resource": plural}
    request: dict[str, Any] = {
        "uid": f"00000000-0000-4000-8000-{number:012d}",
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
    }
    if sub_resource:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    metadata = source.get("metadata", {})
    if name is None:
        name = metadata.get("name", "")
    if name:
        request["name"] = name
    request["namespace"] = namespace
    request["operation"] = operation
    request["userInfo"] = user
    request["object"] = obj
    request["oldObject"] = old
    request["dryRun"] = dry_run
    request["options"] = options if options is not None else {
        "kind": f"{operation.title()}Options", "apiVersion": "meta.k8s.io/v1",
        "fieldManager": "kubectl-create",
    }
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request}


def reviews() -> dict[str, dict[str, Any]]:
    objs = objects()
    docs: dict[str, dict[str, Any]] = {}
    n = 0

    def add(name: str, doc: dict[str, Any]) -> None:
        docs[name] = doc

    for key in ("deployment", "replicaset", "pod", "statefulset", "daemonset", "job", "cronjob",
                "replicationcontroller", "podtemplate", "rollout", "configmap"):
        n += 1
        obj = objs[key]
        for_namespace = obj["metadata"].get("namespace", NAMESPACE)
        if key == "pod":
            add(f"{key}-create", review(
                n, obj, name="",
                user={"username": "system:serviceaccount:kube-system:replicaset-controller",
                      "uid": "3f0c5a6e-2b56-4a8e-9d3a-0c1f2e3d4b5a",
                      "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                                 "system:authenticated"]},
                namespace=for_namespace))
        else:
            add(f"{key}-create", review(n, obj, namespace=for_namespace))

    # UPDATE of a Deployment: a new image for "api".
    n += 1
    old = objs["deployment"]
    new = copy.deepcopy(old)
    new["metadata"]["generation"] = 2
    new["spec"]["template"]["spec"]["containers"][1]["image"] = "ghcr.io/acme/api:1.5"
    add("deployment-update", review(n, new, operation="UPDATE", old=old))

    # kubectl debug: UPDATE on pods/ephemeralcontainers (the object is the whole Pod).
    n += 1
    running = copy.deepcopy(objs["pod"])
    running["metadata"]["name"] = "shop-7d9f8c6b5d-x2k9p"
    running["metadata"].pop("generateName")
    running["status"] = {"phase": "Running"}
    debugged = copy.deepcopy(running)
    debugged["spec"]["ephemeralContainers"] = [{
        "name": "debugger-abcde",
        "image": DEBUGGER,
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
        "stdin": True,
        "tty": True,
        "targetContainerName": "api",
    }]
    add("pod-ephemeralcontainers-update", review(
        n, debugged, operation="UPDATE", old=running, sub_resource="ephemeralcontainers",
        options={"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1",
                 "fieldManager": "kubectl-debug"}))

    # Not governed: status subresource, DELETE, CONNECT (exec), scale, excluded namespace.
    n += 1
    status_update = copy.deepcopy(running)
    status_update["status"] = {"phase": "Running", "conditions": [{"type": "Ready",
                                                                   "status": "True"}]}
    add("pod-status-update", review(
        n, status_update, operation="UPDATE", old=running, sub_resource="status",
        user={"username": "system:node:worker-1", "groups": ["system:nodes",
                                                             "system:authenticated"]}))
    n += 1
    add("pod-delete", review(
        n, None, operation="DELETE", old=running,
        options={"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1",
                 "propagationPolicy": "Background"}))
    n += 1
    add("pod-exec-connect", review(
        n,
        {"kind": "PodExecOptions", "apiVersion": "v1", "stdin": True, "stdout": True,
         "tty": True, "container": "api", "command": ["sh"]},
        operation="CONNECT", kind="PodExecOptions", resource=("", "pods"), sub_resource="exec",
        name=running["metadata"]["name"], options=None))
    n += 1
    scale = {"kind": "Scale", "apiVersion": "autoscaling/v1",
             "metadata": {"name": "shop", "namespace": NAMESPACE},
             "spec": {"replicas": 5}, "status": {"replicas": 3, "selector": "app=shop"}}
    add("deployment-scale-update", review(
        n, scale, operation="UPDATE", old={**scale, "spec": {"replicas": 3}},
        resource=("apps", "deployments"), sub_resource="scale"))
    n += 1
    system_pod = copy.deepcopy(objs["pod"])
    system_pod["metadata"]["namespace"] = "kube-system"
    add("pod-kube-system-create", review(n, system_pod, name="", namespace="kube-system"))
    n += 1
    add("deployment-dryrun-create", review(n, objs["deployment"], dry_run=True))
    return docs


def _is_prefix_subset(small: Any, big: Any, where: str = "") -> list[str]:
    """Where ``small`` is not contained in ``big`` (mappings by key, lists by prefix)."""
    if isinstance(small, dict) and isinstance(big, dict):
        return [
            problem
            for key, value in small.items()
            for problem in (
                [f"{where}.{key} missing"] if key not in big
                else _is_prefix_subset(value, big[key], f"{where}.{key}")
            )
        ]
    if isinstance(small, list) and isinstance(big, list):
        if len(small) > len(big):
            return [f"{where} has {len(big)} items, kubectl made {len(small)}"]
        return [p for i, item in enumerate(small)
                for p in _is_prefix_subset(item, big[i], f"{where}[{i}]")]
    return [] if small == big else [f"{where}: kubectl {small!r}, ours {big!r}"]


KUBECTL_COMMANDS = {
    "deployment": ["create", "deployment", "shop", f"--image={WEB}", f"--image={API}",
                   f"--image={SIDECAR}", "--replicas=3"],
    "job": ["create", "job", "report", f"--image={API}"],
    "cronjob": ["create", "cronjob", "nightly", f"--image={WEB}", "--schedule=0 3 * * *"],
}


def check_against_kubectl(kubectl: str) -> None:
    """What kubectl builds is contained in our objects (which add the server's defaults)."""
    ours = objects()
    for key, command in KUBECTL_COMMANDS.items():
        made = json.loads(subprocess.run(
            [kubectl, *command, "--namespace", NAMESPACE, "--dry-run=client", "-o", "json"],
            check=True, capture_output=True, text=True).stdout)
        made.pop("status", None)
        made["spec"].pop("strategy", None)  # kubectl's {} becomes the server's default
        problems = _is_prefix_subset(made, ours[key], key)
        if problems:
            raise SystemExit("asset drifted from kubectl: " + "; ".join(problems))


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        check_against_kubectl(argv[1])
    for name, doc in reviews().items():
        (HERE / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
