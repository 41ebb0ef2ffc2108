"""Routine cluster work on workloads admitted under an older policy, and one decision per object.

Issue 11.2, observed through the real API server and kubectl. "An older policy" is made real
without editing the policy: the workload is admitted in a namespace labelled
``gatekeeper.forge.dev/mode=audit`` (recorded, not enforced), then the label is removed, so the
namespace is enforced from then on, exactly as if the policy had changed under a running
workload.
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


def legacy_namespace(control_plane: ControlPlane) -> str:
    return control_plane.namespace("legacy", labels={"gatekeeper.forge.dev/mode": "audit"})


def enforce(control_plane: ControlPlane, namespace: str, unsigned_image: str) -> None:
    """The policy changes under the running workload: the namespace is enforced from now on."""
    control_plane.kubectl("label", "namespace", namespace, "gatekeeper.forge.dev/mode-")
    # The API server matches namespaceSelectors against its informer's copy of the namespace:
    # wait until a new Pod with the unsigned image is really denied (a server-side dry run).
    control_plane.wait_for("the namespace to be enforced", lambda: control_plane.kubectl(
        "run", "probe", f"--image={unsigned_image}", "-n", namespace, "--dry-run=server",
        check=False).returncode == 1)


def _replica_sets(control_plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(control_plane.kubectl(
        "get", "replicasets", "-n", namespace, "-o", "json").stdout)["items"]
    return items


def test_label_a_pod_admitted_under_an_older_policy(control_plane: ControlPlane,
                                                    gatekeeper: Gatekeeper) -> None:
    namespace = legacy_namespace(control_plane)
    image, _ = gatekeeper.image("legacy-unsigned", signed=False)
    control_plane.kubectl("run", "legacy", f"--image={image}", "-n", namespace)
    enforce(control_plane, namespace, image)

    result = control_plane.kubectl("label", "pod", "legacy", "tier=db", "-n", namespace,
                                   check=False)

    assert (result.returncode, result.stdout, result.stderr) == (0, "pod/legacy labeled\n", "")


def test_scale_a_deployment_admitted_under_an_older_policy(control_plane: ControlPlane,
                                                           gatekeeper: Gatekeeper) -> None:
    namespace = legacy_namespace(control_plane)
    image, _ = gatekeeper.image("legacy-unsigned", signed=False)
    control_plane.kubectl("create", "deployment", "legacy", f"--image={image}", "-n", namespace)
    control_plane.wait_for("the ReplicaSet", lambda: _replica_sets(control_plane, namespace))
    enforce(control_plane, namespace, image)

    scaled = control_plane.kubectl("scale", "deployment/legacy", "--replicas=2", "-n", namespace)

    assert scaled.stdout == "deployment.apps/legacy scaled\n"
    # The ReplicaSet UPDATE changes no image: admitted, so the controller's scale goes through.
    control_plane.wait_for("the ReplicaSet to be scaled to 2", lambda: [
        rs for rs in _replica_sets(control_plane, namespace) if rs["spec"]["replicas"] == 2],
        timeout=20)


def test_create_deployment_records_one_decision_per_admitted_object(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, _ = gatekeeper.image("web", signed=True)

    control_plane.kubectl("create", "deployment", "web", f"--image={image}", "-n", namespace)
    control_plane.wait_for("the Pod", lambda: json.loads(control_plane.kubectl(
        "get", "pods", "-n", namespace, "-o", "json").stdout)["items"])

    decisions = gatekeeper.decisions(namespace)
    # Deployment, ReplicaSet, Pod: one evaluation and one record each.
    assert sorted(d["context"]["admission"]["kind"] for d in decisions) == [
        "Deployment", "Pod", "ReplicaSet"]


def test_server_dry_run_is_declared_and_recorded_as_a_dry_run(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, _ = gatekeeper.image("web", signed=True)

    control_plane.kubectl("create", "deployment", "web", f"--image={image}", "-n", namespace,
                          "--dry-run=server")

    configurations = [json.loads(control_plane.kubectl(
        "get", kind, "gatekeeper", "-o", "json").stdout)
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration")]
    assert {w["sideEffects"] for c in configurations for w in c["webhooks"]} == {"NoneOnDryRun"}
    assert all(d["dry_run"] for d in gatekeeper.decisions(namespace))
