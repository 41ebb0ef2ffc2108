"""A Pod the gatekeeper admitted really runs: kubelet, containerd and runc on a real node.

Runs under ``scripts/test-node run`` (``scripts/test`` does it after the main suite), which
starts the node and the control plane inside the test's own network namespace; skipped
elsewhere. The image is Debian's static busybox, copied to a repository of its own in the
loopback registry and signed there with cosign for the admitted case.
"""

from __future__ import annotations

import pytest

from tests.integration.kube_cluster import (  # noqa: F401 - fixtures
    ControlPlane,
    Gatekeeper,
    Node,
    control_plane,
    gatekeeper,
    kube_node,
)

pytestmark = [pytest.mark.integration, pytest.mark.kube, pytest.mark.node]


def test_signed_pod_admitted_by_the_gatekeeper_runs_on_the_node(
        kube_node: Node, control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, digest = gatekeeper.runnable_image(signed=True)

    created = control_plane.kubectl("run", "web", f"--image={image}", "-n", namespace,
                                    "--", "sleep", "3600")
    control_plane.kubectl("wait", "--for=condition=Ready", "pod/web", "-n", namespace,
                          "--timeout=60s", timeout=90)
    listed = control_plane.kubectl("get", "pod", "web", "-n", namespace, "--no-headers",
                                   "-o", "custom-columns=STATUS:.status.phase,NODE:.spec.nodeName,"
                                   "IMAGE:.status.containerStatuses[0].imageID")
    executed = control_plane.kubectl("exec", "web", "-n", namespace, "--", "cat",
                                     "/proc/1/cmdline")

    assert created.stdout == "pod/web created\n"
    # Running on the node, from the digest the gatekeeper verified and pinned.
    assert listed.stdout.split() == ["Running", kube_node.name, f"{image.rsplit(':', 1)[0]}@"
                                     f"{digest}"]
    assert control_plane.get("pod", "web", namespace)["spec"]["containers"][0]["image"] == (
        f"{image}@{digest}")
    assert executed.stdout == "sleep\x003600\x00"


def test_unsigned_pod_is_denied_and_never_reaches_the_node(
        kube_node: Node, control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    namespace = control_plane.namespace()
    image, _ = gatekeeper.runnable_image(signed=False)

    refused = control_plane.kubectl("run", "web", f"--image={image}", "-n", namespace,
                                    check=False)

    assert refused.returncode == 1
    assert refused.stderr.startswith('Error from server (Forbidden): admission webhook '
                                     '"mutate.gatekeeper.forge.dev" denied the request: '
                                     f"spec.containers[0].image ({image}): ")
    events = control_plane.kubectl("get", "events", "-n", namespace, "-o", "name")
    assert events.stdout == ""


def test_pods_reach_a_service_and_the_api_server_through_kube_proxy(
        kube_node: Node, control_plane: ControlPlane, gatekeeper: Gatekeeper) -> None:
    # What a chart's own Pods need: ClusterIP Services (helm test, the API server's Service).
    namespace = control_plane.namespace()
    image, _ = gatekeeper.runnable_image(signed=True)
    control_plane.kubectl("run", "www", f"--image={image}", "--port=8080", "-n", namespace,
                          "--", "httpd", "-f", "-p", "8080", "-h", "/bin")
    control_plane.kubectl("run", "client", f"--image={image}", "-n", namespace,
                          "--", "sleep", "3600")
    control_plane.kubectl("expose", "pod", "www", "--port=80", "--target-port=8080",
                          "-n", namespace)
    control_plane.kubectl("wait", "--for=condition=Ready", "pod/www", "pod/client",
                          "-n", namespace, "--timeout=60s", timeout=90)
    service_ip = control_plane.kubectl("get", "service", "www", "-n", namespace, "-o",
                                       "jsonpath={.spec.clusterIP}").stdout
    api_ip = control_plane.kubectl("get", "service", "kubernetes", "-n", "default", "-o",
                                   "jsonpath={.spec.clusterIP}").stdout

    # busybox's wget crashes in static glibc's resolver: plain HTTP over nc instead.
    web = control_plane.kubectl("exec", "client", "-n", namespace, "--", "sh", "-c",
                                rf'printf "GET /busybox HTTP/1.0\r\n\r\n" | nc -w 5 {service_ip} 80'
                                " | head -1")
    api = control_plane.kubectl("exec", "client", "-n", namespace, "--", "sh", "-c",
                                f"printf x | nc -w 5 {api_ip} 443 >/dev/null && echo connected")

    assert web.stdout == "HTTP/1.1 200 OK\n"  # text mode turns \r\n into \n
    assert api.stdout == "connected\n"
