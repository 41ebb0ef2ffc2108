"""What runs in the cluster, and where the compliance results go: the background loop's side of
the API server (list of the pod-bearing kinds, create/update of PolicyReports, get of named
pull secrets).

"Running" means the workload objects the API server stores: a Deployment whose Pods are not
scheduled yet is evaluated like one whose Pods run (the kubelet's view is not consulted).
Objects owned by a controller of a listed kind (a ReplicaSet of a Deployment, the Pods of a
ReplicaSet or a Job) are evaluated through their owner, once.

Permissions this needs (the chart's ClusterRole when ``background.enabled``): ``list`` of the
kinds in :data:`WORKLOAD_KINDS`; ``get``/``create``/``update`` of
``wgpolicyk8s.io`` ``policyreports``; and, only with pull-secret credentials turned on,
``get`` of ``secrets``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from gatekeeper.domain.workload import Workload
from gatekeeper.errors import GatekeeperError, InvalidInputError
from gatekeeper.kube.client import KubeApiError, KubeClient

__all__ = [
    "POLICY_REPORT_API",
    "WORKLOAD_KINDS",
    "Workload",
    "list_workloads",
    "read_pull_secret",
    "write_policy_report",
]

#: kind -> cluster-wide collection path (the pod-bearing kinds of the admission webhook).
WORKLOAD_KINDS: Mapping[str, str] = {
    "Pod": "/api/v1/pods",
    "ReplicationController": "/api/v1/replicationcontrollers",
    "Deployment": "/apis/apps/v1/deployments",
    "ReplicaSet": "/apis/apps/v1/replicasets",
    "StatefulSet": "/apis/apps/v1/statefulsets",
    "DaemonSet": "/apis/apps/v1/daemonsets",
    "Job": "/apis/batch/v1/jobs",
    "CronJob": "/apis/batch/v1/cronjobs",
}
_API_VERSIONS = {
    "Pod": "v1", "ReplicationController": "v1", "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
    "Job": "batch/v1", "CronJob": "batch/v1",
}
POLICY_REPORT_API = "wgpolicyk8s.io/v1alpha2"
_PAGE = 500
_DOCKERCONFIG = "kubernetes.io/dockerconfigjson"


def _controlled_by_listed_kind(metadata: Mapping[str, Any]) -> bool:
    for owner in metadata.get("ownerReferences") or ():
        if isinstance(owner, Mapping) and owner.get("controller") and \
                owner.get("kind") in WORKLOAD_KINDS:
            return True
    return False


def _pages(client: KubeClient, path: str) -> Iterator[dict[str, Any]]:
    token = ""
    while True:
        query = f"?limit={_PAGE}" + (f"&continue={quote(token, safe='')}" if token else "")
        answer = client.get(path + query)
        if answer is None:
            raise GatekeeperError(f"API server has no collection {path}")
        for item in answer.get("items") or ():
            if isinstance(item, dict):
                yield item
        token = str((answer.get("metadata") or {}).get("continue") or "")
        if not token:
            return


def list_workloads(client: KubeClient, excluded_namespaces: frozenset[str]) -> list[Workload]:
    """Every top-level workload outside ``excluded_namespaces``, sorted by kind/namespace/name."""
    found: list[Workload] = []
    for kind, path in WORKLOAD_KINDS.items():
        for item in _pages(client, path):
            metadata = item.get("metadata") or {}
            namespace = str(metadata.get("namespace") or "")
            if namespace in excluded_namespaces or _controlled_by_listed_kind(metadata):
                continue
            if metadata.get("deletionTimestamp"):
                continue
            obj = {**item, "kind": kind, "apiVersion": _API_VERSIONS[kind]}  # lists omit them
            found.append(Workload(kind, namespace, str(metadata.get("name") or ""),
                                  str(metadata.get("uid") or ""), obj))
    return sorted(found, key=lambda w: (w.namespace, w.kind, w.name))


def write_policy_report(client: KubeClient, namespace: str, report: dict[str, Any]) -> str:
    """Create the namespace's PolicyReport or replace it (same name); ``created``/``updated``."""
    name = report["metadata"]["name"]
    collection = f"/apis/{POLICY_REPORT_API}/namespaces/{namespace}/policyreports"
    current = client.get(f"{collection}/{name}")
    if current is None:
        client.create(collection, report)
        return "created"
    body = {**report, "metadata": {**report["metadata"],
                                   "resourceVersion": current["metadata"]["resourceVersion"]}}
    client.replace(f"{collection}/{name}", body)
    return "updated"


def read_pull_secret(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    """The ``auths`` of one ``kubernetes.io/dockerconfigjson`` Secret (never logged, never kept:
    the caller uses it for one evaluation). Raises naming the secret when it is unusable."""
    where = f"secret {namespace}/{name}"
    try:
        secret = client.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    except KubeApiError as exc:
        raise GatekeeperError(f"{where} not readable: HTTP {exc.status}") from exc
    if secret is None:
        raise InvalidInputError(f"{where} does not exist")
    if secret.get("type") != _DOCKERCONFIG:
        raise InvalidInputError(f"{where} is not of type {_DOCKERCONFIG}")
    try:
        encoded = (secret.get("data") or {})[".dockerconfigjson"]
        document = json.loads(base64.b64decode(encoded))
        auths = document["auths"]
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"{where} has no readable .dockerconfigjson auths") from exc
    if not isinstance(auths, dict):
        raise InvalidInputError(f"{where} has no readable .dockerconfigjson auths")
    return auths
