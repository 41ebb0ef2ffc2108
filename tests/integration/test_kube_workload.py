"""The workload rules (issue 13.2) through kubectl and a real kube-apiserver v1.35 calling the
real gatekeeper (environment ``staging``, see ``kube_cluster.py``): the object the API server
sends, defaults filled in, is what the rules read; kubectl prints the field paths."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.kube_cluster import (  # noqa: F401 - fixtures
    ControlPlane,
    Gatekeeper,
    control_plane,
    gatekeeper,
)

pytestmark = [pytest.mark.integration, pytest.mark.kube]


def deployment(image: str, container: dict[str, Any], **pod: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "shop"}}, "template": {
                "metadata": {"labels": {"app": "shop"}},
                "spec": {**pod, "containers": [{"name": "web", "image": image, **container}]}}}}


def test_privileged_host_pid_deployment_is_denied_naming_the_fields(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, _ = gatekeeper.image("web", signed=True)
    manifest = deployment(image, {"securityContext": {"privileged": True}}, hostPID=True)

    result = control_plane.apply(manifest, "-n", namespace, check=False)

    assert result.returncode == 1
    assert result.stderr.startswith(
        'Error from server (Forbidden): error when creating "STDIN": admission webhook '
        '"mutate.gatekeeper.forge.dev" denied the request: ')
    assert ('spec.template.spec.containers[0].securityContext.privileged: container "web" is '
            'privileged (not allowed in environment "staging")') in result.stderr
    assert ('spec.template.spec.hostPID: host namespaces are not allowed in environment '
            '"staging"') in result.stderr
    absent = control_plane.kubectl("get", "deployment", "shop", "-n", namespace, check=False)
    assert absent.returncode == 1


def test_cpu_over_the_maximum_is_denied_on_a_server_dry_run(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, _ = gatekeeper.image("web", signed=True)
    manifest = deployment(image, {"resources": {"limits": {"cpu": "9", "memory": "1Gi"}}})

    result = control_plane.apply(manifest, "-n", namespace, "--dry-run=server", check=False)

    assert result.returncode == 1
    assert ('spec.template.spec.containers[0].resources.limits.cpu: 9 is more than the maximum '
            '8 in environment "staging"') in result.stderr
    assert "resources.requests" not in result.stderr  # templates get no defaulted requests


def test_compliant_signed_deployment_is_created(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, digest = gatekeeper.image("web", signed=True)
    manifest = deployment(image, {"resources": {"limits": {"cpu": "500m", "memory": "1Gi"}},
                                  "securityContext": {"capabilities": {
                                      "add": ["NET_BIND_SERVICE"]}}})

    result = control_plane.apply(manifest, "-n", namespace)

    assert result.stdout == "deployment.apps/shop created\n"


def test_debug_with_the_general_profile_needs_a_capability_staging_does_not_allow(
        control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, _ = gatekeeper.image("web", signed=True)
    tool, _ = gatekeeper.image("debug-tools", signed=True)
    control_plane.kubectl("run", "web", f"--image={image}", "-n", namespace)

    refused = control_plane.kubectl("debug", "web", f"--image={tool}", "-c", "debugger",
                                    "--profile=general", "-n", namespace, check=False)

    assert refused.returncode == 1
    assert ('spec.ephemeralContainers[0].securityContext.capabilities.add[0]: capability '
            '"SYS_PTRACE" is not allowed in environment "staging" (allowed: NET_BIND_SERVICE)'
            ) in refused.stderr
